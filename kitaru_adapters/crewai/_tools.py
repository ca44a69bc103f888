"""Tool calls as checkpoint calls, approval gates as durable waits, `human_input` as a durable wait."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
from dataclasses import dataclass
from typing import Any

from crewai.context import get_current_task_id
from crewai.core.providers.human_input import SyncHumanInputProvider
from crewai.tools import BaseTool
from pydantic import ConfigDict, Field

from kitaru_core import Budget, RetryPolicy, current_execution, wait
from kitaru_core.adapters import (
    APPROVAL_BATCH_WINDOW_S,
    ApprovalPolicy,
    ApprovalRequest,
    fingerprint,
    request_approval_together,
    run_checkpoint,
    run_checkpoint_async,
)

ARGUMENTS_DIGEST_CHARACTERS = 12
BLOCKED_TEXT = "Tool execution blocked by hook. Tool: {tool}"
"""CrewAI's own text for a tool call a `before_tool_call` hook blocked (1.15); a denial returns it."""


@dataclass(frozen=True)
class DurableOptions:
    """How `durable()` treats a crew or flow.

    Attributes:
        policy: Which tool calls need approval.
        approval_timeout_s: Seconds an approval (or human-input) wait polls the store before the
            execution suspends; `None`: suspend at once unless at a terminal.
        human_input: Whether `Task(human_input=True)` asks through a durable wait (default) or
            CrewAI's own terminal prompt.
        name: Execution name override (default: the crew's `name`).
        always_run: Flow steps (method names) that run on every kickoff instead of being served.
        model_retries: How a failed LLM call is retried inside its checkpoint call; `None`:
            `kitaru_core.model_retries(...)` around the kickoff, else `ModelRetryPolicy()`.
        budget: Limits on what the execution's LLM calls may spend; `None`: the enclosing
            execution's (a `@flow(budget=...)`), else none.
    """

    policy: ApprovalPolicy = dataclasses.field(default_factory=ApprovalPolicy)
    approval_timeout_s: float | None = None
    human_input: bool = True
    name: str | None = None
    always_run: frozenset[str] = frozenset()
    model_retries: RetryPolicy | None = None
    budget: Budget | None = None


# -- which task a call belongs to ----------------------------------------------------------------------

# Task id (a random uuid per Task object) -> a stable label (`research_task`, `task-2`), set per kickoff.
_task_labels: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "kitaru_crewai_task_labels", default=None
)


def task_label() -> str:
    """A label of the task running now that is the same in every process: its name or its position."""
    labels = _task_labels.get() or {}
    task_id = get_current_task_id()
    if task_id is None:
        return "no-task"
    return labels.get(task_id, "task")


def tool_call_discriminator(tool_name: str, arguments: dict[str, Any]) -> str:
    """`<task label>:<digest of the canonical arguments>`: stable across runs and thread timing.

    ReAct mode has no tool-call ids, so a tool call is known by its task, tool and arguments;
    identical calls in one task get `#2`, `#3`... from the core in the order they arrive, which
    is harmless because they are interchangeable.
    """
    digest = fingerprint({"tool": tool_name, "arguments": arguments}) or "unhashable"
    return f"{task_label()}:{digest[:ARGUMENTS_DIGEST_CHARACTERS]}"


# -- the tool proxy ------------------------------------------------------------------------------------


