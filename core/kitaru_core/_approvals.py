"""Tool-call approval as durable waits: the policy and the waits every adapter shares."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field

from kitaru_core._runtime import WaitSpec, wait_all
from kitaru_core.errors import ConfigurationError

ARGUMENT_PREVIEW_CHARACTERS = 300


class ApprovalDecision(BaseModel):
    """The answer to a tool-call approval wait.

    Answer it with `{"approved": true}` or `{"approved": false, "message": "why"}` (CLI:
    `--approve` / `--deny --message "why"`). A denial's message reaches the model as the
    framework's normal denied-tool result.
    """

    approved: bool = Field(description="Whether the tool call may run.")
    message: str | None = Field(
        default=None, description="Optional note; on denial it is shown to the model."
    )


ApprovalRule = Collection[str] | Callable[[str, Mapping[str, Any]], bool]
"""Which tool calls need approval: tool names, or `callable(tool_name, arguments) -> bool`."""


@dataclass(frozen=True)
class ApprovalPolicy:
    """Decides which tool calls wait for approval (`durable(..., approve=...)` in every adapter).

    Args:
        rule: Tool names, or `callable(tool_name, arguments) -> bool`. `None` gates nothing (the
            framework's own approval declarations still apply).
    """

    rule: ApprovalRule | None = None

    def __post_init__(self) -> None:
        if isinstance(self.rule, str):
            raise ConfigurationError(
                f"approve= takes a list of tool names or a callable, not the string {self.rule!r}: "
                f"write approve=[{self.rule!r}]."
            )

    def requires_approval(self, tool_name: str, arguments: Mapping[str, Any]) -> bool:
        """Whether a call of `tool_name` with `arguments` must be approved first."""
        if callable(self.rule):
            return bool(self.rule(tool_name, arguments))
        return self.names(tool_name)

    def names(self, tool_name: str) -> bool:
        """Whether the policy lists `tool_name` by name, so every call of it needs approval.

        Adapters can mark such tools before the model calls them, whatever the arguments.
        """
        return self.rule is not None and not callable(self.rule) and tool_name in self.rule


@dataclass(frozen=True)
class ApprovalRequest:
    """One tool call that needs a decision.

    Attributes:
        tool_name: The tool the model wants to call.
        arguments: Its arguments (JSON-able).
        call_id: The framework's stable id of this call (e.g. a model's `tool_call_id`).
    """

    tool_name: str
    arguments: Mapping[str, Any]
    call_id: str


def approval_wait_name(tool_name: str, call_id: str) -> str:
    """The wait name of an approval: `approve:{tool}:{call id}` (stable across runs)."""
    return f"approve:{tool_name}:{call_id}"


def _question(request: ApprovalRequest) -> str:
    try:
        arguments = json.dumps(dict(request.arguments), default=str, sort_keys=True)
    except (TypeError, ValueError):
        arguments = repr(request.arguments)
    if len(arguments) > ARGUMENT_PREVIEW_CHARACTERS:
        arguments = arguments[:ARGUMENT_PREVIEW_CHARACTERS] + "…"
    return f"Allow the tool call {request.tool_name}({arguments})?"


def request_approvals(
    requests: Sequence[ApprovalRequest], *, timeout: timedelta | float | None = None
) -> dict[str, ApprovalDecision]:
    """Ask for approval of several tool calls at once, each as a durable wait.

    Every request gets its own pending wait before anything blocks, so parallel tool calls can all
    be answered before resuming; with a timeout, the store is polled for all of them together.

    Args:
        requests: The tool calls to decide.
        timeout: How long each wait polls for an answer before the execution suspends (see `wait`).

    Returns:
        The decisions by `call_id`.

    Raises:
        ConfigurationError: Called outside an execution.
    """
    answers = wait_all(
        [
            WaitSpec(
                approval_wait_name(request.tool_name, request.call_id),
                _question(request),
                ApprovalDecision,
                {
                    "kind": "tool_approval",
                    "tool_name": request.tool_name,
                    "arguments": json.loads(json.dumps(dict(request.arguments), default=str)),
                    "call_id": request.call_id,
                },
            )
            for request in requests
        ],
        timeout=timeout,
    )
    return {request.call_id: answer for request, answer in zip(requests, answers, strict=True)}


def request_approval(
    tool_name: str, arguments: Mapping[str, Any], *, call_id: str, timeout: timedelta | float | None = None
) -> ApprovalDecision:
    """Ask for approval of one tool call as a durable wait; see `request_approvals`."""
    return request_approvals([ApprovalRequest(tool_name, arguments, call_id)], timeout=timeout)[call_id]
