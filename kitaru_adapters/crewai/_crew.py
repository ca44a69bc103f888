"""`durable(crew)`, `durable(flow)` and the decorator for `@CrewBase` projects."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import weakref
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from datetime import timedelta
from typing import Any, TypeVar, cast, overload

from crewai import Crew
from crewai.core.providers.human_input import reset_provider, set_provider
from crewai.flow.flow import Flow
from crewai.llms.base_llm import BaseLLM
from crewai.utilities.llm_utils import create_llm

from kitaru_adapters.crewai import _seams as seams
from kitaru_adapters.crewai._llm import DurableLLM
from kitaru_adapters.crewai._requests import install_request_recording
from kitaru_adapters.crewai._steps import wrap_execute_method
from kitaru_adapters.crewai._tools import (
    DurableHumanInputProvider,
    DurableOptions,
    DurableTool,
    _task_labels,  # pyright: ignore[reportPrivateUsage]
    durable_tool,
)
from kitaru_core import Budget, RetryPolicy, current_execution
from kitaru_core.adapters import (
    ApprovalPolicy,
    DurableSubclasses,
    approval_timeout_s,
    budget_scope,
    durable_run,
    fingerprint,
    jsonable,
    model_retries,
    scope,
)
from kitaru_core.errors import AdapterError, ConfigurationError

T = TypeVar("T")

SCOPE_DIGEST_CHARACTERS = 12
LLM_SLOTS = ("manager_llm", "planning_llm", "chat_llm", "function_calling_llm")
_options: dict[int, DurableOptions] = {}
# Held while a durable class is made or `Crew.kickoff` is wrapped: two threads calling `durable()`
# at once never make two durable subclasses of one class nor wrap a method twice.
_subclasses = DurableSubclasses()
_install_lock = _subclasses.lock


def _remember(target: Any, options: DurableOptions) -> None:
    key = id(target)
    if key not in _options:
        weakref.finalize(target, _options.pop, key, None)
    _options[key] = options


def options_of(target: Any) -> DurableOptions | None:
    """The options `durable()` gave this crew or flow object, or `None` if it is not durable."""
    return _options.get(id(target))


def is_durable(target: Any) -> bool:
    """Whether `durable()` was applied to this crew or flow object."""
    return options_of(target) is not None


# -- LLM slots and tools -----------------------------------------------------------------------------


def _durable_llm(value: Any) -> Any:
    """An LLM slot's value made durable: a `BaseLLM` is wrapped, a model name resolved first."""
    if value is None or isinstance(value, DurableLLM):
        return value
    if isinstance(value, str):
        value = create_llm(value)
    if isinstance(value, BaseLLM):
        return DurableLLM(value)
    return value


def _set_field(model: Any, name: str, value: Any) -> None:
    """Set a pydantic field without validation or deprecation warnings (`function_calling_llm`)."""
    model.__dict__[name] = value


def _prepare_agent(agent: Any, options: DurableOptions, seen: set[int]) -> None:
    if agent is None or id(agent) in seen:
        return
    seen.add(id(agent))
    fields = vars(agent)
    llm = _durable_llm(fields.get("llm"))
    if llm is not fields.get("llm"):
        _set_field(agent, "llm", llm)
    calling_llm = fields.get("function_calling_llm")
    if calling_llm is not None:
        _set_field(agent, "function_calling_llm", _durable_llm(calling_llm))
    if fields.get("tools"):
        _set_field(agent, "tools", [durable_tool(tool, options) for tool in fields["tools"]])
    executor = fields.get("agent_executor")
    if executor is not None and isinstance(llm, DurableLLM):
        executor.llm = llm
        if calling_llm is not None:
            executor.function_calling_llm = agent.__dict__["function_calling_llm"]


def prepare_crew(crew: Crew, options: DurableOptions) -> Crew:
    """Wrap every LLM slot and tool of `crew` in place (idempotent); see `durable`."""
    seen: set[int] = set()
    for agent in crew.agents:
        _prepare_agent(agent, options, seen)
    _prepare_agent(crew.manager_agent, options, seen)
    for task in crew.tasks:
        _prepare_agent(task.agent, options, seen)
        if task.tools:
            _set_field(task, "tools", [durable_tool(tool, options) for tool in task.tools])
    fields = vars(crew)
    for slot in LLM_SLOTS:
        value = fields.get(slot)
        if value is not None:
            _set_field(crew, slot, _durable_llm(value))
    return crew


