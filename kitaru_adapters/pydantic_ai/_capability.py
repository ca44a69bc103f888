"""The capability that turns every model request and tool call of a PydanticAI run into a checkpoint call."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import TypeAdapter
from pydantic_ai import RunContext, exceptions
from pydantic_ai.capabilities import AbstractCapability, CapabilityOrdering
from pydantic_ai.exceptions import (
    ApprovalRequired,
    CallDeferred,
    ModelRetry,
    ToolFailed,
    ToolFailedError,
    ToolRetryError,
)
from pydantic_ai.messages import (
    ModelMessagesTypeAdapter,
    ModelResponse,
    ModelResponsePart,
    TextPart,
    ToolCallPart,
    ToolReturn,
    tool_return_content_ta,
)
from pydantic_ai.models import ModelRequestContext, ModelRequestParameters
from pydantic_ai.tools import (
    DeferredToolRequests,
    DeferredToolResults,
    ToolApproved,
    ToolDefinition,
    ToolDenied,
)

from kitaru_core import Budget, RetryPolicy
from kitaru_core.adapters import (
    ApprovalPolicy,
    ApprovalRequest,
    CallUsage,
    ModelResponseOverride,
    SideEffectPolicy,
    fingerprint,
    model_retry_policy,
    read_model_response_override,
    read_tool_result_override,
    request_approvals,
    retry_delay_in_call,
    run_checkpoint_async,
)
from kitaru_core.errors import SerializationError

RETRY_MODEL_REQUEST: type[Exception] | None = getattr(exceptions, "RetryModelRequest", None)
"""PydanticAI's way for `on_model_request_error` to ask for another attempt (newer releases only);
without it model requests are not retried by the adapter."""

RESPONSE_ADAPTER: TypeAdapter[ModelResponse] = TypeAdapter(ModelResponse)
PARAMETERS_ADAPTER: TypeAdapter[ModelRequestParameters] = TypeAdapter(ModelRequestParameters)
TOOL_RETURN_ADAPTER: TypeAdapter[ToolReturn] = TypeAdapter(ToolReturn)

# Fields PydanticAI fills per run; a model request's fingerprint leaves them out so a resumed run
# (new run id, new timestamps) matches the stored call. Source: pydantic_ai.messages dataclasses
# and the Prefect integration's cache policy (`durable_exec/prefect/_cache_policies.py`).
PER_RUN_FIELDS = frozenset(
    {
        "timestamp",
        "run_id",
        "conversation_id",
        "provider_response_id",
        "usage",
        "history_digest",
        "workspace_ref",
        "failed_attempts",
        "provider_details",
    }
)
# Where a model response came from (PydanticAI stamps `ModelResponse.provider_url`, the provider's
# base URL with its host and port): a deployment detail, not something the model sees.
RESPONSE_ENDPOINT_FIELDS = frozenset({"provider_url"})
FRAMEWORK_CALL_ID_PREFIX = "pyd_ai_"
APPROVAL_METADATA_KEY = "kitaru_requires_approval"


def _normalize(value: Any) -> Any:
    """Drop per-run fields; parse streamed tool-call arguments (JSON text) so streamed == not streamed."""
    if isinstance(value, dict):
        mapping: dict[str, Any] = value  # pyright: ignore[reportUnknownVariableType]
        if mapping.get("part_kind") == "tool-call" and isinstance(mapping.get("args"), str):
            with contextlib.suppress(ValueError):
                mapping = {**mapping, "args": json.loads(mapping["args"] or "{}")}
        return {
            key: _normalize(item)
            for key, item in mapping.items()
            if key not in PER_RUN_FIELDS
            and not (key in RESPONSE_ENDPOINT_FIELDS and mapping.get("kind") == "response")
            and not (key == "tool_call_id" and str(item).startswith(FRAMEWORK_CALL_ID_PREFIX))
        }
    if isinstance(value, list):
        return [_normalize(item) for item in value]  # pyright: ignore[reportUnknownVariableType]
    return value


def run_inputs(user_prompt: Any, message_history: Any) -> dict[str, Any]:
    """What identifies a top-level run for resume: its prompt and message history (per-run fields removed)."""
    history = ModelMessagesTypeAdapter.dump_python(list(message_history or []), mode="json")
    return {
        "prompt": user_prompt if isinstance(user_prompt, str | None) else fingerprint(user_prompt),
        "history": fingerprint(_normalize(history)),
    }


def model_request_identity(request_context: ModelRequestContext) -> dict[str, Any]:
    """What a model request's fingerprint covers: model, messages, settings, tools and output mode."""
    return {
        "model": request_context.model_id or request_context.model.model_id,
        "messages": _normalize(ModelMessagesTypeAdapter.dump_python(request_context.messages, mode="json")),
        "settings": _normalize(json.loads(json.dumps(request_context.model_settings or {}, default=str))),
        "parameters": _normalize(
            PARAMETERS_ADAPTER.dump_python(request_context.model_request_parameters, mode="json")
        ),
    }


