"""`durable(agent)`, `DurableRunner`, and the agent runner that gives every durable run its execution."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Generator, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar, cast

import wrapt
from agents import Agent, RunConfig, RunResult, RunResultStreaming, RunState
from agents.exceptions import AgentsException
from agents.handoffs import Handoff, handoff
from agents.memory.session import Session
from agents.models.interface import Model
from agents.run import AgentRunner, get_default_agent_runner, set_default_agent_runner
from agents.tool import (
    ApplyPatchTool,
    ComputerTool,
    CustomTool,
    FunctionTool,
    LocalShellTool,
    ShellTool,
    Tool,
)
from pydantic import BaseModel

from kitaru_adapters.openai_agents import _seams as seams
from kitaru_adapters.openai_agents._model import DurableModel, DurableModelProvider, jsonable
from kitaru_adapters.openai_agents._tools import (
    ApprovalMode,
    DurableOptions,
    durable_handoff,
    durable_tool,
)
from kitaru_core import Budget, OnInterrupted, RetryPolicy, current_execution
from kitaru_core.adapters import (
    ApprovalPolicy,
    DurableSubclasses,
    SideEffectPolicy,
    approval_timeout_s,
    budget_scope,
    durable_run,
    fingerprint,
    model_retries,
    run_checkpoint_async,
)
from kitaru_core.errors import AdapterError, ConfigurationError, InterruptedCallError

AgentT = TypeVar("AgentT", bound=Agent[Any])

OPTIONS_ATTRIBUTE = "__kitaru_durable_options__"
CLONE_ATTRIBUTE = "__kitaru_durable_clone__"
GRAPH_ATTRIBUTE = "__kitaru_durable_graph__"
PLAIN_ATTRIBUTE = "__kitaru_plain_state__"
# Its lock is held while a durable class is made, an agent graph is changed in place or the default
# runner is installed: two threads calling `durable()` at once never wrap anything twice.
_subclasses = DurableSubclasses()
_install_lock = _subclasses.lock
# Options of the durable run this task is in: agents reached from it (agents used as tools) run
# durably too, inside the same execution.
_active_options: contextvars.ContextVar[DurableOptions | None] = contextvars.ContextVar(
    "kitaru_openai_agents_options", default=None
)
LOCAL_TOOL_TYPES = (ComputerTool, LocalShellTool, ApplyPatchTool, CustomTool)


def _refuse_local_tool(tool: Tool) -> None:
    if isinstance(tool, LOCAL_TOOL_TYPES) or (isinstance(tool, ShellTool) and tool.executor is not None):
        raise AdapterError(
            f"The tool {getattr(tool, 'name', type(tool).__name__)!r} ({type(tool).__name__}) runs on this "
            "machine through its own executor, which kitaru_adapters.openai_agents cannot record yet, "
            "so a resumed run would run it again. Wrap the action in a function tool (@function_tool), "
            "whose calls are recorded, or run this agent without durable()."
        )


def _make_durable_class(base: type[Any]) -> type[Any]:
    """A subclass of an Agent class whose tool lists come back with every function tool made durable."""

    class DurableAgent(base):  # type: ignore[valid-type, misc]
        async def get_mcp_tools(self, run_context: Any) -> list[Tool]:
            options: DurableOptions = getattr(self, OPTIONS_ATTRIBUTE)
            tools = await super().get_mcp_tools(run_context)
            return [
                durable_tool(tool, options, kind="mcp") if isinstance(tool, FunctionTool) else tool
                for tool in tools
            ]

        async def get_all_tools(self, run_context: Any) -> list[Tool]:
            options: DurableOptions = getattr(self, OPTIONS_ATTRIBUTE)
            tools = await super().get_all_tools(run_context)
            for tool in tools:
                _refuse_local_tool(tool)
            return [durable_tool(tool, options) if isinstance(tool, FunctionTool) else tool for tool in tools]

    return DurableAgent


class _Graph:
    """Makes every agent reachable from a starting agent durable: in place, or on clones."""

    def __init__(self, options: DurableOptions, *, in_place: bool) -> None:
        self.options = options
        self.in_place = in_place
        self.by_name: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

    def prepare(self, agent: Any, memo: dict[int, Any] | None = None) -> Any:
        """The durable form of `agent` and of every agent its handoffs reach."""
        memo = {} if memo is None else memo
        if id(agent) in memo:
            return memo[id(agent)]
        if self.in_place or getattr(agent, CLONE_ATTRIBUTE, False):
            target = agent  # in place, or already a durable clone (e.g. a previous run's `last_agent`)
        else:
            target = agent.clone()
            object.__setattr__(target, CLONE_ATTRIBUTE, True)
        memo[id(agent)] = memo[id(target)] = target
        if self.in_place and PLAIN_ATTRIBUTE not in vars(target):  # what `undurable` puts back
            object.__setattr__(target, PLAIN_ATTRIBUTE, (target.model, list(target.handoffs)))
        if getattr(target, OPTIONS_ATTRIBUTE, None) is None or not self.in_place:
            object.__setattr__(target, OPTIONS_ATTRIBUTE, self.options)
        _subclasses.make_durable(target, _make_durable_class)
        if isinstance(target.model, Model) and not isinstance(target.model, DurableModel):
            target.model = DurableModel(target.model)
        self.by_name[target.name] = target

        def prepare_reached(reached: Any) -> Any:
            return self.prepare(reached, memo)

        handoffs: list[Any] = []
        for item in target.handoffs:
            if isinstance(item, Agent):
                item = handoff(cast(Agent[Any], item))
            if isinstance(item, Handoff):
                # `handoff(agent)` keeps its target in a weak reference (agents SDK 0.24); walking it
                # lets a served handoff find its agent without calling the handoff's callback again.
                reference = getattr(item, "_agent_ref", None)
                reached = reference() if callable(reference) else None
                if reached is not None:
                    prepare_reached(reached)
                item = durable_handoff(item, prepare_reached, self.by_name.get)
            handoffs.append(item)
        target.handoffs = handoffs
        return target


def _options_of(agent: Any) -> DurableOptions | None:
    return getattr(agent, OPTIONS_ATTRIBUTE, None)


def _run_config(run_config: RunConfig | dict[str, Any] | None) -> RunConfig:
    """The user's run config with its model provider (and model instance) made durable, not replaced."""
    if run_config is None:
        config = RunConfig()
    elif isinstance(run_config, dict):
        config = RunConfig(**run_config)
    else:
        config = run_config
    changes: dict[str, Any] = {}
    if not isinstance(config.model_provider, DurableModelProvider):
        changes["model_provider"] = DurableModelProvider(config.model_provider)
    if isinstance(config.model, Model) and not isinstance(config.model, DurableModel):
        changes["model"] = DurableModel(config.model)
    return dataclasses.replace(config, **changes) if changes else config