def task_labels(crew: Crew) -> dict[str, str]:
    """Stable labels of the crew's tasks by their (random) ids: the task's name, else `task-<n>`."""
    return {str(task.id): task.name or f"task-{index}" for index, task in enumerate(crew.tasks, start=1)}


def run_identity(crew: Crew, inputs: Any) -> dict[str, Any]:
    """What identifies a kickoff for resume: the kickoff inputs, the agents' roles and the tasks' names."""
    return {
        "inputs": jsonable(inputs),
        # The roles as written: CrewAI interpolates the inputs into `role` in place at kickoff.
        "agents": [
            getattr(agent, "_original_role", None) or getattr(agent, "role", None) for agent in crew.agents
        ],
        "tasks": [task.name for task in crew.tasks],
    }


def _kickoff_boundary(crew: Crew, options: DurableOptions, inputs: Any) -> Any:
    """The kickoff's scope (inside an execution) or its `durable_run` (`with`, or `async with` off the loop)."""
    prepare_crew(crew, options)
    name = f"crewai:{options.name or crew.name or 'crew'}"
    identity = run_identity(crew, inputs)
    if current_execution() is not None:
        # Inside an execution the kickoff is a scope keyed by its identity, not by the order in
        # which kickoffs arrive: crews kicked off in parallel (`kickoff_async` in a flow step) get
        # the same keys on every run, whichever thread enters first.
        digest = fingerprint(identity)
        return scope(name, digest[:SCOPE_DIGEST_CHARACTERS] if digest else None)
    return durable_run(name, inputs=identity)


@contextlib.contextmanager
def _crew_boundary(crew: Crew, options: DurableOptions, inputs: Any) -> Generator[None]:
    """Open (or join) the kickoff's execution with the crew prepared, task labels and human input set."""
    with _kickoff_boundary(crew, options, inputs), _inside_kickoff(crew, options):
        yield


@contextlib.asynccontextmanager
async def _acrew_boundary(crew: Crew, options: DurableOptions, inputs: Any) -> AsyncGenerator[None]:
    """`_crew_boundary` for `akickoff`: the execution's store I/O runs off the event loop."""
    boundary = _kickoff_boundary(crew, options, inputs)
    if hasattr(boundary, "__aenter__"):  # the kickoff's own execution (not a scope of an enclosing one)
        async with boundary:
            with _inside_kickoff(crew, options):
                yield
    else:
        with boundary, _inside_kickoff(crew, options):
            yield


@contextlib.contextmanager
def _inside_kickoff(crew: Crew, options: DurableOptions) -> Generator[None]:
    """Task labels, the human input provider and model retries for the kickoff's execution."""
    labels = _task_labels.get() or {}
    labels_token = _task_labels.set({**labels, **task_labels(crew)})
    provider_token = (
        set_provider(DurableHumanInputProvider(options.approval_timeout_s))
        if options.human_input
        else None
    )
    retries = contextlib.ExitStack()
    if options.model_retries is not None:
        retries.enter_context(model_retries(options.model_retries))
    retries.enter_context(budget_scope(options.budget))  # checked before each LLM call (the core)
    try:
        yield
    finally:
        retries.close()
        if provider_token is not None:
            reset_provider(provider_token)
        _task_labels.reset(labels_token)


def _make_durable_crew_class(base: type[Crew]) -> type[Crew]:
    """A subclass of a Crew class whose kickoffs are executions (methods only: no new fields)."""

    class DurableCrew(base):  # type: ignore[valid-type, misc]
        def kickoff(self, inputs: dict[str, Any] | None = None, *args: Any, **kwargs: Any) -> Any:
            options = options_of(self)
            if options is None or self.stream:  # streaming: CrewAI re-enters kickoff in a thread
                return super().kickoff(inputs, *args, **kwargs)
            with _crew_boundary(self, options, inputs):
                return super().kickoff(inputs, *args, **kwargs)

        async def akickoff(self, inputs: dict[str, Any] | None = None, *args: Any, **kwargs: Any) -> Any:
            options = options_of(self)
            if options is None or self.stream:
                return await super().akickoff(inputs, *args, **kwargs)
            async with _acrew_boundary(self, options, inputs):
                return await super().akickoff(inputs, *args, **kwargs)

        def _prepare_tools(self, agent: Any, task: Any, tools: list[Any]) -> list[Any]:
            # The tools a task really gets, with those CrewAI adds per task (delegation to coworkers,
            # MCP, platform and memory tools) made durable too.
            prepared = super()._prepare_tools(agent, task, tools)
            options = options_of(self)
            return [durable_tool(tool, options) for tool in prepared] if options is not None else prepared

        def copy(self) -> Any:
            copied = super().copy()
            options = options_of(self)
            return durable(copied, options=options) if options is not None else copied

    return DurableCrew


