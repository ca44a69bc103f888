"""Model calls as checkpoint calls: a delegating `Model` and a delegating `ModelProvider`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import ModelResponse, TResponseInputItem, TResponseOutputItem, TResponseStreamEvent
from agents.model_settings import ModelSettings
from agents.models.interface import Model, ModelProvider, ModelTracing
from agents.tool import FunctionTool, Tool
from agents.usage import Usage, deserialize_usage, serialize_usage
from openai.types.responses import Response, ResponseCompletedEvent, ResponseUsage
from pydantic import BaseModel, TypeAdapter

from kitaru_adapters._streaming import relay_while_running
from kitaru_core import CallUsage, current_execution, fingerprint, run_checkpoint_async
from kitaru_core.errors import AdapterError, SerializationError

OUTPUT_ADAPTER: TypeAdapter[list[TResponseOutputItem]] = TypeAdapter(list[TResponseOutputItem])
MODEL_RESPONSE_FORMAT = "json:openai_agents.ModelResponse"


def jsonable(value: Any) -> Any:
    """A JSON form of SDK values (pydantic models, dataclasses, containers) for fingerprints.

    Keys whose value is `None` are left out: an output item the SDK built from a live response
    omits unset fields, the same item loaded from the store may carry them as `null`.
    """
    if isinstance(value, BaseModel):
        return jsonable(value.model_dump(mode="json", exclude_none=True))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: jsonable(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items() if item is not None}  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]  # pyright: ignore[reportUnknownVariableType]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def _tool_identity(tool: Tool) -> dict[str, Any]:
    if isinstance(tool, FunctionTool):
        return {"type": "function", "name": tool.name, "parameters": tool.params_json_schema}
    return {"type": type(tool).__name__, "name": getattr(tool, "name", None)}


def model_name_of(model: Model) -> str | None:
    """The model name a `Model` object sends to its API (`.model` on the SDK's OpenAI models)."""
    name = getattr(model, "model", None)
    return name if isinstance(name, str) else None


def model_request_identity(
    model: Model,
    system_instructions: str | None,
    input: str | list[TResponseInputItem],
    model_settings: ModelSettings,
    tools: list[Tool],
    output_schema: AgentOutputSchemaBase | None,
    handoffs: list[Handoff[Any, Any]],
    prompt: Any,
) -> dict[str, Any]:
    """What a model call's fingerprint covers.

    That is the model, instructions, input items, settings, tools, handoffs, output schema and
    prompt; tracing options and server-side conversation ids are left out.
    """
    return {
        "model": [type(model).__qualname__, model_name_of(model)],
        "instructions": system_instructions,
        "input": jsonable(input),
        "settings": jsonable(model_settings.to_json_dict()),
        "tools": [_tool_identity(tool) for tool in tools],
        "handoffs": [[handoff.tool_name, handoff.input_json_schema] for handoff in handoffs],
        "output_schema": None if output_schema is None else output_schema.json_schema(),
        "prompt": jsonable(prompt),
    }


class ModelResponseCodec:
    """Stores a `ModelResponse` as its output items (OpenAI's JSON) plus the SDK's usage JSON."""

    def encode(self, value: Any) -> tuple[str, bytes]:
        """Serialize a `ModelResponse`."""
        response: ModelResponse = value
        document = {
            "output": OUTPUT_ADAPTER.dump_python(response.output, mode="json", exclude_unset=True),
            "usage": serialize_usage(response.usage),
            "response_id": response.response_id,
            "request_id": response.request_id,
        }
        return MODEL_RESPONSE_FORMAT, json.dumps(document).encode("utf-8")

    def decode(self, format: str, payload: bytes) -> Any:
        """Load a `ModelResponse`."""
        if format != MODEL_RESPONSE_FORMAT:
            raise SerializationError(
                f"Expected a stored OpenAI Agents ModelResponse, found format {format!r}."
            )
        document = json.loads(payload)
        return ModelResponse(
            output=OUTPUT_ADAPTER.validate_python(document["output"]),
            usage=deserialize_usage(document["usage"]),
            response_id=document.get("response_id"),
            request_id=document.get("request_id"),
        )


def response_usage(model_name: str | None) -> Any:
    """A function giving the tokens and cost (genai-prices, where the model is known) of a response."""

    def usage_of(response: ModelResponse) -> CallUsage:
        usage = response.usage
        cost: float | None = None
        if model_name:
            try:
                from genai_prices import Usage as PriceUsage
                from genai_prices import calc_price

                cached = usage.input_tokens_details.cached_tokens or 0
                price = calc_price(
                    PriceUsage(
                        input_tokens=usage.input_tokens,
                        output_tokens=usage.output_tokens,
                        cache_read_tokens=cached,
                    ),
                    model_ref=model_name,
                )
                cost = float(price.total_price)
            except (ImportError, LookupError, ValueError, TypeError):
                cost = None
        return CallUsage(
            model_name=model_name,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=cost,
        )

    return usage_of


def _usage_from_stream(response: Response) -> Usage:
    raw = response.usage
    if raw is None:
        return Usage(requests=1)
    return Usage(
        requests=1,
        input_tokens=raw.input_tokens or 0,
        output_tokens=raw.output_tokens or 0,
        total_tokens=raw.total_tokens or 0,
        input_tokens_details=raw.input_tokens_details,
        output_tokens_details=raw.output_tokens_details,
    )


def completed_event(response: ModelResponse) -> ResponseCompletedEvent:
    """One `response.completed` event carrying a stored response: the runner builds the turn from it."""
    usage = response.usage
    return ResponseCompletedEvent(
        type="response.completed",
        sequence_number=0,
        response=Response(
            id=response.response_id or "kitaru-stored-response",
            created_at=0,
            model="",
            object="response",
            output=response.output,
            tool_choice="auto",
            tools=[],
            parallel_tool_calls=True,
            usage=ResponseUsage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                total_tokens=usage.total_tokens,
                input_tokens_details=usage.input_tokens_details,
                output_tokens_details=usage.output_tokens_details,
            ),
        ),
    )