class _DurableSession(wrapt.ObjectProxy):  # pyright: ignore[reportMissingTypeArgument]
    """A session that, before its first use in a resumed run, drops the items a crashed try added.

    The session's length when the run first used it is a checkpoint call; on resume it is served,
    and items beyond it (written by the interrupted try) are popped, so history is not duplicated.
    In a served re-run of a completed run (`served=True`) the session is read as it was when the
    run first used it and is never written: the run's items are in it already.
    """

    def __init__(self, wrapped: Session, *, served: bool = False) -> None:
        super().__init__(wrapped)
        self._self_checked = False
        self._self_served = served
        self._self_start = 0

    def _self_enter_run(self) -> None:
        """Read, once the run's execution is open, whether it is a served re-run of a completed run."""
        context = current_execution()
        self._self_served = context is not None and context.served_completed

    async def _self_truncate(self) -> None:
        if self._self_checked:
            return
        self._self_checked = True
        session: Session = self.__wrapped__

        async def length() -> int:
            return len(await session.get_items())

        start: int = await run_checkpoint_async(
            "session",
            length,
            kind="user",
            inputs={"session_id": getattr(session, "session_id", None)},
            on_interrupted="retry",  # reads the session's length: safe to run again
        )
        self._self_start = start
        if self._self_served:
            return
        extra = len(await session.get_items()) - start
        for _ in range(max(0, extra)):
            await session.pop_item()

    async def get_items(self, limit: int | None = None) -> Any:
        await self._self_truncate()
        if self._self_served:
            items = list(await self.__wrapped__.get_items())[: self._self_start]
            return items if limit is None else items[max(0, len(items) - limit) :]
        return await self.__wrapped__.get_items(limit)

    async def add_items(self, items: Any) -> None:
        await self._self_truncate()
        if not self._self_served:
            await self.__wrapped__.add_items(items)

    async def pop_item(self) -> Any:
        await self._self_truncate()
        if self._self_served:
            return None
        return await self.__wrapped__.pop_item()

    async def clear_session(self) -> None:
        self._self_checked = True
        if not self._self_served:
            await self.__wrapped__.clear_session()


