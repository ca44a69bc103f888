"""`durable(agent)`: attach the durable capability to an existing Agent object, in place."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

from pydantic_ai import Agent

from kitaru_adapters.pydantic_ai import _seams as seams
from kitaru_adapters.pydantic_ai._capability import DurableCapability, run_inputs
from kitaru_core import Budget, OnInterrupted, RetryPolicy, current_execution
from kitaru_core.adapters import (
    ApprovalPolicy,
    DurableSubclasses,
    SideEffectPolicy,
    approval_timeout_s,
    budget_scope,
    durable_run,
)
from kitaru_core.errors import AdapterError, ConfigurationError

AgentT = TypeVar("AgentT", bound=Agent[Any, Any])

_CAPABILITY_ATTRIBUTE = "__kitaru_durable_capability__"
_NAMED_ATTRIBUTE = "__kitaru_durable_named__"
# Two threads calling `durable()` at once never build two durable subclasses of one class nor swap an
# agent's class twice: the subclasses are made and swapped in under their lock.
_subclasses = DurableSubclasses()


def _make_durable_class(base: type[Any]) -> type[Any]:
    """A subclass of `base` whose public `iter` (behind run, run_sync, run_stream...) adds our capability."""

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
            if not getattr(self, _NAMED_ATTRIBUTE, True) and current_execution() is None:
                raise unnamed_agent_error()
            name = f"pydantic_ai:{capability.agent_name()}"
            with budget_scope(capability.budget):
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

    return DurableAgent


def unnamed_agent_error() -> ConfigurationError:
    """The error for a top-level run of an agent made durable without a name."""
    return ConfigurationError(
        "This durable PydanticAI agent has no name, and a run outside a @flow or execution(...) is an "
        "execution found again by the agent's name and prompt after a crash: two unnamed agents given "
        "the same prompt would share one execution and serve each other's recorded calls. "
        'Name it: Agent(..., name="support") or durable(agent, name="support") (keep the name stable), '
        "or run it inside a @flow or `with execution(...)`."
    )


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
    budget: Budget | None = None,
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
            Required (here or on the agent) for runs outside a `@flow` or `execution(...)`: they
            would otherwise share one execution identity with every other unnamed agent.
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
        budget: Limits on what the execution's model requests may spend (`Budget(usd=5.0)`): when
            one is reached, the run stops before the next model request at a durable wait named
            `budget`, answered `{"action": "raise", "usd": 8.0}` or `{"action": "stop", "reason":
            "..."}`. Default: the enclosing `@flow(budget=...)`'s, else none.

    Returns:
        The same agent object.

    Raises:
        AdapterError: `agent` is not a PydanticAI `Agent`.
        ConfigurationError: `approve` or `side_effects` is a string instead of a list of names, a
            mode is not `"retry"`, `"ask"` or `"fail"`, or `budget` is not a `Budget`. A run of an
            agent given no name raises it outside a `@flow` or `execution(...)`.
    """
    if not isinstance(agent, Agent):  # pyright: ignore[reportUnnecessaryIsInstance] - checked at run time
        raise AdapterError(
            f"durable() from kitaru_adapters.pydantic_ai takes a pydantic_ai.Agent, got {type(agent).__qualname__}."
        )
    seams.check()
    policy = ApprovalPolicy(approve)
    timeout_s = approval_timeout_s(approval_timeout)

    def agent_name() -> str:
        return name or agent.name or "agent"

    capability = DurableCapability(
        agent_name=agent_name,
        policy=policy,
        approval_timeout_s=timeout_s,
        side_effects=SideEffectPolicy(side_effects, on_interrupted),
        model_retries=model_retries,
        budget=Budget.checked(budget, "durable()"),
    )
    with _subclasses.lock:
        object.__setattr__(agent, _CAPABILITY_ATTRIBUTE, capability)
        object.__setattr__(agent, _NAMED_ATTRIBUTE, bool(name or agent.name))
        return _subclasses.make_durable(agent, _make_durable_class)


def undurable(agent: AgentT) -> AgentT:
    """Return an agent made durable by `durable()` to its plain state, in place, and return it.

    The agent's class becomes its original class again and the durable capability is removed:
    later runs record nothing and open no execution. Calls already recorded stay in the store;
    `durable(agent)` again records again. An agent that is not durable is returned unchanged.

    Args:
        agent: The agent.

    Returns:
        The same agent object.
    """
    with _subclasses.lock:
        _subclasses.make_plain(agent)
        for attribute in (_CAPABILITY_ATTRIBUTE, _NAMED_ATTRIBUTE):
            if hasattr(agent, attribute):
                object.__delattr__(agent, attribute)
    return agent


def is_durable_class(cls: type[Any]) -> bool:
    """Whether `cls` is one of the subclasses `durable()` creates."""
    return _subclasses.is_durable(cls)
