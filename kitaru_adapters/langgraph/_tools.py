"""Tool calls as checkpoint calls (a class-level wrap of `BaseTool.run` / `arun`), with approval gates."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import BaseMessage, ToolMessage, message_to_dict, messages_from_dict
from langchain_core.tools import BaseTool
from langgraph.errors import GraphBubbleUp
from langgraph.types import Command, Send, interrupt
from pydantic import ValidationError

from kitaru_adapters.langgraph._model import jsonable
from kitaru_adapters.langgraph._position import Position, current_position
from kitaru_core import JsonCodec
from kitaru_core.adapters import (
    ApprovalDecision,
    ApprovalRequest,
    fingerprint,
    read_tool_result_override,
    request_approval_together,
    run_checkpoint,
    run_checkpoint_async,
)
from kitaru_core.errors import SerializationError

TOOL_OUTPUT_FORMAT = "json:langgraph.ToolOutput"
WRAPPED_MARKER = "__kitaru_langgraph_wrapped__"
TAG = "__kitaru__"
DENIED_MESSAGE = "The tool call {tool}({arguments}) was denied by a reviewer{reason}; it did not run."
APPROVAL_KIND = "tool_approval"
BATCH_WINDOW_S = 0.2
"""How long the first gated tool call of a step waits for its parallel siblings before asking."""


# -- the codec -----------------------------------------------------------------------------------------


def encode_value(value: Any) -> Any:
    """A tagged JSON form of a tool's output: messages, `Command`, `Send`, containers, pydantic values.

    Raises:
        SerializationError: A value is neither of those nor JSON-serializable through pydantic.
    """
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, BaseMessage):
        return {TAG: "message", "value": message_to_dict(value)}
    if isinstance(value, Command):
        return {
            TAG: "command",
            "graph": value.graph,
            "update": encode_value(value.update),
            "resume": encode_value(value.resume),
            "goto": encode_value(value.goto),
        }
    if isinstance(value, Send):
        return {TAG: "send", "node": value.node, "arg": encode_value(value.arg)}
    if isinstance(value, list):
        return [encode_value(item) for item in value]  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, tuple):
        return {TAG: "tuple", "items": [encode_value(item) for item in value]}  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value) and TAG not in value:  # pyright: ignore[reportUnknownVariableType]
        return {key: encode_value(item) for key, item in value.items()}  # pyright: ignore[reportUnknownVariableType]
    format_, payload = JsonCodec().encode(value)
    return {TAG: "json", "format": format_, "payload": payload.decode("utf-8")}


def decode_value(value: Any) -> Any:
    """Rebuild a value from `encode_value`'s form."""
    if isinstance(value, list):
        return [decode_value(item) for item in value]  # pyright: ignore[reportUnknownVariableType]
    if not isinstance(value, dict):
        return value
    tag = value.get(TAG)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    if tag is None:
        return {key: decode_value(item) for key, item in value.items()}  # pyright: ignore[reportUnknownVariableType]
    if tag == "message":
        return messages_from_dict([value["value"]])[0]
    if tag == "command":
        return Command(
            graph=value["graph"],
            update=decode_value(value["update"]),
            resume=decode_value(value["resume"]),
            goto=decode_value(value["goto"]) or (),
        )
    if tag == "send":
        return Send(value["node"], decode_value(value["arg"]))
    if tag == "tuple":
        return tuple(decode_value(item) for item in value["items"])
    if tag == "json":
        return JsonCodec().decode(value["format"], value["payload"].encode("utf-8"))
    raise SerializationError(f"Unknown stored LangGraph tool value tag {tag!r}.")


def overridden_output(value: Any, tool_name: str, tool_call_id: str | None) -> Any:
    """A replay's tool-result override as `BaseTool.run` returns it.

    Called by a `ToolNode` (with a tool call id) the tool returns a `ToolMessage` answering that
    call, whose content is the value (text as is, other JSON values as their JSON text); called
    directly, the value itself.
    """
    if tool_call_id is None:
        return value
    content = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return ToolMessage(content=content, tool_call_id=tool_call_id, name=tool_name)


