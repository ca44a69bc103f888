"""Model calls as checkpoint calls: a delegating `Model` and a delegating `ModelProvider`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import typing
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, cast

from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import ModelResponse, TResponseInputItem, TResponseOutputItem, TResponseStreamEvent
from agents.model_settings import ModelSettings
from agents.models.fake_id import FAKE_RESPONSES_ID
from agents.models.interface import Model, ModelProvider, ModelTracing
from agents.tool import FunctionTool, Tool
from agents.usage import Usage, deserialize_usage, serialize_usage
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseUsage,
)
from pydantic import BaseModel, TypeAdapter
from pydantic.dataclasses import dataclass as pydantic_dataclass

from kitaru_core import current_execution
from kitaru_core.adapters import (
    UNCONVERTED,
    CallUsage,
    ModelResponseOverride,
    cost_usd,
    final_once_relayed,
    fingerprint,
    model_retry_policy,
    read_model_response_override,
    relay_while_running,
    run_checkpoint_async,
)
from kitaru_core.adapters import jsonable as shared_jsonable
from kitaru_core.errors import AdapterError, SerializationError

OUTPUT_ADAPTER: TypeAdapter[list[TResponseOutputItem]] = TypeAdapter(list[TResponseOutputItem])
MODEL_RESPONSE_FORMAT = "json:openai_agents.ModelResponse"


@pydantic_dataclass
class StreamedModelResponse(ModelResponse):
    """A `ModelResponse` recorded from a stream, with the raw events the model sent, in order.

    A served streamed call replays these events, so code that consumes deltas sees what it saw live.
    """

    stream_events: list[dict[str, Any]] | None = None


def jsonable(value: Any) -> Any:
    """A JSON form of SDK values (pydantic models, dataclasses, containers) for fingerprints.

    `kitaru_core.adapters.jsonable`'s rules (keys whose value is `None` are left out: an output item
    the SDK built from a live response omits unset fields, the same item loaded from the store may
    carry them as `null`), except that a class is its `repr`, as 0.1 recorded it.
    """
    return shared_jsonable(value, convert=_class_repr)


def _class_repr(value: Any) -> Any:
    return repr(value) if isinstance(value, type) else UNCONVERTED


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


def overridden_response(override: ModelResponseOverride) -> ModelResponse:
    """The `ModelResponse` a replay override gives a model call: a message with its text, then its tool calls.

    The items carry the SDK's placeholder id (`FAKE_RESPONSES_ID`, as for a Chat Completions
    response), which the SDK leaves out of later requests; the usage is zero (no model was asked).
    A streamed call serves it as events rebuilt from these items (`replayed_events`).

    Args:
        override: The override, as `kitaru_core.adapters.read_model_response_override` loads it.

    Returns:
        A response whose output is a `ResponseOutputMessage` (when the override has text) and one
        `ResponseFunctionToolCall` per tool call, with the override's tool call ids.
    """
    output: list[TResponseOutputItem] = []
    if override.text is not None:
        output.append(
            ResponseOutputMessage(
                id=FAKE_RESPONSES_ID,
                type="message",
                role="assistant",
                status="completed",
                content=[
                    ResponseOutputText(type="output_text", text=override.text, annotations=[], logprobs=[])
                ],
            )
        )
    for index, call in enumerate(override.tool_calls):
        output.append(
            ResponseFunctionToolCall(
                id=FAKE_RESPONSES_ID,
                type="function_call",
                call_id=call.id or f"call_override_{index}",  # the core fills ids: never used
                name=call.name,
                arguments=json.dumps(call.arguments, ensure_ascii=False),
                status="completed",
            )
        )
    return ModelResponse(output=output, usage=Usage(), response_id=None)


class ModelResponseCodec:
    """Stores a `ModelResponse` as its output items (OpenAI's JSON) plus the SDK's usage JSON.

    It also loads a replay's override of the response (`kitaru_core.adapters.read_model_response_override`).
    """

    def encode(self, value: Any) -> tuple[str, bytes]:
        """Serialize a `ModelResponse`."""
        response: ModelResponse = value
        document: dict[str, Any] = {
            "output": OUTPUT_ADAPTER.dump_python(response.output, mode="json", exclude_unset=True),
            "usage": serialize_usage(response.usage),
            "response_id": response.response_id,
            "request_id": response.request_id,
        }
        if isinstance(response, StreamedModelResponse) and response.stream_events is not None:
            document["stream_events"] = response.stream_events
        return MODEL_RESPONSE_FORMAT, json.dumps(document).encode("utf-8")

    def decode(self, format: str, payload: bytes) -> Any:
        """Load a `ModelResponse`, or build one from a replay's override.

        Raises:
            SerializationError: The stored value is neither a recorded response nor a model
                response override (a tool result override given to a model call).
        """
        override = read_model_response_override(format, payload)
        if override is not None:
            return overridden_response(override)
        if format != MODEL_RESPONSE_FORMAT:
            raise SerializationError(
                f"Expected a stored OpenAI Agents ModelResponse, found format {format!r}."
            )
        document = json.loads(payload)
        fields: dict[str, Any] = {
            "output": OUTPUT_ADAPTER.validate_python(document["output"]),
            "usage": deserialize_usage(document["usage"]),
            "response_id": document.get("response_id"),
            "request_id": document.get("request_id"),
        }
        if "stream_events" in document:  # records made before streamed events were kept have none
            return StreamedModelResponse(**fields, stream_events=document["stream_events"])
        return ModelResponse(**fields)


def response_usage(model_name: str | None) -> Any:
    """A function giving the tokens and cost (genai-prices, where the model is known) of a response."""

    def usage_of(response: ModelResponse) -> CallUsage:
        usage = response.usage
        cost = (
            cost_usd(
                model_name,
                usage.input_tokens,
                usage.output_tokens,
                usage.input_tokens_details.cached_tokens or 0,
            )
            if model_name
            else None
        )
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


def replayed_events(response: ModelResponse) -> list[TResponseStreamEvent]:
    """The stream a served streamed call replays, ending with `response.completed`.

    That is the recorded raw events or, for a response recorded without them (by `get_response`,
    or before they were kept), events rebuilt from its output items in the order the Responses
    API streams them (text in word pieces, call arguments in one delta).

    Args:
        response: The stored response.

    Returns:
        The events, built as the openai client builds them from the wire.
    """
    if isinstance(response, StreamedModelResponse) and response.stream_events:
        try:
            return [_event(data) for data in response.stream_events]
        except KeyError:
            pass  # an event type this openai version does not know: rebuild from the output
    return [_event(data) for data in _rebuilt_events(response)]


@functools.cache
def _event_classes() -> dict[str, type[BaseModel]]:
    """The Responses API stream event classes by their `type`."""
    members: tuple[Any, ...] = typing.get_args(TResponseStreamEvent)
    while len(members) == 1 or (members and typing.get_origin(members[0]) is typing.Union):
        members = typing.get_args(members[0])
    classes: dict[str, type[BaseModel]] = {}
    for member in members:
        field = getattr(member, "model_fields", {}).get("type")
        for value in typing.get_args(field.annotation) if field is not None else ():
            classes[value] = member
    return classes


def _event(data: dict[str, Any]) -> TResponseStreamEvent:
    """An event as the openai client builds one from the wire: leniently, fields it lacks left unset."""
    event_class = _event_classes()[data["type"]]
    return cast(TResponseStreamEvent, event_class.construct(**data))  # pyright: ignore[reportDeprecated]


def _rebuilt_events(response: ModelResponse) -> Iterator[dict[str, Any]]:
    completed = completed_event(response).model_dump(mode="json", exclude_none=True)
    in_progress = {**completed["response"], "status": "in_progress", "output": []}
    in_progress.pop("usage", None)
    sequence = 0

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        nonlocal sequence
        sequence += 1
        return {"type": kind, "sequence_number": sequence - 1, **fields}

    yield event("response.created", response=in_progress)
    yield event("response.in_progress", response=in_progress)
    for index, item in enumerate(completed["response"]["output"]):
        item_id = item.get("id") or f"item_{index}"
        opened = {**item, "status": "in_progress"}
        if item.get("type") == "message":
            opened["content"] = []
        elif item.get("type") == "function_call":
            opened["arguments"] = ""
        yield event("response.output_item.added", output_index=index, item=opened)
        if item.get("type") == "message":
            for part_index, part in enumerate(item.get("content", [])):
                place = {"item_id": item_id, "output_index": index, "content_index": part_index}
                text = part.get("text") if part.get("type") == "output_text" else None
                empty = {**part, "text": ""} if text is not None else part
                yield event("response.content_part.added", **place, part=empty)
                if text is not None:
                    for piece in re.findall(r"\s*\S+|\s+", text):
                        yield event("response.output_text.delta", **place, delta=piece, logprobs=[])
                    yield event("response.output_text.done", **place, text=text, logprobs=[])
                yield event("response.content_part.done", **place, part=part)
        elif item.get("type") == "function_call":
            arguments = item.get("arguments", "")
            place = {"item_id": item_id, "output_index": index}
            yield event("response.function_call_arguments.delta", **place, delta=arguments)
            yield event(
                "response.function_call_arguments.done", **place, arguments=arguments, name=item.get("name")
            )
        yield event("response.output_item.done", output_index=index, item=item)
    yield event("response.completed", response=completed["response"])


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
    commit the final response, with the raw events, before the runner sees it; served calls
    replay the recorded events in order (text deltas, call-argument deltas, output items, then
    `response.completed`). Outside an execution calls go straight to the wrapped model.

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
            # `durable(..., model_retries=...)` is set for the run by `_durable_boundary`. The openai
            # SDK's errors (RateLimitError, APIStatusError...) reach this call unwrapped.
            "retry": model_retry_policy(),
            "on_interrupted": "retry",  # a model request acts on nothing: an interrupted one is sent again
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
        recorded: list[dict[str, Any]] = []

        async def consume() -> ModelResponse:
            recorded.clear()  # a retried attempt records its own stream
            with final_once_relayed(recorded):
                async for event in upstream():
                    recorded.append(event.model_dump(mode="json", exclude_unset=True))
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
            return StreamedModelResponse(
                output=list(response.output),
                usage=_usage_from_stream(response),
                response_id=response.id,
                stream_events=recorded,
            )

        call = asyncio.ensure_future(
            run_checkpoint_async("model", consume, **self._checkpoint_options(request))
        )
        async with contextlib.aclosing(relay_while_running(call, live_events)) as events:
            async for event in events:
                yield event
        stored = call.result()
        if completed:  # live: the provider's own completed event, committed by now
            yield completed[-1]
            return
        for event in replayed_events(stored):  # served: the stream as it was, from the store
            yield event


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