def _context_for_fingerprint(context: Any) -> dict[str, Any]:
    """A JSON form of a run context for a `RunState` fingerprint (its type only when it has none)."""
    if context is None:
        return {}
    if isinstance(context, BaseModel | dict) or (
        dataclasses.is_dataclass(context) and not isinstance(context, type)
    ):
        form = jsonable(context)
        return form if isinstance(form, dict) else {"context": form}  # pyright: ignore[reportUnknownVariableType]
    return {"context_type": f"{type(context).__module__}.{type(context).__qualname__}"}


def run_inputs(input: Any, session: Session | None) -> dict[str, Any]:
    """What identifies a top-level run for resume: its input (or RunState) and its session."""
    if isinstance(input, RunState):
        # Our own serializer for the context: the SDK's default logs a warning for pydantic
        # contexts that a plain run of the program never prints.
        state = input.to_json(context_serializer=_context_for_fingerprint)
        identity: Any = {"state": fingerprint(jsonable(state))}
    else:
        identity = jsonable(input)
    return {"input": identity, "session": getattr(session, "session_id", None) if session else None}


def _boundary_run(
    options: DurableOptions, agent: Any, input: Any, kwargs: dict[str, Any], *, in_place: bool
) -> tuple[Any, Any]:
    """The prepared agent and the run's `durable_run` (use it with `with`, or `async with` off the loop)."""
    graph = getattr(agent, GRAPH_ATTRIBUTE, None) if in_place else None
    if not isinstance(graph, _Graph) or graph.options is not options:
        graph = _Graph(options, in_place=in_place)
    prepared = graph.prepare(agent)
    session: Session | None = kwargs.get("session")
    execution_id: str | None = kwargs.get("execution_id")
    session_id = getattr(session, "session_id", None) if session is not None else None
    name = f"openai_agents:{options.name or agent.name}"
    run = durable_run(
        name,
        inputs=run_inputs(input, session) if current_execution() is None else None,
        execution_id=execution_id,
        identity=None if session_id is None else f"session:{session_id}",
    )
    return prepared, run


@contextlib.contextmanager
def _durable_boundary(
    options: DurableOptions, agent: Any, input: Any, kwargs: dict[str, Any], *, in_place: bool
) -> Generator[tuple[Any, dict[str, Any]]]:
    """Open (or join) the execution, and give the prepared agent and the run's keyword arguments."""
    prepared, run = _boundary_run(options, agent, input, kwargs, in_place=in_place)
    changed = _run_kwargs(kwargs)
    with run, _inside_boundary(options, changed):
        yield prepared, changed


@contextlib.asynccontextmanager
async def _durable_boundary_async(
    options: DurableOptions, agent: Any, input: Any, kwargs: dict[str, Any], *, in_place: bool
) -> AsyncGenerator[tuple[Any, dict[str, Any]]]:
    """`_durable_boundary` for `Runner.run`: the execution's store I/O runs off the event loop."""
    prepared, run = _boundary_run(options, agent, input, kwargs, in_place=in_place)
    changed = _run_kwargs(kwargs)
    async with run:
        with _inside_boundary(options, changed):
            yield prepared, changed