class ToolOutputCodec:
    """Stores a tool's output (a `ToolMessage`, a `Command`, plain content) as tagged JSON.

    A replay's override of the call's result (`kitaru_core.adapters.read_tool_result_override`) loads as
    `overridden_output` makes it, for the call's tool and tool call id.

    Args:
        tool_name: The tool's name (of the `ToolMessage` an override becomes).
        tool_call_id: The id of the tool call the output answers, or `None` for a direct call.
    """

    def __init__(self, tool_name: str = "", tool_call_id: str | None = None) -> None:
        self.tool_name = tool_name
        self.tool_call_id = tool_call_id

    def encode(self, value: Any) -> tuple[str, bytes]:
        """Serialize a tool output."""
        return TOOL_OUTPUT_FORMAT, json.dumps(encode_value(value)).encode("utf-8")

    def decode(self, format: str, payload: bytes) -> Any:
        """Load a tool output (or a replay's override of it)."""
        override = read_tool_result_override(format, payload)
        if override is not None:
            return overridden_output(override.value, self.tool_name, self.tool_call_id)
        if format != TOOL_OUTPUT_FORMAT:
            raise SerializationError(f"Expected a stored LangGraph tool output, found format {format!r}.")
        return decode_value(json.loads(payload))


# -- control flow --------------------------------------------------------------------------------------


class _PassThrough(BaseException):
    """Carries LangGraph's own signals (`GraphInterrupt`, `ParentCommand`) past the checkpoint call.

    They are not failures of the tool: the call is not recorded, and it runs again when the node
    does (after the interrupt is answered, the tool's `interrupt()` returns the answer).
    """

    def __init__(self, signal: GraphBubbleUp) -> None:
        super().__init__(signal)
        self.signal = signal


# -- approvals -----------------------------------------------------------------------------------------


def _arguments(tool: BaseTool, tool_input: Any) -> dict[str, Any]:
    if isinstance(tool_input, str):
        return {"input": tool_input}
    if isinstance(tool_input, Mapping):
        filtered = getattr(tool, "_filter_injected_args", None)
        plain: Any = filtered(dict(tool_input)) if callable(filtered) else dict(tool_input)  # pyright: ignore[reportUnknownArgumentType]
        return jsonable(plain)
    return {"input": jsonable(tool_input)}


def _question_request(
    tool: str, arguments: Mapping[str, Any], call_id: str, problem: str | None
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "kind": APPROVAL_KIND,
        "tool": tool,
        "arguments": dict(arguments),
        "tool_call_id": call_id,
        "question": f"Allow the tool call {tool}({json.dumps(dict(arguments), default=str, sort_keys=True)})?",
        "answer_with": {"approved": True, "message": "optional note; shown to the model on denial"},
    }
    if problem:
        request["problem"] = problem
    return request


def parse_decision(answer: Any) -> ApprovalDecision:
    """An approval answer as a decision: `{"approved": bool, "message": ...}`, a bool, `"approve"`/`"reject"`.

    Raises:
        ValueError: The answer is none of those.
    """
    if isinstance(answer, bool):
        return ApprovalDecision(approved=answer)
    if isinstance(answer, str) and answer.strip().lower() in {
        "approve",
        "approved",
        "yes",
        "reject",
        "deny",
        "no",
    }:
        return ApprovalDecision(approved=answer.strip().lower() in {"approve", "approved", "yes"})
    try:
        return ApprovalDecision.model_validate(answer)
    except ValidationError as error:
        raise ValueError(
            f"Invalid approval answer {answer!r}: give {{'approved': true}} or "
            f"{{'approved': false, 'message': '...'}} ({error.error_count()} problem(s))."
        ) from error


def _interrupt_decision(tool: str, arguments: Mapping[str, Any], call_id: str) -> ApprovalDecision:
    """Ask with LangGraph's `interrupt()`; an invalid answer asks again (a new interrupt naming the problem)."""
    problem: str | None = None
    while True:
        answer = interrupt(_question_request(tool, arguments, call_id, problem))
        try:
            return parse_decision(answer)
        except ValueError as error:
            problem = str(error)


def _denied(
    tool: BaseTool, arguments: Mapping[str, Any], call_id: str | None, decision: ApprovalDecision
) -> Any:
    reason = f": {decision.message}" if decision.message else ""
    text = DENIED_MESSAGE.format(
        tool=tool.name, arguments=json.dumps(dict(arguments), default=str, sort_keys=True), reason=reason
    )
    if call_id is None:
        return text
    return ToolMessage(content=text, tool_call_id=call_id, name=tool.name, status="error")


def _gate(
    tool: BaseTool, position: Position, arguments: Mapping[str, Any], call_id: str
) -> ApprovalDecision | None:
    """The decision on a gated call, or `None` when the policy does not gate it."""
    run = position.run
    if not run.options.policy.requires_approval(tool.name, arguments):
        return None
    if run.has_checkpointer:
        return _interrupt_decision(tool.name, arguments, call_id)
    request = ApprovalRequest(tool.name, arguments, approval_id(position, tool.name, arguments, call_id))
    return request_approval_together(request, window_s=BATCH_WINDOW_S, timeout=run.options.approval_timeout_s)


# -- the wraps -----------------------------------------------------------------------------------------

_original: dict[str, Any] = {}
_install_lock = threading.Lock()