def overridden_response(override: ModelResponseOverride) -> ModelResponse:
    """The `ModelResponse` a replay override gives a model request: its text, then its tool calls.

    The response has zero usage (no model was asked); `wrap_model_request` names the model.

    Args:
        override: The override, as `kitaru_core.adapters.read_model_response_override` loads it.

    Returns:
        A response with a `TextPart` (when the override has text) and one `ToolCallPart` per tool
        call, with the override's tool call ids.
    """
    parts: list[ModelResponsePart] = []
    if override.text is not None:
        parts.append(TextPart(content=override.text))
    for call in override.tool_calls:
        part = ToolCallPart(tool_name=call.name, args=dict(call.arguments))
        if call.id is not None:  # always, for an override the core stored: it fills missing ids
            part.tool_call_id = call.id
        parts.append(part)
    return ModelResponse(parts=parts)


class ModelResponseCodec:
    """Stores a `ModelResponse` as PydanticAI's own JSON (`TypeAdapter(ModelResponse)`).

    It also loads a replay's override of the response (`kitaru_core.adapters.read_model_response_override`).
    """

    def encode(self, value: Any) -> tuple[str, bytes]:
        """Serialize a `ModelResponse`."""
        return "json:pydantic_ai.ModelResponse", RESPONSE_ADAPTER.dump_json(value)

    def decode(self, format: str, payload: bytes) -> Any:
        """Load a `ModelResponse`, or build one from a replay's override.

        Raises:
            SerializationError: The stored value is neither a PydanticAI response nor a model
                response override (a tool result override given to a model request).
        """
        override = read_model_response_override(format, payload)
        if override is not None:
            return overridden_response(override)
        if format != "json:pydantic_ai.ModelResponse":
            raise SerializationError(f"Expected a stored PydanticAI ModelResponse, found format {format!r}.")
        return RESPONSE_ADAPTER.validate_json(payload)


@dataclass
class ToolOutcome:
    """A tool call's result, with PydanticAI's control-flow exceptions kept as data.

    Attributes:
        kind: `value`, `tool-return`, `retry` (the tool raised `ModelRetry`), `failed` (`ToolFailed`),
            `approval` (the tool raised `ApprovalRequired`) or `deferred` (`CallDeferred`).
        value: The tool's return value (JSON form once stored).
        message: The retry or failure message.
        metadata: Metadata of an `ApprovalRequired` or `CallDeferred`.
        live_error: The exception raised in this process (not stored), re-raised as it was.
    """

    kind: str
    value: Any = None
    message: str | None = None
    metadata: dict[str, Any] | None = None
    live_error: BaseException | None = field(default=None, repr=False)

    def unwrap(self) -> Any:
        """Return the value or raise the tool's control-flow exception, as the live tool did."""
        if self.live_error is not None:
            raise self.live_error
        if self.kind == "retry":
            raise ModelRetry(self.message or "")
        if self.kind == "failed":
            raise ToolFailed(self.message or "")
        if self.kind == "approval":
            raise ApprovalRequired(metadata=self.metadata)
        if self.kind == "deferred":
            raise CallDeferred(metadata=self.metadata)
        return self.value


class ToolOutcomeCodec:
    """Stores a `ToolOutcome` as JSON using PydanticAI's tool-return adapters.

    It also loads a replay's override of the result (`kitaru_core.adapters.read_tool_result_override`): the tool
    is taken to have returned that JSON value.
    """

    def encode(self, value: Any) -> tuple[str, bytes]:
        """Serialize a `ToolOutcome`."""
        outcome: ToolOutcome = value
        if outcome.kind == "tool-return":
            stored = TOOL_RETURN_ADAPTER.dump_python(outcome.value, mode="json")
        elif outcome.kind == "value":
            stored = tool_return_content_ta.dump_python(outcome.value, mode="json")
        else:
            stored = None
        document = {
            "kind": outcome.kind,
            "value": stored,
            "message": outcome.message,
            "metadata": outcome.metadata,
        }
        return "json:pydantic_ai.ToolOutcome", json.dumps(document).encode("utf-8")

    def decode(self, format: str, payload: bytes) -> Any:
        """Load a `ToolOutcome`, or the outcome a replay's override gives (the tool returned its value).

        Raises:
            SerializationError: The stored value is neither a PydanticAI tool outcome nor a tool
                result override (a model response override given to a tool call).
        """
        override = read_tool_result_override(format, payload)
        if override is not None:
            return given_tool_result(override.value)
        if format != "json:pydantic_ai.ToolOutcome":
            raise SerializationError(f"Expected a stored PydanticAI tool outcome, found format {format!r}.")
        document = json.loads(payload)
        kind = document["kind"]
        if kind == "tool-return":
            value = TOOL_RETURN_ADAPTER.validate_python(document["value"])
        elif kind == "value":
            value = tool_return_content_ta.validate_python(document["value"])
        else:
            value = None
        return ToolOutcome(
            kind=kind, value=value, message=document.get("message"), metadata=document.get("metadata")
        )