class DurableTool(BaseTool):
    """A CrewAI tool whose runs are checkpoint calls; it delegates to the tool it wraps.

    It has the wrapped tool's name, description, argument schema and flags
    (`result_as_answer`, `max_usage_count`, `cache_function`), so the agent sees the same tool in
    native tool-calling and in ReAct mode. Inside an execution each run is a checkpoint call
    named `tool:<name>` keyed by the task, the tool and a digest of the canonical arguments (see
    `tool_call_discriminator`); its output is committed before the agent sees it. When the
    approval policy selects the call, a durable wait decides first; a denial gives the agent
    CrewAI's own "Tool execution blocked" text (with the answer's message).

    Args:
        wrapped: The tool that does the work.
        options: The `durable()` options (approval policy and timeout).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    wrapped: BaseTool = Field(exclude=True, description="The tool that does the work.")
    options: DurableOptions = Field(default_factory=DurableOptions, exclude=True)

    def __init__(
        self, wrapped: BaseTool | None = None, /, *, options: DurableOptions | None = None, **data: Any
    ) -> None:
        if options is not None:
            data["options"] = options
        if wrapped is not None:
            if isinstance(wrapped, DurableTool):
                wrapped = wrapped.wrapped
            data = {
                "name": wrapped.name,
                "description": wrapped.description,
                "args_schema": wrapped.args_schema,
                "result_schema": wrapped.result_schema,
                "env_vars": wrapped.env_vars,
                "cache_function": wrapped.cache_function,
                "result_as_answer": wrapped.result_as_answer,
                "max_usage_count": wrapped.max_usage_count,
                "tool_failure_policy": wrapped.tool_failure_policy,
                **data,
                "wrapped": wrapped,
            }
        super().__init__(**data)

    def _arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**{f"_{index}": value for index, value in enumerate(args)}, **kwargs}

    def _gate(self, arguments: dict[str, Any], discriminator: str) -> str | None:
        """Ask for approval when the policy says so; the agent's text on denial, else `None`."""
        if not self.options.policy.requires_approval(self.name, arguments):
            return None
        # CrewAI runs a turn's native tool calls on a thread pool: parallel gated calls ask together.
        decision = request_approval_together(
            ApprovalRequest(self.name, arguments, discriminator),
            window_s=APPROVAL_BATCH_WINDOW_S,
            timeout=self.options.approval_timeout_s,
        )
        if decision.approved:
            return None
        text = BLOCKED_TEXT.format(tool=self.name)
        return f"{text}. {decision.message}" if decision.message else text

    def _checkpoint_options(self, arguments: dict[str, Any], discriminator: str) -> dict[str, Any]:
        return {
            "discriminator": discriminator,
            "kind": "tool",
            "inputs": {"tool": self.name, "arguments": arguments},
            "details": {"tool_name": self.name, "task": task_label()},
        }

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        """Run the wrapped tool as a checkpoint call (served from the store when it completed)."""
        if current_execution() is None:
            return self._call_wrapped(*args, **kwargs)
        arguments = self._arguments(args, kwargs)
        discriminator = tool_call_discriminator(self.name, arguments)
        blocked = self._gate(arguments, discriminator)
        if blocked is not None:
            return blocked
        return run_checkpoint(
            f"tool:{self.name}",
            self._call_wrapped,
            *args,
            **self._checkpoint_options(arguments, discriminator),
            **kwargs,
        )

    def _call_wrapped(self, *args: Any, **kwargs: Any) -> Any:
        result = self.wrapped._run(*args, **kwargs)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return result

    async def _arun(self, *args: Any, **kwargs: Any) -> Any:
        """Like `_run`, awaiting the wrapped tool's `_arun` (or running its `_run` in a thread)."""

        async def call_wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                return await self.wrapped._arun(*args, **kwargs)
            except NotImplementedError:
                return await asyncio.to_thread(
                    contextvars.copy_context().run, self._call_wrapped, *args, **kwargs
                )

        if current_execution() is None:
            return await call_wrapped(*args, **kwargs)
        arguments = self._arguments(args, kwargs)
        discriminator = tool_call_discriminator(self.name, arguments)
        blocked = await asyncio.to_thread(
            contextvars.copy_context().run, self._gate, arguments, discriminator
        )
        if blocked is not None:
            return blocked
        return await run_checkpoint_async(
            f"tool:{self.name}",
            call_wrapped,
            *args,
            **self._checkpoint_options(arguments, discriminator),
            **kwargs,
        )


def durable_tool(tool: Any, options: DurableOptions) -> Any:
    """`tool` wrapped in a `DurableTool` (a `BaseTool`); other objects and proxies pass unchanged."""
    if isinstance(tool, DurableTool):
        return tool if tool.options is options else DurableTool(tool.wrapped, options=options)
    if isinstance(tool, BaseTool):
        return DurableTool(tool, options=options)
    return tool


# -- human input -----------------------------------------------------------------------------------


class DurableHumanInputProvider(SyncHumanInputProvider):
    """CrewAI's human-input provider, asking through a durable wait instead of reading stdin.

    A task with `human_input=True` asks, after the agent's final answer, for feedback: the wait
    `human_input:<task label>` (`-2`, `-3`... for later rounds) takes a string. An empty string
    accepts the answer; any other text is feedback the agent works on, as in CrewAI. Without an
    answer the execution stops `waiting`; answer it (CLI: `kitaru-adapters executions answer ID
    human_input:<task> --value '""'`) and run again: the completed LLM calls are served.

    Args:
        timeout_s: Seconds to poll the store for an answer before suspending.
    """

    def __init__(self, timeout_s: float | None = None) -> None:
        self.timeout_s = timeout_s

    def _prompt_input(self, crew: Any) -> str:  # type: ignore[override]  # pyright: ignore[reportIncompatibleMethodOverride]
        """The answer of the task's feedback wait (a durable wait; suspends when unanswered)."""
        if current_execution() is None:
            return SyncHumanInputProvider._prompt_input(crew)
        label = task_label()
        return wait(
            f"human_input:{label}",
            question=(
                f"Feedback on the final answer of task {label!r}: an empty answer accepts it, "
                "any text is sent to the agent to improve it."
            ),
            schema=str,
            timeout=self.timeout_s,
            metadata={"kind": "human_input", "task": label},
        )

    async def _prompt_input_async(self, crew: Any) -> str:  # type: ignore[override]  # pyright: ignore[reportIncompatibleMethodOverride]
        """Like `_prompt_input`, polling in a worker thread."""
        if current_execution() is None:
            return await SyncHumanInputProvider._prompt_input_async(crew)
        return await asyncio.to_thread(contextvars.copy_context().run, self._prompt_input, crew)