def _checkpoint_options(
    tool: BaseTool, position: Position, arguments: dict[str, Any], call_id: str | None
) -> dict[str, Any]:
    identity = {"tool": tool.name, "arguments": arguments}
    details: dict[str, Any] = {"tool_name": tool.name}
    if call_id is not None:
        details["tool_call_id"] = call_id
    if position.node:
        details["node"] = position.node
    return {
        # The tool call id names the request; the position keeps a provider that reuses ids
        # (`call_0` in every turn) from being served another turn's result.
        "discriminator": f"{position.where}/{call_id}"
        if call_id
        else position.discriminator(fingerprint(identity)),
        "kind": "tool",
        "inputs": identity,
        "codec": ToolOutputCodec(tool.name, call_id),
        "details": details,
    }


def approval_id(position: Position, tool: str, arguments: Mapping[str, Any], call_id: str) -> str:
    """The call id in an approval wait's name: `<tool call id>-<8 hex of position and arguments>`.

    A wait's answer is reused whenever the same name comes up again, so the name must not repeat
    for another call: a provider that reuses tool call ids (`call_0` in every turn) must not get a
    refund of 1,000 approved by the answer given for a refund of 25.
    """
    digest = fingerprint({"where": position.where, "tool": tool, "arguments": dict(arguments)}) or "nofp"
    return f"{call_id}-{digest[:8]}"


def _call_id(position: Position, tool: BaseTool, arguments: dict[str, Any], tool_call_id: str | None) -> str:
    if tool_call_id:
        return tool_call_id
    digest = fingerprint({"tool": tool.name, "arguments": arguments}) or "nofp"
    return f"{position.namespace or 'root'}@{position.step}/{digest[:16]}"


def _run(self: BaseTool, tool_input: Any, *args: Any, tool_call_id: str | None = None, **kwargs: Any) -> Any:
    original = _original["run"]
    position = current_position()
    if position is None:
        return original(self, tool_input, *args, tool_call_id=tool_call_id, **kwargs)
    arguments = _arguments(self, tool_input)
    decision = _gate(self, position, arguments, _call_id(position, self, arguments, tool_call_id))
    if decision is not None and not decision.approved:
        return _denied(self, arguments, tool_call_id, decision)

    def call() -> Any:
        try:
            return original(self, tool_input, *args, tool_call_id=tool_call_id, **kwargs)
        except GraphBubbleUp as signal:
            raise _PassThrough(signal) from None

    try:
        return run_checkpoint(
            f"tool:{self.name}", call, **_checkpoint_options(self, position, arguments, tool_call_id)
        )
    except _PassThrough as passing:
        raise passing.signal from None


async def _arun(
    self: BaseTool, tool_input: Any, *args: Any, tool_call_id: str | None = None, **kwargs: Any
) -> Any:
    original = _original["arun"]
    position = current_position()
    if position is None:
        return await original(self, tool_input, *args, tool_call_id=tool_call_id, **kwargs)
    arguments = _arguments(self, tool_input)
    call_id = _call_id(position, self, arguments, tool_call_id)
    if position.run.options.policy.requires_approval(self.name, arguments):
        if position.run.has_checkpointer:
            decision = _interrupt_decision(self.name, arguments, call_id)
        else:
            decision = await asyncio.to_thread(
                request_approval_together,
                ApprovalRequest(self.name, arguments, approval_id(position, self.name, arguments, call_id)),
                window_s=BATCH_WINDOW_S,
                timeout=position.run.options.approval_timeout_s,
            )
        if not decision.approved:
            return _denied(self, arguments, tool_call_id, decision)

    async def call() -> Any:
        try:
            return await original(self, tool_input, *args, tool_call_id=tool_call_id, **kwargs)
        except GraphBubbleUp as signal:
            raise _PassThrough(signal) from None

    try:
        return await run_checkpoint_async(
            f"tool:{self.name}", call, **_checkpoint_options(self, position, arguments, tool_call_id)
        )
    except _PassThrough as passing:
        raise passing.signal from None


def install_tool_wraps() -> None:
    """Wrap `BaseTool.run` / `arun` once per process (they do nothing outside durable graph runs)."""
    with _install_lock:  # a second thread must not take our wrap for the original and call itself
        _install_tool_wraps()


def _install_tool_wraps() -> None:
    if getattr(BaseTool.run, WRAPPED_MARKER, False):
        return
    for attribute, replacement in (("run", _run), ("arun", _arun)):
        _original[attribute] = getattr(BaseTool, attribute)
        setattr(replacement, WRAPPED_MARKER, True)
        replacement.__doc__ = _original[attribute].__doc__
        setattr(BaseTool, attribute, replacement)