def given_tool_result(value: Any) -> ToolOutcome:
    """The outcome of an interrupted tool call whose result a person gave: the tool returned `value`."""
    return ToolOutcome(kind="value", value=value)


def response_usage(response: ModelResponse) -> CallUsage:
    """Tokens and cost of one model response (cost from genai-prices where the model is known)."""
    usage = response.usage
    known_cost = getattr(usage, "cost", None)
    cost: float | None = float(known_cost) if known_cost is not None else None
    if cost is None:
        try:
            cost = float(response.cost().total_price)
        except (LookupError, ValueError, AssertionError, AttributeError, TypeError):
            cost = None
    return CallUsage(
        model_name=response.model_name,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=cost,
    )


def _arguments_of(args: Any) -> dict[str, Any]:
    if isinstance(args, dict):
        return args  # pyright: ignore[reportUnknownVariableType]
    if isinstance(args, str):
        try:
            parsed = json.loads(args or "{}")
        except ValueError:
            return {"raw": args}
        return parsed if isinstance(parsed, dict) else {"value": parsed}  # pyright: ignore[reportUnknownVariableType]
    return {} if args is None else {"value": args}


@dataclass
class DurableCapability(AbstractCapability[Any]):
    """Runs each model request and tool call of an agent run as a `kitaru_core` checkpoint call.

    `kitaru_adapters.pydantic_ai.durable(agent)` attaches it and makes each top-level run an
    execution. Passed directly to `Agent(..., capabilities=[...])`, it records calls only inside
    an active execution (a `@flow` or `with execution(...)`); outside one, calls run normally.

    Attributes:
        agent_name: Returns the agent's name, used in execution names and call keys.
        policy: Which tool calls need approval besides those PydanticAI already marks.
        approval_timeout_s: Seconds each approval wait polls the store before suspending.
        side_effects: What a later run does with a tool call cut off inside its body, per tool.
        model_retries: How a failed model request is retried inside its checkpoint call; `None`:
            `kitaru_core.model_retries(...)` around the run, else `ModelRetryPolicy()`.
        budget: Limits on what the execution's model calls may spend; `None`: the enclosing
            execution's (a `@flow(budget=...)`), else none.
    """

    agent_name: Callable[[], str]
    policy: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    approval_timeout_s: float | None = None
    side_effects: SideEffectPolicy = field(default_factory=SideEffectPolicy)
    model_retries: RetryPolicy | None = None
    budget: Budget | None = None

    def get_ordering(self) -> CapabilityOrdering:
        """Sit outside every other capability, so what they do is inside the recorded calls."""
        return CapabilityOrdering(position="outermost")

    async def wrap_model_request(
        self,
        ctx: RunContext[Any],
        *,
        request_context: ModelRequestContext,
        handler: Callable[[ModelRequestContext], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        """Serve the model response from the store, or request it and commit it before returning."""
        response: ModelResponse = await run_checkpoint_async(
            "model_request",
            handler,
            request_context,
            kind="model",
            inputs=model_request_identity(request_context),
            codec=ModelResponseCodec(),
            usage=response_usage,
            details={"model": request_context.model_id or request_context.model.model_id},
            # The policy is applied by `on_model_request_error`, inside the handler (called once only).
            retry=model_retry_policy(self.model_retries) if RETRY_MODEL_REQUEST is not None else None,
            on_interrupted="retry",  # a model request acts on nothing: an interrupted one is sent again
        )
        if response.model_id is None:  # a served response was never stamped by the graph
            response.model_id = request_context.model_id or request_context.model.model_id
        if response.model_name is None:  # a replay's override names no model
            response.model_name = request_context.model.model_name
        return response

    async def on_model_request_error(
        self, ctx: RunContext[Any], *, request_context: ModelRequestContext, error: Exception
    ) -> ModelResponse:
        """Retry a failed attempt inside the recorded call when the model-retry policy says so.

        PydanticAI's `ModelAPIError`s carry the HTTP status and `retry_after`, and are raised from
        the provider SDK's error; `retry_delay_in_call` counts the attempt in the checkpoint call.
        """
        delay_s = retry_delay_in_call(error) if RETRY_MODEL_REQUEST is not None else None
        if RETRY_MODEL_REQUEST is None or delay_s is None:
            raise error
        await asyncio.sleep(delay_s)
        raise RETRY_MODEL_REQUEST()

    async def prepare_tools(
        self, ctx: RunContext[Any], tool_defs: list[ToolDefinition]
    ) -> list[ToolDefinition]:
        """Gate `requires_approval` tools and tools in `approve=` through our own approval path.

        PydanticAI treats a streamed call of an `unapproved` tool as a final result and never asks
        for approval under `run_stream`; marking the tool and gating it in `wrap_tool_execute`
        works in every run mode.
        """
        gated: list[ToolDefinition] = []
        for tool_def in tool_defs:
            if tool_def.kind == "unapproved" or (
                tool_def.kind == "function" and self.policy.names(tool_def.name)
            ):
                metadata = {**(tool_def.metadata or {}), APPROVAL_METADATA_KEY: True}
                tool_def = replace(tool_def, kind="function", metadata=metadata)
            gated.append(tool_def)
        return gated

    async def wrap_tool_execute(
        self,
        ctx: RunContext[Any],
        *,
        call: ToolCallPart,
        tool_def: ToolDefinition,
        args: dict[str, Any],
        handler: Callable[[dict[str, Any]], Awaitable[Any]],
    ) -> Any:
        """Serve the tool's result from the store, or run it and commit it before returning."""
        if not ctx.tool_call_approved and (
            (tool_def.metadata or {}).get(APPROVAL_METADATA_KEY)
            or self.policy.requires_approval(call.tool_name, args)
        ):
            raise ApprovalRequired()

        async def run_tool(arguments: dict[str, Any]) -> ToolOutcome:
            try:
                result = await handler(arguments)
            except ToolRetryError as error:
                cause = error.__cause__
                message = cause.message if isinstance(cause, ModelRetry) else str(error)
                return ToolOutcome(kind="retry", message=message, live_error=error)
            except ApprovalRequired as error:
                return ToolOutcome(kind="approval", metadata=error.metadata, live_error=error)
            except CallDeferred as error:
                return ToolOutcome(kind="deferred", metadata=error.metadata, live_error=error)
            except ToolFailedError as error:
                cause = error.__cause__
                message = cause.message if isinstance(cause, ToolFailed) else str(error)
                return ToolOutcome(kind="failed", message=message, live_error=error)
            if isinstance(result, ToolReturn):
                return ToolOutcome(kind="tool-return", value=result)
            return ToolOutcome(kind="value", value=result)

        # Keyed by tool call id (a repeat of the id after a retry prompt gets `#2`); the approved
        # run of a gated call gets its own key.
        discriminator = call.tool_call_id + (":approved" if ctx.tool_call_approved else "")
        outcome: ToolOutcome = await run_checkpoint_async(
            f"tool:{call.tool_name}",
            run_tool,
            args,
            discriminator=discriminator,
            kind="tool",
            inputs={"tool": call.tool_name, "arguments": args},
            codec=ToolOutcomeCodec(),
            details={"tool_name": call.tool_name, "tool_call_id": call.tool_call_id},
            on_interrupted=self.side_effects.mode(call.tool_name),
            given_result=given_tool_result,
        )
        return outcome.unwrap()

    async def handle_deferred_tool_calls(
        self, ctx: RunContext[Any], *, requests: DeferredToolRequests
    ) -> DeferredToolResults | None:
        """Turn every approval PydanticAI asks for into a durable wait; leave external calls deferred."""
        if not requests.approvals:
            return None
        decisions = await asyncio.to_thread(  # the waits poll the store: off the event loop, as in other adapters
            request_approvals,
            [
                ApprovalRequest(call.tool_name, _arguments_of(call.args), call.tool_call_id)
                for call in requests.approvals
            ],
            timeout=self.approval_timeout_s,
        )
        approvals: dict[str, bool | ToolApproved | ToolDenied] = {}
        for call_id, decision in decisions.items():
            if decision.approved:
                approvals[call_id] = ToolApproved()
            else:
                approvals[call_id] = ToolDenied(decision.message) if decision.message else ToolDenied()
        return DeferredToolResults(approvals=approvals)
