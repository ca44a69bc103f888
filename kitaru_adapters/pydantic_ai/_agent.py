"""`durable(agent)`: attach the durable capability to an existing Agent object, in place."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

from pydantic_ai import Agent

from kitaru_adapters._subclasses import register_durable_subclass
from kitaru_adapters.pydantic_ai import _seams as seams
from kitaru_adapters.pydantic_ai._capability import DurableCapability, run_inputs
from kitaru_core import ApprovalPolicy, OnInterrupted, RetryPolicy, SideEffectPolicy, durable_run
from kitaru_core.errors import AdapterError

AgentT = TypeVar("AgentT", bound=Agent[Any, Any])

_CAPABILITY_ATTRIBUTE = "__kitaru_durable_capability__"
_durable_classes: dict[type[Any], type[Any]] = {}


def _durable_class(base: type[Any]) -> type[Any]:
    """A subclass of `base` whose public `iter` (behind run, run_sync, run_stream...) adds our capability."""
    cached = _durable_classes.get(base)
    if cached is not None:
        return cached

    class DurableAgent(base):  # type: ignore[valid-type, misc]
        @asynccontextmanager
        async def iter(
            self,
            user_prompt: Any = None,
            *,
            message_history: Any = None,
            capabilities: Sequence[Any] | None = None,
            **kwargs: Any,
        ) -> AsyncGenerator[Any]:
            capability: DurableCapability = getattr(self, _CAPABILITY_ATTRIBUTE)
            name = f"pydantic_ai:{capability.agent_name()}"
            async with (
                durable_run(name, inputs=run_inputs(user_prompt, message_history)),  # store I/O off the loop
                super().iter(
                    user_prompt,
                    message_history=message_history,
                    capabilities=[*(capabilities or ()), capability],
                    **kwargs,
                ) as run,
            ):
                yield run

    return register_durable_subclass(base, DurableAgent, _durable_classes)


def is_durable(agent: Agent[Any, Any]) -> bool:
    """Whether `durable()` was applied to this agent object."""
    return hasattr(agent, _CAPABILITY_ATTRIBUTE)


def durable(
    agent: AgentT,
    *,
    approve: Sequence[str] | Any = None,
    name: str | None = None,
    approval_timeout: timedelta | float | None = None,
    side_effects: Sequence[str] | Mapping[str, OnInterrupted] | None = None,
    on_interrupted: OnInterrupted | None = None,
    model_retries: RetryPolicy | None = None,
) -> AgentT:
    """Make a PydanticAI agent durable, in place, and return it.

    Every model request (`run`, `run_sync`, `run_stream`, `run_stream_events`, `iter`) and every
    tool call (function tools, MCP and other toolsets) of the agent's runs becomes a checkpoint
    call: model requests keyed by their order in the run and fingerprinted by messages, tools
    and settings (per-run timestamps and ids left out); tool calls keyed by `tool_call_id`.
    Outside a `@flow` each top-level run is its own execution; re-running it with the same
    prompt and history after a crash resumes it. Inside a flow the run is part of the flow's
    execution. The object itself is changed (its class becomes a subclass that adds the
    capability to every run), so references kept elsewhere (a dict, a closure, another agent's
    tool) are durable too.

    Approval: tools declared `requires_approval=True`, tools that raise `ApprovalRequired`, and
    tools selected by `approve` become durable waits answered with
    `{"approved": bool, "message": str | None}`; a denial reaches the model as PydanticAI's
    normal denied-tool result.

    Side effects: a tool call cut off inside its body (a crash or kill while it ran) runs again on
    resume by default. Tools named in `side_effects` commit a `started` record before their body,
    and an interrupted call stops the resumed run at a durable wait instead, answered with
    `{"action": "retry"}` (run it again) or `{"action": "result", "result": ...}` (what the tool
    returned; the model gets it and the tool does not run again). A mapping chooses the mode per
    tool: `{"refund": "fail"}` fails the run with `InterruptedCallError` until that wait is answered.

    Args:
        agent: The agent to make durable.
        approve: Tool names that need approval, or `callable(tool_name, arguments) -> bool`.
        name: Name used in execution names and keys; default: the agent's `name` (keep it stable).
        approval_timeout: How long an approval wait polls the store before the execution
            suspends (`timedelta` or seconds). Default: suspend at once unless at a terminal.
        side_effects: Tool names whose interrupted calls ask a person (`["refund"]`), or a mapping
            of tool name to `"retry"`, `"ask"` or `"fail"`.
        on_interrupted: The mode of tools `side_effects` does not name; default:
            `configure(on_interrupted=...)`, itself `"retry"`. Model requests are always sent again.
        model_retries: How a failed model request is retried inside its checkpoint call (rate
            limits honouring `Retry-After`, timeouts, connection and 5xx errors; never 401/403 or
            other 4xx). Default: `kitaru_core.model_retries(...)` around the run, else
            `ModelRetryPolicy()`; `ModelRetryPolicy(max_attempts=1)` turns retries off.

    Returns:
        The same agent object.

    Raises:
        AdapterError: `agent` is not a PydanticAI `Agent`.
        ConfigurationError: `approve` or `side_effects` is a string instead of a list of names, or
            a mode is not `"retry"`, `"ask"` or `"fail"`.
    """
    if not isinstance(agent, Agent):  # pyright: ignore[reportUnnecessaryIsInstance] - checked at run time
        raise AdapterError(
            f"durable() from kitaru_adapters.pydantic_ai takes a pydantic_ai.Agent, got {type(agent).__qualname__}."
        )
    seams.check()
    policy = ApprovalPolicy(approve)
    timeout_s = (
        approval_timeout.total_seconds() if isinstance(approval_timeout, timedelta) else approval_timeout
    )

    def agent_name() -> str:
        return name or agent.name or "agent"

    capability = DurableCapability(
        agent_name=agent_name,
        policy=policy,
        approval_timeout_s=timeout_s,
        side_effects=SideEffectPolicy(side_effects, on_interrupted),
        model_retries=model_retries,
    )
    object.__setattr__(agent, _CAPABILITY_ATTRIBUTE, capability)
    if not is_durable_class(type(agent)):
        agent.__class__ = _durable_class(type(agent))
    return agent


def is_durable_class(cls: type[Any]) -> bool:
    """Whether `cls` is one of the subclasses `durable()` creates."""
    return cls in _durable_classes.values()