# -- flows ---------------------------------------------------------------------------------------------


# Options of the durable CrewAI Flow running in this context: crews kicked off in its steps are made
# durable with them, so one decorator on the Flow class covers the crews its steps build.
_flow_options: contextvars.ContextVar[DurableOptions | None] = contextvars.ContextVar(
    "kitaru_crewai_flow_options", default=None
)
_crew_hook: list[bool] = []


def _install_crew_hook() -> None:
    """Let `Crew.kickoff`/`akickoff` make a crew durable when it is kicked off inside a durable Flow.

    Installed once, the first time a Flow is made durable; outside a durable Flow (and for crews
    already made durable) the original methods run unchanged.
    """
    with _install_lock:
        _install_crew_hook_once()


def _install_crew_hook_once() -> None:
    if _crew_hook:
        return
    _crew_hook.append(True)
    original_kickoff = Crew.kickoff
    original_akickoff = Crew.akickoff

    @functools.wraps(original_kickoff)
    def kickoff(self: Crew, *args: Any, **kwargs: Any) -> Any:
        options = _flow_options.get()
        if options is not None and options_of(self) is None:
            return durable(self, options=options).kickoff(*args, **kwargs)
        return original_kickoff(self, *args, **kwargs)

    @functools.wraps(original_akickoff)
    async def akickoff(self: Crew, *args: Any, **kwargs: Any) -> Any:
        options = _flow_options.get()
        if options is not None and options_of(self) is None:
            return await durable(self, options=options).akickoff(*args, **kwargs)
        return await original_akickoff(self, *args, **kwargs)

    Crew.kickoff = kickoff  # type: ignore[method-assign]
    Crew.akickoff = akickoff  # type: ignore[method-assign]


def flow_identity(flow: Any, inputs: Any) -> dict[str, Any] | None:
    """What identifies a flow kickoff for the re-run rule: the flow class and the kickoff inputs.

    A persisted flow's `id` names its execution (see `persisted_flow_id`) and is left out. A
    restore by id alone (`kickoff(inputs={"id": flow_id})`, CrewAI's way to continue a flow)
    gives `None`: it continues the identity's latest turn, served when completed, resumed
    otherwise. A restore with other inputs is a new turn unless the latest turn had them too.
    """
    if isinstance(inputs, dict) and "id" in inputs and is_persisted(flow):
        others = {key: value for key, value in inputs.items() if key != "id"}  # pyright: ignore[reportUnknownVariableType]
        if not others:
            return None
        inputs = others
    return {"flow": type(flow).__qualname__, "inputs": jsonable(inputs)}


def is_persisted(flow: Any) -> bool:
    """Whether CrewAI persists the flow's state (`@persist` on the class or a method, or `persistence=`)."""
    if getattr(flow, "persistence", None) is not None:
        return True
    cls = type(flow)
    if hasattr(cls, "__flow_persistence_config__"):
        return True
    return any(hasattr(member, "__flow_persistence_config__") for member in vars(cls).values())


def persisted_flow_id(flow: Any, inputs: Any) -> str | None:
    """The persisted flow id of a kickoff: `inputs["id"]` (a restore), else the new state's id."""
    if not is_persisted(flow):
        return None
    if isinstance(inputs, dict) and inputs.get("id") is not None:  # pyright: ignore[reportUnknownMemberType]
        return str(inputs["id"])  # pyright: ignore[reportUnknownArgumentType]
    state = flow.state
    state_id = state.get("id") if isinstance(state, dict) else getattr(state, "id", None)  # pyright: ignore[reportUnknownMemberType]
    return str(state_id) if state_id is not None else None  # pyright: ignore[reportUnknownArgumentType]


def _always_run(flow: Any) -> frozenset[str] | None:
    """The steps that run every time, or `None` when no durable flow kickoff is running here."""
    del flow
    options = _flow_options.get()
    return options.always_run if options is not None else None