def _run_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The SDK runner's keyword arguments for a durable run: its run config and session made durable."""
    session: Session | None = kwargs.get("session")
    changed = {key: value for key, value in kwargs.items() if key != "execution_id"}
    changed["run_config"] = _run_config(kwargs.get("run_config"))
    if session is not None:
        changed["session"] = _DurableSession(session)
    return changed


@contextlib.contextmanager
def _inside_boundary(options: DurableOptions, changed: dict[str, Any]) -> Generator[None]:
    """Inside the run's execution: the options, model retries and session (`_run_kwargs`) for the run."""
    session = changed.get("session")
    token = _active_options.set(options)
    retries = contextlib.ExitStack()
    if options.model_retries is not None:  # for the model calls of this run (see DurableModel)
        retries.enter_context(model_retries(options.model_retries))
    retries.enter_context(budget_scope(options.budget))  # checked before each model call (the core)
    try:
        if isinstance(session, _DurableSession):
            session._self_enter_run()
        yield
    except AgentsException as error:
        # The SDK wraps a tool's error in `UserError`; an interrupted call must reach the caller as itself.
        interrupted = _interrupted_cause(error)
        if interrupted is None:
            raise
        raise interrupted from None
    finally:
        retries.close()
        _active_options.reset(token)


def _interrupted_cause(error: BaseException) -> InterruptedCallError | None:
    """The `InterruptedCallError` behind an SDK error, if a tool call with `on_interrupted="fail"` raised it."""
    current: BaseException | None = error
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        if isinstance(current, InterruptedCallError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class _StreamBoundary:
    """A streamed run's execution, opened and closed inside the run's own task, off the event loop.

    `Runner.run_streamed` is synchronous: it starts the run in a background task and returns at
    once. The execution is not opened there (its store I/O would block the event loop) but at the
    start of that task (`around`), through `durable_run`'s `async with` (store I/O on the
    execution's I/O lane); it is closed when the task's run ends, and how it ended (waiting,
    cancelled, failed) is the task's outcome and `error`.
    """

    def __init__(self, run: Any, options: DurableOptions, changed: dict[str, Any]) -> None:
        self.run = run
        self.options = options
        self.changed = changed
        self.task: asyncio.Task[Any] | None = None
        self.error: BaseException | None = None

    async def around(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run the SDK's run loop `coroutine` inside the execution (the body of the run's task)."""
        try:
            async with self.run:
                with _inside_boundary(self.options, self.changed):
                    return await coroutine
        except BaseException as error:  # the execution's verdict: waiting, cancelled, failed...
            self.error = error
            raise

    @contextlib.contextmanager
    def opening_in_run_task(self) -> Generator[None]:
        """While the SDK starts a streamed run: the first task it creates (the run loop) runs in `around`.

        A task factory of the running loop, set for the synchronous call only (`check_started` then
        makes sure the task was the run's).
        """
        loop = asyncio.get_running_loop()
        previous = loop.get_task_factory()
        created: list[asyncio.Task[Any]] = []

        def factory(loop: asyncio.AbstractEventLoop, coroutine: Any, **options: Any) -> asyncio.Task[Any]:
            if not created:
                coroutine = self.around(coroutine)
            task = (
                previous(loop, coroutine, **options)
                if previous is not None
                else asyncio.Task(coroutine, loop=loop, **options)
            )
            created.append(cast("asyncio.Task[Any]", task))
            return cast("asyncio.Task[Any]", task)

        loop.set_task_factory(factory)
        try:
            yield
        finally:
            loop.set_task_factory(previous)
        self.task = created[0] if created else None

    def check_started(self, result: RunResultStreaming) -> None:
        """Make sure the task that opens the execution is the run's own (see `opening_in_run_task`).

        Raises:
            AdapterError: It is not: the SDK starts streamed runs otherwise than this adapter knows.
        """
        task = self.task
        if task is not None and task in (
            result.run_loop_task,
            getattr(result, "_sandbox_wrapped_run_loop_task", None),
        ):
            task.add_done_callback(_retrieve_outcome)
            return
        if task is not None:
            task.cancel()
        raise AdapterError(
            "Runner.run_streamed no longer starts its run as the first task it creates (its "
            "run_loop_task), so kitaru_adapters.openai_agents cannot open the streamed run's execution "
            "in it. Use Runner.run for this agent, or an openai-agents release in the supported range."
        )

    async def ended(self) -> None:
        """Wait until the run's task has ended and closed the execution (raises nothing)."""
        if self.task is not None and not self.task.done():
            await asyncio.wait([self.task])


def _retrieve_outcome(task: asyncio.Task[Any]) -> None:
    """Mark a streamed run's outcome as seen (the caller may never read its events)."""
    if not task.cancelled():
        task.exception()


class _DurableStreamingResult(wrapt.ObjectProxy):  # pyright: ignore[reportMissingTypeArgument]
    """A `RunResultStreaming` whose `stream_events()` ends once the run's execution is closed."""

    def __init__(self, wrapped: RunResultStreaming, boundary: _StreamBoundary) -> None:
        super().__init__(wrapped)
        self._self_boundary = boundary

    async def stream_events(self) -> AsyncIterator[Any]:
        boundary: _StreamBoundary = self._self_boundary
        try:
            async for event in self.__wrapped__.stream_events():
                yield event
        except (GeneratorExit, asyncio.CancelledError):
            raise  # the consumer stopped listening: the run's own end closes the execution
        except BaseException as error:
            await boundary.ended()
            if boundary.error is not None and boundary.error is not error:
                raise boundary.error from None
            raise
        await boundary.ended()
        if boundary.error is not None:
            raise boundary.error


class DurableAgentRunner:
    """The agent runner behind `Runner.run`, `run_sync` and `run_streamed` once `durable()` was called.

    Runs of durable agents (and of agents they call as tools) are executions; every other run
    goes to the runner that was the default before, unchanged.

    Args:
        inner: The runner that does the work (the SDK's `AgentRunner` by default).
        options: Options for every run (used by `DurableRunner`); `None`: only agents marked by
            `durable()` run durably, each with its own options.
    """

    def __init__(self, inner: AgentRunner, options: DurableOptions | None = None) -> None:
        self.inner = inner
        self.options = options

    def _options(self, agent: Any) -> tuple[DurableOptions | None, bool]:
        if self.options is not None:
            return self.options, False
        marked = _options_of(agent)
        if marked is not None:
            return marked, True
        return _active_options.get(), False

    async def run(self, starting_agent: Any, input: Any, **kwargs: Any) -> RunResult:
        """Run durably when the agent is durable (see `Runner.run`)."""
        options, in_place = self._options(starting_agent)
        if options is None:
            return await self.inner.run(starting_agent, input, **kwargs)
        async with _durable_boundary_async(options, starting_agent, input, kwargs, in_place=in_place) as (
            agent,
            changed,
        ):
            return await self.inner.run(agent, input, **changed)

    def run_sync(self, starting_agent: Any, input: Any, **kwargs: Any) -> RunResult:
        """Run durably when the agent is durable (see `Runner.run_sync`)."""
        options, in_place = self._options(starting_agent)
        if options is None:
            return self.inner.run_sync(starting_agent, input, **kwargs)
        with _durable_boundary(options, starting_agent, input, kwargs, in_place=in_place) as (agent, changed):
            return self.inner.run_sync(agent, input, **changed)

    def run_streamed(self, starting_agent: Any, input: Any, **kwargs: Any) -> RunResultStreaming:
        """Run durably when the agent is durable (see `Runner.run_streamed`).

        The execution opens at the start of the run's background task (its store I/O off the
        event loop) and stays open while the run streams; `stream_events()` raises
        `ExecutionWaitingError` at its end when the run stopped at a wait.

        Raises:
            AdapterError: The SDK starts streamed runs otherwise than this adapter knows.
        """
        options, in_place = self._options(starting_agent)
        if options is None:
            return self.inner.run_streamed(starting_agent, input, **kwargs)
        agent, run = _boundary_run(options, starting_agent, input, kwargs, in_place=in_place)
        changed = _run_kwargs(kwargs)
        boundary = _StreamBoundary(run, options, changed)
        with boundary.opening_in_run_task():  # the execution opens in the run's task, off the loop
            result = self.inner.run_streamed(agent, input, **changed)
        boundary.check_started(result)
        return cast(RunResultStreaming, _DurableStreamingResult(result, boundary))


def _install() -> None:
    """Route `Runner.run*` through `DurableAgentRunner` (once), keeping the previous default inside it."""
    with _install_lock:
        current = get_default_agent_runner()
        if not isinstance(current, DurableAgentRunner):
            set_default_agent_runner(cast(AgentRunner, DurableAgentRunner(current)))


def _options(
    approve: Sequence[str] | Any,
    approval_mode: ApprovalMode,
    approval_timeout: timedelta | float | None,
    name: str | None,
    side_effects: Sequence[str] | Mapping[str, OnInterrupted] | None = None,
    on_interrupted: OnInterrupted | None = None,
    model_retries: RetryPolicy | None = None,
    budget: Budget | None = None,
) -> DurableOptions:
    if approval_mode not in ("wait", "interrupt"):
        raise ConfigurationError(
            f"approval_mode must be 'wait' (durable waits) or 'interrupt' (the SDK's RunState flow), "
            f"got {approval_mode!r}."
        )
    timeout_s = approval_timeout_s(approval_timeout)
    return DurableOptions(
        policy=ApprovalPolicy(approve),
        approval_mode=approval_mode,
        approval_timeout_s=timeout_s,
        name=name,
        side_effects=SideEffectPolicy(side_effects, on_interrupted),
        model_retries=model_retries,
        budget=Budget.checked(budget, "durable()"),
    )


def is_durable(agent: Any) -> bool:
    """Whether `durable()` was applied to this agent object."""
    return _options_of(agent) is not None


def durable(
    agent: AgentT,
    *,
    approve: Sequence[str] | Any = None,
    approval_mode: ApprovalMode = "wait",
    approval_timeout: timedelta | float | None = None,
    name: str | None = None,
    side_effects: Sequence[str] | Mapping[str, OnInterrupted] | None = None,
    on_interrupted: OnInterrupted | None = None,
    model_retries: RetryPolicy | None = None,
    budget: Budget | None = None,
) -> AgentT:
    """Make an OpenAI Agents SDK agent durable, in place, and return it.

    After this, `Runner.run`, `Runner.run_sync` and `Runner.run_streamed` run the agent durably:
    outside a `@flow` each top-level run is its own execution (re-running it with the same input
    after a crash resumes it); inside a flow it is part of the flow's execution. Every model call
    (`get_response` and `stream_response`, whether the model comes from `RunConfig.model`, the
    agent's `Model` instance, or a name resolved by your own `RunConfig.model_provider`, which is
    wrapped, never replaced) is a checkpoint call keyed by a fingerprint of its input plus an
    occurrence index; every function tool and MCP tool call is one keyed by `tool_call_id`; each
    handoff is one too, storing the run context its callback left. Agents reached through
    handoffs (also agents returned by `on_invoke_handoff`) and agents used as tools are covered.
    The agent objects are changed in place (their class becomes a subclass whose tool lists are
    durable; a `Model` instance on an agent is wrapped in `DurableModel`), so references kept
    elsewhere stay durable.

    Approval: tools declared `needs_approval` and tools selected by `approve` need a decision. With
    `approval_mode="wait"` (default) each is a durable wait answered with
    `{"approved": bool, "message": str | None}` (CLI: `kitaru-adapters executions answer`); the run
    stops `waiting` and continues when re-run (or resumed) after the answer, without repeating the
    interrupted turn's model call; a denial reaches the model as the SDK's rejection text. With
    `approval_mode="interrupt"` the SDK's own flow is left in place: the run returns
    `result.interruptions` and you continue with `RunState.approve/reject`.

    Side effects: a tool call cut off inside its body (a crash or kill while it ran) runs again on
    resume by default. Function and MCP tools named in `side_effects` commit a `started` record
    before their body, and an interrupted call stops the resumed run at a durable wait instead,
    answered with `{"action": "retry"}` (run it again) or `{"action": "result", "result": ...}`
    (what the tool returned; the model gets it and the tool does not run again). A mapping chooses
    the mode per tool: `{"refund": "fail"}` fails the run with `InterruptedCallError` until that
    wait is answered. Model requests and handoffs are always run again.

    Args:
        agent: The starting agent.
        approve: Tool names that need approval, or `callable(tool_name, arguments) -> bool`.
        approval_mode: `"wait"` or `"interrupt"`, see above.
        approval_timeout: How long an approval wait polls the store before the execution suspends
            (`timedelta` or seconds). Default: suspend at once unless at a terminal.
        name: Name used in execution names (default: the starting agent's `name`; keep it stable).
        side_effects: Tool names whose interrupted calls ask a person (`["refund"]`), or a mapping
            of tool name to `"retry"`, `"ask"` or `"fail"`.
        on_interrupted: The mode of tools `side_effects` does not name; default:
            `configure(on_interrupted=...)`, itself `"retry"`.
        model_retries: How a failed model call is retried inside its checkpoint call (rate limits
            honouring `Retry-After`, timeouts, connection and 5xx errors; never 401/403 or other
            4xx). Default: `kitaru_core.model_retries(...)` around the run, else `ModelRetryPolicy()`;
            `ModelRetryPolicy(max_attempts=1)` turns retries off.
        budget: Limits on what the execution's model calls may spend (`Budget(usd=5.0)`): when one
            is reached, the run stops before the next model call at a durable wait named `budget`,
            answered `{"action": "raise", "usd": 8.0}` or `{"action": "stop", "reason": "..."}`.
            Default: the enclosing `@flow(budget=...)`'s, else none.

    Returns:
        The same agent object.

    Raises:
        AdapterError: `agent` is not an `agents.Agent`; or, when it runs, one of its tools runs
            locally through its own executor (computer, local shell, apply-patch, custom tools).
        ConfigurationError: `approve` or `side_effects` is a string instead of a list,
            `approval_mode` or an `on_interrupted` mode is unknown, or `budget` is not a `Budget`.
    """
    if not isinstance(agent, Agent):  # pyright: ignore[reportUnnecessaryIsInstance] - checked at run time
        raise AdapterError(
            f"durable() from kitaru_adapters.openai_agents takes an agents.Agent, got {type(agent).__qualname__}."
        )
    options = _options(
        approve, approval_mode, approval_timeout, name, side_effects, on_interrupted, model_retries, budget
    )
    seams.check()
    with _install_lock:
        graph = _Graph(options, in_place=True)
        object.__setattr__(agent, OPTIONS_ATTRIBUTE, None)  # re-marked by prepare with the new options
        graph.prepare(agent)
        object.__setattr__(agent, GRAPH_ATTRIBUTE, graph)
        _install()
    return agent


def undurable(agent: AgentT) -> AgentT:
    """Return an agent made durable by `durable()`, and every agent its handoffs reach, to their plain state.

    In place: each agent's class becomes its original class again, its `model` and `handoffs` are
    the values they had before `durable()`, and its durable options are removed, so later runs
    record nothing and open no execution. The default runner `durable()` installed stays: it runs
    agents that are not durable unchanged. Calls already recorded stay in the store;
    `durable(agent)` again records again. An agent that is not durable is returned unchanged.

    Args:
        agent: The starting agent given to `durable()`.

    Returns:
        The same agent object.
    """
    with _install_lock:
        pending: list[Any] = [agent]
        seen: set[int] = set()
        while pending:
            current = pending.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            plain = vars(current).get(PLAIN_ATTRIBUTE)
            if plain is not None:
                current.model, current.handoffs = plain[0], list(plain[1])
            for attribute in (PLAIN_ATTRIBUTE, OPTIONS_ATTRIBUTE, GRAPH_ATTRIBUTE):
                if attribute in vars(current):
                    object.__delattr__(current, attribute)
            _subclasses.make_plain(current)
            for item in current.handoffs:
                reference = getattr(item, "_agent_ref", None) if isinstance(item, Handoff) else None
                reached = item if isinstance(item, Agent) else reference() if callable(reference) else None
                if reached is not None:
                    pending.append(reached)
    return agent


class DurableRunner:
    """Runs agents durably without changing the agent objects (they are cloned for each run).

    `DurableRunner(approve=[...]).run(agent, input, ...)` takes the same arguments as `Runner.run`;
    likewise `run_sync` and `run_streamed`. See `durable` for what is recorded and the options.

    Args:
        approve: Tool names that need approval, or `callable(tool_name, arguments) -> bool`.
        approval_mode: `"wait"` (durable waits) or `"interrupt"` (the SDK's RunState flow).
        approval_timeout: How long an approval wait polls before suspending (`timedelta` or seconds).
        name: Name used in execution names (default: the starting agent's `name`).
        side_effects: Tool names whose interrupted calls ask a person, or a mapping of tool name
            to `"retry"`, `"ask"` or `"fail"` (see `durable`).
        on_interrupted: The mode of tools `side_effects` does not name.
        model_retries: How a failed model call is retried (see `durable`).
        budget: Limits on what the execution's model calls may spend (see `durable`).
    """

    def __init__(
        self,
        *,
        approve: Sequence[str] | Any = None,
        approval_mode: ApprovalMode = "wait",
        approval_timeout: timedelta | float | None = None,
        name: str | None = None,
        side_effects: Sequence[str] | Mapping[str, OnInterrupted] | None = None,
        on_interrupted: OnInterrupted | None = None,
        model_retries: RetryPolicy | None = None,
        budget: Budget | None = None,
    ) -> None:
        options = _options(
            approve,
            approval_mode,
            approval_timeout,
            name,
            side_effects,
            on_interrupted,
            model_retries,
            budget,
        )
        seams.check()
        _install()
        inner = get_default_agent_runner()
        self._runner = DurableAgentRunner(cast(DurableAgentRunner, inner).inner, options)

    async def run(
        self, starting_agent: Agent[Any], input: Any, *, execution_id: str | None = None, **kwargs: Any
    ) -> RunResult:
        """Like `Runner.run`, durably.

        Args:
            starting_agent: The starting agent.
            input: The run's input (or a `RunState`).
            execution_id: The run's identity (see the re-run rule in the concepts): run again with
                the same input after it completed, it is served from the store; with another
                input it is a new turn, execution `{execution_id}~2`, `~3`...
            **kwargs: `Runner.run`'s other arguments.

        Returns:
            The run's result.
        """
        return await self._runner.run(starting_agent, input, **_with_identity(kwargs, execution_id))

    def run_sync(
        self, starting_agent: Agent[Any], input: Any, *, execution_id: str | None = None, **kwargs: Any
    ) -> RunResult:
        """Like `Runner.run_sync`, durably (`execution_id` as for `run`).

        Args:
            starting_agent: The starting agent.
            input: The run's input (or a `RunState`).
            execution_id: The run's identity, as for `run`.
            **kwargs: `Runner.run_sync`'s other arguments.

        Returns:
            The run's result.
        """
        return self._runner.run_sync(starting_agent, input, **_with_identity(kwargs, execution_id))

    def run_streamed(
        self, starting_agent: Agent[Any], input: Any, *, execution_id: str | None = None, **kwargs: Any
    ) -> RunResultStreaming:
        """Like `Runner.run_streamed`, durably (`execution_id` as for `run`).

        Args:
            starting_agent: The starting agent.
            input: The run's input (or a `RunState`).
            execution_id: The run's identity, as for `run`.
            **kwargs: `Runner.run_streamed`'s other arguments.

        Returns:
            The streaming result.
        """
        return self._runner.run_streamed(starting_agent, input, **_with_identity(kwargs, execution_id))


def _with_identity(kwargs: dict[str, Any], execution_id: str | None) -> dict[str, Any]:
    return kwargs if execution_id is None else {**kwargs, "execution_id": execution_id}
