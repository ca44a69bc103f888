"""Tool-call approval as durable waits: the policy and the waits every adapter shares."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field

from kitaru_core._context import current_execution
from kitaru_core._ids import fit_name
from kitaru_core._waits import WaitSpec, wait_all
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
    """The wait name of an approval: `approve:{tool}:{call id}` (stable across runs).

    The call id usually comes from a model (`tool_call_id`) and is untrusted: a name that would
    break the id grammar (over 200 characters, control characters) is cleaned, cut and given a
    digest of the original (`kitaru_core._ids.fit_name`), so it is always a valid wait name and
    two different calls never share one.
    """
    return fit_name(f"approve:{tool_name}:{call_id}")


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


@dataclass
class _ApprovalBatch:
    """The approvals asked for by the tool calls of one execution that arrived together."""

    requests: list[ApprovalRequest]
    done: threading.Event = field(default_factory=threading.Event)
    decisions: dict[str, ApprovalDecision] | None = None
    error: BaseException | None = None
    open: bool = True


_open_batches: dict[str, _ApprovalBatch] = {}
_batches_lock = threading.Lock()


def request_approval_together(
    request: ApprovalRequest, *, window_s: float, timeout: timedelta | float | None = None
) -> ApprovalDecision:
    """Ask for one tool call's approval together with the calls of its execution that ask meanwhile.

    Frameworks run the tool calls of one model turn in parallel (a thread pool, or asyncio tasks
    that call this through `asyncio.to_thread`). The first gated call opens a batch and waits
    `window_s` seconds for its siblings; then one `request_approvals` gives every call of the batch
    its pending wait before anything blocks, so all of them can be answered before the execution
    is resumed. It blocks the calling thread.

    Args:
        request: The tool call to decide.
        window_s: Seconds the first call of a batch waits for the others to join.
        timeout: How long the waits poll for answers before the execution suspends (see `wait`).

    Returns:
        This call's decision.

    Raises:
        ConfigurationError: Called outside an execution.
        BaseException: What `request_approvals` raised (the suspension, when answers are missing),
            raised in every call of the batch.
    """
    execution = current_execution()
    if execution is None:
        raise ConfigurationError("request_approval_together() works only inside an execution.")
    key = execution.execution_id
    with _batches_lock:
        batch = _open_batches.get(key)
        joined = batch is not None and batch.open
        if batch is not None and joined:
            batch.requests.append(request)
        else:
            batch = _ApprovalBatch([request])
            _open_batches[key] = batch
    if joined:
        batch.done.wait()
        if batch.error is not None:
            raise batch.error
        assert batch.decisions is not None
        return batch.decisions[request.call_id]
    try:
        batch.done.wait(window_s)
        with _batches_lock:
            batch.open = False
            if _open_batches.get(key) is batch:
                del _open_batches[key]
        batch.decisions = request_approvals(batch.requests, timeout=timeout)
    except BaseException as error:  # a suspension (or a failure) stops every call of the batch
        batch.error = error
        raise
    finally:
        batch.done.set()
    return batch.decisions[request.call_id]
