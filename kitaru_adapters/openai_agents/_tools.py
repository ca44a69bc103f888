"""Tool calls and handoffs as checkpoint calls, with approval gates and the run context restored."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from agents.handoffs import Handoff
from agents.run_context import RunContextWrapper
from agents.tool import DEFAULT_APPROVAL_REJECTION_MESSAGE, FunctionTool
from agents.tool_context import ToolContext
from pydantic import BaseModel, TypeAdapter

from kitaru_core import Budget, JsonCodec, RetryPolicy, current_execution
from kitaru_core.adapters import (
    APPROVAL_BATCH_WINDOW_S,
    ApprovalPolicy,
    ApprovalRequest,
    SideEffectPolicy,
    read_override,
    read_tool_result_override,
    request_approval_together,
    run_checkpoint_async,
    scope,
)
from kitaru_core.errors import SerializationError

TOOL_OUTCOME_FORMAT = "json:openai_agents.ToolOutcome"
HANDOFF_FORMAT = "json:openai_agents.Handoff"
WRAPPED_MARKER = "__kitaru_durable_tool__"

ApprovalMode = Literal["wait", "interrupt"]


@dataclass(frozen=True)
class DurableOptions:
    """How `durable()` / `DurableRunner` treat an agent graph.

    Attributes:
        policy: Which tool calls need approval besides those declared `needs_approval`.
        approval_mode: `"wait"`: approvals are durable waits (the run stops `waiting` until somebody
            answers); `"interrupt"`: the SDK's own interruption flow (`result.interruptions`,
            `RunState.approve/reject`) is left to the caller.
        approval_timeout_s: Seconds an approval wait polls the store before the execution suspends.
        name: Execution name override (default: the starting agent's name).
        side_effects: What a later run does with a tool call cut off inside its body, per tool.
        model_retries: How a failed model call is retried inside its checkpoint call; `None`:
            `kitaru_core.model_retries(...)` around the run, else `ModelRetryPolicy()`.
        budget: Limits on what the execution's model calls may spend; `None`: the enclosing
            execution's (a `@flow(budget=...)`), else none.
    """

    policy: ApprovalPolicy = dataclasses.field(default_factory=ApprovalPolicy)
    approval_mode: ApprovalMode = "wait"
    approval_timeout_s: float | None = None
    name: str | None = None
    side_effects: SideEffectPolicy = dataclasses.field(default_factory=SideEffectPolicy)
    model_retries: RetryPolicy | None = None
    budget: Budget | None = None


# -- the run context ---------------------------------------------------------------------------------


def snapshot_context(context: Any) -> Any:
    """The user's run context as JSON (pydantic models, dataclasses, dicts), or `None` if it has none.

    Tools and handoff callbacks may change the context (the SDK's customer-service example stores a
    flight number in it); a call served from the store gives the context back as it was after the
    live call.
    """
    if context is None:
        return None
    try:
        if isinstance(context, BaseModel):
            return context.model_dump(mode="json")
        if dataclasses.is_dataclass(context) and not isinstance(context, type):
            return TypeAdapter(type(context)).dump_python(context, mode="json")
        if isinstance(context, dict):
            return json.loads(json.dumps(context))
    except (TypeError, ValueError):
        return None
    return None


def restore_context(context: Any, snapshot: Any) -> None:
    """Write a snapshot taken by `snapshot_context` back into the same context object."""
    if snapshot is None or context is None:
        return
    if isinstance(context, BaseModel):
        restored = type(context).model_validate(snapshot)
        for name in type(context).model_fields:
            setattr(context, name, getattr(restored, name))
    elif dataclasses.is_dataclass(context) and not isinstance(context, type):
        restored = TypeAdapter(type(context)).validate_python(snapshot)
        for field in dataclasses.fields(context):
            setattr(context, field.name, getattr(restored, field.name))
    elif isinstance(context, dict):
        context.clear()
        context.update(snapshot)


# -- tool calls --------------------------------------------------------------------------------------


@dataclass
class ToolOutcome:
    """A tool call's output and the run context as the call left it."""

    output: Any
    context: Any = None


class ToolOutcomeCodec:
    """Stores a `ToolOutcome`: the output through the core's JSON codec, the context as JSON.

    It also loads a replay's override of the result (`kitaru_core.adapters.read_tool_result_override`): the tool
    is taken to have returned that JSON value, and the run context is left as it is.
    """

    def encode(self, value: Any) -> tuple[str, bytes]:
        """Serialize a `ToolOutcome`."""
        outcome: ToolOutcome = value
        output_format, payload = JsonCodec().encode(outcome.output)
        document = {"format": output_format, "output": json.loads(payload), "context": outcome.context}
        return TOOL_OUTCOME_FORMAT, json.dumps(document).encode("utf-8")

    def decode(self, format: str, payload: bytes) -> Any:
        """Load a `ToolOutcome`, or the outcome a replay's override gives (the tool returned its value).

        Raises:
            SerializationError: The stored value is neither a tool outcome nor a tool result
                override (a model response override given to a tool call).
        """
        override = read_tool_result_override(format, payload)
        if override is not None:
            return ToolOutcome(output=override.value)
        if format != TOOL_OUTCOME_FORMAT:
            raise SerializationError(
                f"Expected a stored OpenAI Agents tool outcome, found format {format!r}."
            )
        document = json.loads(payload)
        output = JsonCodec().decode(document["format"], json.dumps(document["output"]).encode("utf-8"))
        return ToolOutcome(output=output, context=document.get("context"))


def _arguments(args_json: str) -> dict[str, Any]:
    try:
        parsed = json.loads(args_json or "{}")
    except ValueError:
        return {"raw": args_json}
    return parsed if isinstance(parsed, dict) else {"value": parsed}  # pyright: ignore[reportUnknownVariableType]


async def _declared_approval(
    tool: FunctionTool, context: ToolContext[Any], arguments: dict[str, Any]
) -> bool:
    rule = tool.needs_approval
    if callable(rule):
        decided = rule(context, arguments, context.tool_call_id)
        return bool(await decided) if inspect.isawaitable(decided) else bool(decided)
    return bool(rule)


def is_wrapped(tool: FunctionTool) -> bool:
    """Whether `tool` is already a durable copy made by this adapter."""
    return getattr(tool.on_invoke_tool, WRAPPED_MARKER, False)


def is_agent_tool(tool: FunctionTool) -> bool:
    """Whether `tool` was made by `Agent.as_tool` (the SDK's tool origin says so)."""
    origin = getattr(tool, "tool_origin", None)
    origin_type = getattr(origin, "type", None)
    return getattr(origin_type, "value", origin_type) == "agent_as_tool" or bool(
        getattr(tool, "_is_agent_tool", False)
    )


def durable_tool(
    tool: FunctionTool, options: DurableOptions, *, kind: Literal["tool", "mcp"] = "tool"
) -> FunctionTool:
    """A copy of `tool` whose invocation is a checkpoint call keyed by `tool_call_id`.

    In `"wait"` approval mode the copy asks for approval itself (a durable wait) when the tool is
    declared `needs_approval` or the policy selects it, and tells the SDK no approval is needed;
    a denial returns the SDK's rejection text (or the answer's message) to the model. In
    `"interrupt"` mode tools the policy names are marked `needs_approval=True` and the SDK's
    interruption flow decides.
    """
    if is_wrapped(tool):
        return tool
    invoke = tool.on_invoke_tool

    async def run(context: ToolContext[Any], args_json: str) -> ToolOutcome:
        output = await invoke(context, args_json)
        return ToolOutcome(output=output, context=snapshot_context(context.context))

    async def on_invoke_tool(context: ToolContext[Any], args_json: str) -> Any:
        if current_execution() is None:
            return await invoke(context, args_json)
        arguments = _arguments(args_json)
        agent_tool = is_agent_tool(tool)
        if options.approval_mode == "wait" and (
            await _declared_approval(tool, context, arguments)
            or options.policy.requires_approval(tool.name, arguments)
        ):
            # The SDK runs a turn's tool calls as concurrent tasks: parallel gated calls ask together.
            decision = await asyncio.to_thread(
                request_approval_together,
                ApprovalRequest(tool.name, arguments, context.tool_call_id),
                window_s=APPROVAL_BATCH_WINDOW_S,
                timeout=options.approval_timeout_s,
            )
            if not decision.approved:
                return decision.message or DEFAULT_APPROVAL_REJECTION_MESSAGE
        if agent_tool:
            # An agent used as a tool is a scope, not one call: its own model and tool calls are
            # checkpoint calls, so a served re-run runs it again from the store and its streamed
            # events (`as_tool(on_stream=...)`) reach the callback as they did live.
            with scope(f"tool:{tool.name}", discriminator=context.tool_call_id):
                return await invoke(context, args_json)
        outcome: ToolOutcome = await run_checkpoint_async(
            f"tool:{tool.name}",
            run,
            context,
            args_json,
            discriminator=context.tool_call_id,
            kind=kind,
            inputs={"tool": tool.name, "arguments": arguments},
            codec=ToolOutcomeCodec(),
            details={"tool_name": tool.name, "tool_call_id": context.tool_call_id},
            on_interrupted=options.side_effects.mode(tool.name),
            given_result=lambda value: ToolOutcome(output=value, context=snapshot_context(context.context)),
        )
        restore_context(context.context, outcome.context)
        return outcome.output

    setattr(on_invoke_tool, WRAPPED_MARKER, True)
    return dataclasses.replace(
        tool, on_invoke_tool=on_invoke_tool, needs_approval=_sdk_approval_rule(tool, options)
    )


def _sdk_approval_rule(tool: FunctionTool, options: DurableOptions) -> Any:
    """What the SDK is told about approval: nothing in "wait" mode, declared + policy in "interrupt" mode."""
    if options.approval_mode == "wait":
        return False
    if options.policy.names(tool.name):
        return True
    declared = tool.needs_approval
    if not callable(options.policy.rule):
        return declared
    policy = options.policy

    async def needs_approval(context: RunContextWrapper[Any], params: dict[str, Any], call_id: str) -> bool:
        if policy.requires_approval(tool.name, params):
            return True
        if callable(declared):
            decided = declared(context, params, call_id)
            return bool(await decided) if inspect.isawaitable(decided) else bool(decided)
        return bool(declared)

    return needs_approval


# -- handoffs ------------------------------------------------------------------------------------------


class HandoffCodec:
    """Stores which agent a handoff went to and the run context as the handoff left it."""

    def encode(self, value: Any) -> tuple[str, bytes]:
        """Serialize `(agent name, context snapshot)`."""
        agent_name, context = value
        return HANDOFF_FORMAT, json.dumps({"agent": agent_name, "context": context}).encode("utf-8")

    def decode(self, format: str, payload: bytes) -> Any:
        """Load `(agent name, context snapshot)`.

        Raises:
            SerializationError: The stored value is not a handoff (a replay override: a handoff's
                result cannot be overridden).
        """
        if read_override(format, payload) is not None:
            raise SerializationError(
                "A handoff's result cannot be overridden (only model calls and tool calls can): replay "
                "from the handoff call instead, without an override for it, so it runs live."
            )
        if format != HANDOFF_FORMAT:
            raise SerializationError(f"Expected a stored OpenAI Agents handoff, found format {format!r}.")
        document = json.loads(payload)
        return document["agent"], document.get("context")


def durable_handoff(
    handoff: Handoff[Any, Any],
    prepare: Callable[[Any], Any],
    find_agent: Callable[[str], Any | None],
) -> Handoff[Any, Any]:
    """A copy of `handoff` whose invocation (with its `on_handoff` callback) is a checkpoint call.

    The stored result is the target agent's name and the run context after the callback, so a
    resumed run gets the same context (the same random flight number) without calling it again.
    The returned agent goes through `prepare`, so agents reached only through a handoff are durable.
    """
    if getattr(handoff.on_invoke_handoff, WRAPPED_MARKER, False):
        return handoff
    invoke: Callable[[RunContextWrapper[Any], str], Awaitable[Any]] = handoff.on_invoke_handoff
    live_agents: dict[str, Any] = {}

    async def run(context: RunContextWrapper[Any], args_json: str) -> tuple[str, Any]:
        agent = await invoke(context, args_json)
        live_agents[agent.name] = agent
        return agent.name, snapshot_context(context.context)

    async def on_invoke_handoff(context: RunContextWrapper[Any], args_json: str) -> Any:
        if current_execution() is None:
            return prepare(await invoke(context, args_json))
        agent_name, snapshot = await run_checkpoint_async(
            f"handoff:{handoff.tool_name}",
            run,
            context,
            args_json,
            kind="handoff",
            inputs={"handoff": handoff.tool_name, "arguments": _arguments(args_json)},
            codec=HandoffCodec(),
            details={"tool_name": handoff.tool_name, "agent": handoff.agent_name},
            on_interrupted="retry",  # its result is an agent and a run context: run the callback again
        )
        agent = live_agents.pop(agent_name, None) or find_agent(agent_name)
        if agent is None:  # an agent made up by the callback: ask it again, then restore the context
            agent = await invoke(context, args_json)
        restore_context(context.context, snapshot)
        return prepare(agent)

    setattr(on_invoke_handoff, WRAPPED_MARKER, True)
    return dataclasses.replace(handoff, on_invoke_handoff=on_invoke_handoff)