def _wrap_flow_kickoff(original: Callable[..., Any], fixed: DurableOptions | None) -> Callable[..., Any]:
    @functools.wraps(original)
    async def kickoff_async(
        self: Any, inputs: dict[str, Any] | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        options = fixed or options_of(self)
        if options is None:
            return await original(self, inputs, *args, **kwargs)
        name = f"crewai_flow:{options.name or type(self).__name__}"
        # A persisted flow's id (CrewAI's `@persist`) names its execution: restoring it with
        # `kickoff(inputs={"id": ...})` resumes (or serves) the execution of that id.
        flow_id = persisted_flow_id(self, inputs)
        execution_id = f"{name}:{flow_id}" if flow_id is not None else None
        async with durable_run(name, inputs=flow_identity(self, inputs), execution_id=execution_id):
            flow_token = _flow_options.set(options)
            provider_token = (
                set_provider(DurableHumanInputProvider(options.approval_timeout_s))
                if options.human_input
                else None
            )
            try:
                return await original(self, inputs, *args, **kwargs)
            finally:
                if provider_token is not None:
                    reset_provider(provider_token)
                _flow_options.reset(flow_token)

    kickoff_async.__kitaru_durable__ = True  # type: ignore[attr-defined]
    return kickoff_async


def _make_durable_flow_class(base: type[Any]) -> type[Any]:
    """A subclass of a Flow class whose kickoffs are executions and whose steps are recorded."""
    durable_class = type(base.__name__, (base,), {"__module__": base.__module__})
    durable_class.kickoff_async = _wrap_flow_kickoff(base.kickoff_async, None)
    durable_class._execute_method = wrap_execute_method(base._execute_method, _always_run)
    return durable_class


# -- CrewBase projects ---------------------------------------------------------------------------------


def _durable_crew_method(method: Any, options: DurableOptions) -> Any:
    """A `@crew` method whose crew comes back durable; keeps the method's markers (`is_crew`)."""

    @functools.wraps(method)
    def build(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = (
            method.__get__(self, type(self))
            if hasattr(method, "__get__")
            else functools.partial(method, self)
        )
        return durable(bound(*args, **kwargs), options=options)

    build.__kitaru_durable__ = True  # type: ignore[attr-defined]
    return build


def is_crew_method(member: Any) -> bool:
    """Whether a class attribute is a method decorated with CrewAI's `@crew`.

    `@crew` (crewai 1.15) returns a plain memoizing function; it is recognised by the setup wrapper
    of `crewai/project/annotations.py` in its `__wrapped__` chain, or by a `-> Crew` annotation.
    """
    if getattr(member, "is_crew", False):
        return True
    current = member
    for _ in range(10):
        code = getattr(current, "__code__", None)
        if (
            code is not None
            and code.co_qualname == "crew.<locals>.wrapper"
            and code.co_filename.replace("\\", "/").endswith("crewai/project/annotations.py")
        ):
            return True
        current = getattr(current, "__wrapped__", None)
        if current is None:
            break
    return callable(member) and getattr(member, "__annotations__", {}).get("return") in (Crew, "Crew")


def _durable_crewbase_class(cls: type[Any], options: DurableOptions) -> type[Any]:
    found = False
    for name, member in list(vars(cls).items()):
        if is_crew_method(member) and not getattr(member, "__kitaru_durable__", False):
            setattr(cls, name, _durable_crew_method(member, options))
            found = True
    if not found and not any(getattr(member, "__kitaru_durable__", False) for member in vars(cls).values()):
        raise AdapterError(
            f"durable() found no @crew method on {cls.__qualname__}: decorate a @CrewBase class, a Flow "
            "class, or the @crew method itself."
        )
    return cls


# -- the entry point -----------------------------------------------------------------------------------


def make_options(
    approve: Sequence[str] | Callable[[str, Any], bool] | None,
    approval_timeout: timedelta | float | None,
    human_input: bool,
    name: str | None,
    always_run: Sequence[str] = (),
    model_retries: RetryPolicy | None = None,
    budget: Budget | None = None,
) -> DurableOptions:
    """Build `DurableOptions` from `durable()`'s keyword arguments."""
    timeout_s = approval_timeout_s(approval_timeout)
    return DurableOptions(
        policy=ApprovalPolicy(approve),
        approval_timeout_s=timeout_s,
        human_input=human_input,
        name=name,
        always_run=frozenset(always_run),
        model_retries=model_retries,
        budget=Budget.checked(budget, "durable()"),
    )


@overload
def durable(
    target: T,
    /,
    *,
    approve: Sequence[str] | Callable[[str, Any], bool] | None = None,
    approval_timeout: timedelta | float | None = None,
    human_input: bool = True,
    name: str | None = None,
    always_run: Sequence[str] = (),
    model_retries: RetryPolicy | None = None,
    budget: Budget | None = None,
    options: DurableOptions | None = None,
) -> T: ...


@overload
def durable(
    target: None = None,
    /,
    *,
    approve: Sequence[str] | Callable[[str, Any], bool] | None = None,
    approval_timeout: timedelta | float | None = None,
    human_input: bool = True,
    name: str | None = None,
    always_run: Sequence[str] = (),
    model_retries: RetryPolicy | None = None,
    budget: Budget | None = None,
    options: DurableOptions | None = None,
) -> Callable[[T], T]: ...


def durable(
    target: Any = None,
    /,
    *,
    approve: Sequence[str] | Callable[[str, Any], bool] | None = None,
    approval_timeout: timedelta | float | None = None,
    human_input: bool = True,
    name: str | None = None,
    always_run: Sequence[str] = (),
    model_retries: RetryPolicy | None = None,
    budget: Budget | None = None,
    options: DurableOptions | None = None,
) -> Any:
    """Make a CrewAI crew, flow or `@CrewBase` project durable.

    `durable(crew)` changes the crew in place and returns it: every LLM slot (each agent's `llm`
    and `function_calling_llm`, the crew's `manager_llm`, `planning_llm` and `chat_llm`) is
    wrapped in a `DurableLLM`, whose `call`/`acall` are checkpoint calls keyed by a fingerprint
    of the request; every tool (agents' and tasks', and those CrewAI adds per task: delegation,
    MCP, platform and memory tools) is replaced by a `DurableTool`, whose runs are checkpoint calls keyed by task, tool name and canonical arguments, in native tool
    calling and in ReAct text mode alike. `kickoff`, `kickoff_async`, `akickoff` and
    `kickoff_for_each` then run durably: outside a `@flow` each kickoff is its own execution
    (re-running it with the same inputs after a crash resumes it, serving every completed LLM
    and tool call from the store); inside one it is part of that execution.

    Also accepted, for a generated project's one-line change: a `@CrewBase` class or its `@crew`
    method (the crew the method builds comes back durable), used as `@durable` or
    `@durable(approve=[...])`; and a `Flow` subclass or instance (each kickoff is an execution;
    every crew kicked off in its steps is made durable with the same options, as part of it, so a
    crash anywhere resumes without repeating completed LLM or tool calls; flow steps themselves
    run again).

    Approval: tools selected by `approve` wait for a decision (`{"approved": bool, "message":
    str | None}`, CLI: `kitaru-adapters executions answer`); the run stops `waiting` until it is
    answered; a denial gives the agent CrewAI's "Tool execution blocked" text. `Task(human_input=
    True)` asks through a durable wait `human_input:<task>` instead of reading stdin.

    Args:
        target: A `Crew`, a `Flow` subclass or instance, a `@CrewBase` class or a `@crew` method;
            `None` to get a decorator with these options.
        approve: Tool names that need approval, or `callable(tool_name, arguments) -> bool`.
        approval_timeout: How long approval and human-input waits poll the store before the
            execution suspends (`timedelta` or seconds). Default: suspend at once unless at a
            terminal.
        human_input: Ask `human_input=True` tasks through durable waits (default `True`).
        name: Name used in execution names (default: the crew's `name` or the flow's class name;
            keep it stable).
        always_run: Flow steps (method names) that run on every kickoff instead of being served
            from the store.
        model_retries: How a failed LLM call is retried inside its checkpoint call (rate limits
            honouring `Retry-After`, timeouts, connection and 5xx errors; never 401/403 or other
            4xx). Default: `kitaru_core.model_retries(...)` around the kickoff, else
            `ModelRetryPolicy()`. CrewAI's own rate-limit retry is turned off inside recorded calls.
        budget: Limits on what the execution's LLM calls may spend (`Budget(usd=5.0)`): when one
            is reached, the kickoff stops before the next LLM call at a durable wait named
            `budget`, answered `{"action": "raise", "usd": 8.0}` or `{"action": "stop", "reason":
            "..."}`. Default: the enclosing `@flow(budget=...)`'s, else none.
        options: Ready-made options (overrides the other keyword arguments).

    Returns:
        The same crew or flow object, the decorated class or method, or a decorator.

    Raises:
        AdapterError: `target` is none of the accepted kinds, or a class without a `@crew` method.
        ConfigurationError: `approve` is a string instead of a list, or `budget` is not a `Budget`.
    """
    if isinstance(always_run, str):
        raise ConfigurationError(
            f"durable(always_run=...) takes a list of flow step names, got the string {always_run!r}."
        )
    chosen = options or make_options(
        approve, approval_timeout, human_input, name, always_run, model_retries, budget
    )
    seams.check()
    install_request_recording()
    if target is None:
        return lambda decorated: durable(decorated, options=chosen)  # pyright: ignore[reportUnknownLambdaType]
    if isinstance(target, Crew):
        prepare_crew(target, chosen)
        _subclasses.make_durable(target, _make_durable_crew_class)
        _remember(target, chosen)
        return target
    if isinstance(target, Flow):
        _install_crew_hook()
        _subclasses.make_durable(target, _make_durable_flow_class)
        _remember(target, chosen)
        return target
    if isinstance(target, type):
        if issubclass(target, Flow):
            _install_crew_hook()
            if not getattr(target.kickoff_async, "__kitaru_durable__", False):
                target.kickoff_async = _wrap_flow_kickoff(target.kickoff_async, chosen)
            if not getattr(target._execute_method, "__kitaru_durable__", False):
                target._execute_method = wrap_execute_method(target._execute_method, _always_run)
            return cast(Any, target)
        return _durable_crewbase_class(target, chosen)
    if callable(target) and is_crew_method(target):
        return _durable_crew_method(target, chosen)
    raise AdapterError(
        f"durable() from kitaru_adapters.crewai takes a Crew, a Flow, a @CrewBase class or a @crew method, "
        f"got {type(target).__qualname__}."
    )


def _plain_llm(value: Any) -> Any:
    return value.wrapped if isinstance(value, DurableLLM) else value


def _plain_tools(tools: list[Any] | None) -> list[Any] | None:
    if not tools:
        return tools
    return [tool.wrapped if isinstance(tool, DurableTool) else tool for tool in tools]


def _plain_agent(agent: Any, seen: set[int]) -> None:
    if agent is None or id(agent) in seen:
        return
    seen.add(id(agent))
    fields = vars(agent)
    for slot in ("llm", "function_calling_llm"):
        if isinstance(fields.get(slot), DurableLLM):
            _set_field(agent, slot, _plain_llm(fields[slot]))
    if fields.get("tools"):
        _set_field(agent, "tools", _plain_tools(fields["tools"]))
    executor = fields.get("agent_executor")
    if executor is not None:
        for slot in ("llm", "function_calling_llm"):
            if isinstance(getattr(executor, slot, None), DurableLLM):
                setattr(executor, slot, _plain_llm(getattr(executor, slot)))


def undurable(target: T) -> T:
    """Return a crew or flow object made durable by `durable()` to its plain state, in place.

    For a crew: its class becomes its original class again, every LLM slot holds the LLM that
    its `DurableLLM` wrapped (a model name given as a string stays the LLM made from it) and every
    tool is the tool its `DurableTool` wrapped; for a flow: its class becomes its original class
    again. Later kickoffs record nothing and open no execution. The process-wide recording of
    `BaseLLM` requests stays installed: it records only inside an execution. Calls already recorded
    stay in the store; `durable(target)` again records again. An object that is not durable is
    returned unchanged.

    Args:
        target: A `Crew` or `Flow` object.

    Returns:
        The same object.

    Raises:
        AdapterError: `target` is not a `Crew` or `Flow` object (a decorated class or `@crew` method
            cannot be undone).
    """
    if not isinstance(target, Crew | Flow):
        raise AdapterError(
            f"undurable() from kitaru_adapters.crewai takes a Crew or Flow object, got "
            f"{type(target).__qualname__}; a class or @crew method decorated with durable stays durable."
        )
    with _install_lock:
        if isinstance(target, Crew):
            seen: set[int] = set()
            for agent in target.agents:
                _plain_agent(agent, seen)
            _plain_agent(target.manager_agent, seen)
            for task in target.tasks:
                _plain_agent(task.agent, seen)
                if task.tools:
                    _set_field(task, "tools", _plain_tools(task.tools))
            fields = vars(target)
            for slot in LLM_SLOTS:
                if isinstance(fields.get(slot), DurableLLM):
                    _set_field(target, slot, _plain_llm(fields[slot]))
        _subclasses.make_plain(target)
        _options.pop(id(target), None)
    return target