@dataclass(frozen=True)
class _Request:
    """The arguments of one `get_response`/`stream_response` call, to pass on and to fingerprint."""

    positional: tuple[Any, ...]  # instructions, input, settings, tools, output schema, handoffs, tracing
    keywords: dict[str, Any]  # previous_response_id, conversation_id, prompt


class DurableModel(Model):
    """Delegates to a `Model`; inside an execution each call is a checkpoint call.

    Keys are `model:<fingerprint prefix>` (a repeat of the same input gets `#2`, `#3`...), so a
    resumed run, whatever the order in which it reaches its calls, is served the response that
    was recorded for the same input. Streamed calls pass the model's events through live and
    commit the final response before the runner sees it; served calls yield one
    `response.completed` event. Outside an execution calls go straight to the wrapped model.

    Args:
        wrapped: The model that really answers.
    """

    def __init__(self, wrapped: Model) -> None:
        if isinstance(wrapped, DurableModel):
            wrapped = wrapped.wrapped
        self.wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)

    async def close(self) -> None:
        """Close the wrapped model."""
        await self.wrapped.close()

    def get_retry_advice(self, request: Any) -> Any:
        """The wrapped model's retry advice."""
        return self.wrapped.get_retry_advice(request)

    def _checkpoint_options(self, request: _Request) -> dict[str, Any]:
        instructions, input, settings, tools, output_schema, handoffs, _tracing = request.positional
        identity = model_request_identity(
            self.wrapped,
            instructions,
            input,
            settings,
            tools,
            output_schema,
            handoffs,
            request.keywords["prompt"],
        )
        name = model_name_of(self.wrapped)
        digest = fingerprint(identity)  # None when the input cannot be fingerprinted: keyed by occurrence
        return {
            "discriminator": digest[:16] if digest else None,
            "kind": "model",
            "inputs": identity,
            "codec": ModelResponseCodec(),
            "usage": response_usage(name),
            "details": {"model": name or type(self.wrapped).__qualname__},
        }

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any = None,
    ) -> ModelResponse:
        """Serve the response from the store, or request it and commit it before returning."""
        request = _Request(
            (system_instructions, input, model_settings, tools, output_schema, handoffs, tracing),
            {
                "previous_response_id": previous_response_id,
                "conversation_id": conversation_id,
                "prompt": prompt,
            },
        )

        async def ask() -> ModelResponse:
            return await self.wrapped.get_response(*request.positional, **request.keywords)

        if current_execution() is None:
            return await ask()
        return await run_checkpoint_async("model", ask, **self._checkpoint_options(request))

    async def stream_response(  # pyright: ignore[reportIncompatibleMethodOverride] - an async generator
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff[Any, Any]],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any = None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        """Stream live events, committing the final response before yielding `response.completed`."""
        request = _Request(
            (system_instructions, input, model_settings, tools, output_schema, handoffs, tracing),
            {
                "previous_response_id": previous_response_id,
                "conversation_id": conversation_id,
                "prompt": prompt,
            },
        )

        def upstream() -> AsyncIterator[TResponseStreamEvent]:
            return self.wrapped.stream_response(*request.positional, **request.keywords)

        if current_execution() is None:
            async for event in upstream():
                yield event
            return
        live_events: asyncio.Queue[TResponseStreamEvent] = asyncio.Queue()
        completed: list[ResponseCompletedEvent] = []

        async def consume() -> ModelResponse:
            async for event in upstream():
                if isinstance(event, ResponseCompletedEvent):
                    completed.append(event)
                else:
                    live_events.put_nowait(event)
            if not completed:
                raise AdapterError(
                    "The model's stream ended without a response.completed event, so there is no "
                    "response to record; the call will run again on resume."
                )
            response = completed[-1].response
            return ModelResponse(
                output=list(response.output), usage=_usage_from_stream(response), response_id=response.id
            )

        call = asyncio.ensure_future(
            run_checkpoint_async("model", consume, **self._checkpoint_options(request))
        )
        async with contextlib.aclosing(relay_while_running(call, live_events)) as events:
            async for event in events:
                yield event
        stored = call.result()
        # Live: the provider's own completed event (committed by now); served: one built from the store.
        yield completed[-1] if completed else completed_event(stored)


class DurableModelProvider(ModelProvider):
    """Delegates to the user's `ModelProvider` and wraps each model it returns in `DurableModel`.

    Args:
        wrapped: The provider that resolves model names (the user's own `RunConfig.model_provider`,
            or the SDK's default `MultiProvider`).
    """

    def __init__(self, wrapped: ModelProvider) -> None:
        if isinstance(wrapped, DurableModelProvider):
            wrapped = wrapped.wrapped
        self.wrapped = wrapped

    def get_model(self, model_name: str | None) -> Model:
        """The wrapped provider's model for `model_name`, made durable."""
        return DurableModel(self.wrapped.get_model(model_name))

    async def aclose(self) -> None:
        """Close the wrapped provider."""
        await self.wrapped.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)
