"""`durable(graph)`: every run of a compiled graph is (part of) an execution, identified by its thread."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.pregel import Pregel
from langgraph.types import Command

from kitaru_adapters.langgraph import _seams as seams
from kitaru_adapters.langgraph._model import install_model_wraps, jsonable
from kitaru_adapters.langgraph._position import (
    DurableOptions,
    GraphRun,
    active_run,
    enter_run,
    leave_run,
)
from kitaru_adapters.langgraph._tools import install_tool_wraps
from kitaru_core import Budget, Client, RetryPolicy, current_execution, execution
from kitaru_core.adapters import (
    DurableSubclasses,
    budget_scope,
    durable_run,
    fingerprint,
    run_checkpoint,
    run_checkpoint_async,
    scope,
)
from kitaru_core.errors import AdapterError, ExecutionNotFoundError

GraphT = TypeVar("GraphT", bound=Pregel[Any, Any, Any, Any])

OPTIONS_ATTRIBUTE = "__kitaru_durable_options__"
# Two threads calling `durable()` at once never make two durable subclasses of one class nor swap a
# graph's class twice: the subclasses are made and swapped in under their lock.
_subclasses = DurableSubclasses()
_END = object()
DEFAULT_GRAPH_NAME = "LangGraph"


def options_of(graph: Any) -> DurableOptions | None:
    """The options `durable()` attached to `graph`, or `None` when it is not durable."""
    return getattr(graph, OPTIONS_ATTRIBUTE, None)


def is_durable(graph: Any) -> bool:
    """Whether `durable()` was applied to this graph object."""
    return options_of(graph) is not None


def thread_id_of(config: Any) -> str | None:
    """The `thread_id` of a run's config, or `None`."""
    if not isinstance(config, dict):
        return None
    configurable: Any = config.get("configurable") or {}  # pyright: ignore[reportUnknownMemberType]
    thread_id = configurable.get("thread_id") if isinstance(configurable, dict) else None
    return None if thread_id is None else str(thread_id)  # pyright: ignore[reportUnknownArgumentType]


def _has_checkpointer(graph: Pregel[Any, Any, Any, Any], config: Any) -> bool:
    if isinstance(graph.checkpointer, BaseCheckpointSaver):
        return True
    configurable: Any = config.get("configurable") if isinstance(config, dict) else None  # pyright: ignore[reportUnknownMemberType]
    return isinstance(configurable, dict) and isinstance(
        configurable.get("__pregel_checkpointer"), BaseCheckpointSaver
    )


@contextlib.contextmanager
def graph_boundary(graph: Pregel[Any, Any, Any, Any], input: Any, config: Any) -> Generator[None]:
    """Open (or join) the execution of one top-level call of a durable graph.

    With a `thread_id` the execution's id is the thread id, so every call on the thread (new input,
    `invoke(None)` after a crash, `Command(resume=...)` after an interrupt) runs the same execution;
    without a checkpointer each turn of the thread is marked and keyed apart (`_next_turn`).
    Without a `thread_id`, the call is an execution identified by its input (re-running the same
    call after a crash resumes it). Inside a `@flow` the call's checkpoint calls belong to the
    flow's execution.
    """
    options = options_of(graph)
    if options is None or active_run() is not None:
        yield  # not durable, or nested: `invoke` runs through `stream`, a subgraph through its parent
        return
    run = GraphRun(options, has_checkpointer=_has_checkpointer(graph, config))
    token = enter_run(run)
    name = f"langgraph:{options.name}"
    thread_id = thread_id_of(config)
    try:
        with budget_scope(options.budget):  # checked before each chat model call (the core)
            if current_execution() is not None:
                with scope(name, discriminator=thread_id):
                    yield
            elif thread_id is not None:
                turn = None if run.has_checkpointer else _next_turn(thread_id, input)
                with execution(thread_id, name=name, inputs={"thread_id": thread_id}):
                    if turn is None:
                        yield
                    else:
                        with _in_turn(*turn):
                            yield
            else:
                with durable_run(name, inputs={"input": jsonable(input)}):
                    yield
    finally:
        leave_run(token)


@contextlib.asynccontextmanager
async def agraph_boundary(graph: Pregel[Any, Any, Any, Any], input: Any, config: Any) -> AsyncGenerator[None]:
    """`graph_boundary` for `ainvoke` / `astream`: the execution's store I/O runs off the event loop."""
    options = options_of(graph)
    if options is None or active_run() is not None:
        yield
        return
    run = GraphRun(options, has_checkpointer=_has_checkpointer(graph, config))
    token = enter_run(run)
    name = f"langgraph:{options.name}"
    thread_id = thread_id_of(config)
    try:
        with budget_scope(options.budget):  # checked before each chat model call (the core)
            if current_execution() is not None:
                with scope(name, discriminator=thread_id):
                    yield
            elif thread_id is not None:
                turn = None if run.has_checkpointer else await asyncio.to_thread(_next_turn, thread_id, input)
                async with execution(thread_id, name=name, inputs={"thread_id": thread_id}):
                    if turn is None:
                        yield
                    else:
                        async with _ain_turn(*turn):
                            yield
            else:
                async with durable_run(name, inputs={"input": jsonable(input)}):
                    yield
    finally:
        leave_run(token)


TURN = "langgraph:turn"


def _turn_of(call: Any) -> tuple[int, str] | None:
    """The turn number and input fingerprint a turn marker's key names (`langgraph:turn:<n>.<fp>`)."""
    if call.name != TURN or call.status != "completed":
        return None
    number, _, digest = call.key.rpartition(":")[2].partition(".")
    return (int(number), digest) if number.isdigit() else None


def _next_turn(thread_id: str, input: Any) -> tuple[int, str]:
    """Which turn of a thread (graph without a checkpointer) a call runs, and its input's fingerprint.

    The same input as the thread's latest turn is that turn again: served when it completed,
    resumed when it did not. Another input is a new turn, whose calls get keys of their own.
    `None` and `Command` inputs continue the latest turn.
    """
    digest = (fingerprint(jsonable(input)) or "0" * 16)[:16]
    try:  # the turn markers only (one indexed read), not every call of the thread
        markers = Client().list_calls(thread_id, key_prefix=f"{TURN}:")
    except ExecutionNotFoundError:
        return 1, digest
    turns = [turn for call in markers if (turn := _turn_of(call)) is not None]
    if not turns:
        return 1, digest  # a new thread, or one recorded before turns were marked: its first turn
    number, latest = max(turns)
    if input is None or isinstance(input, Command) or latest == digest:
        return number, latest
    return number + 1, digest


@contextlib.contextmanager
def _in_turn(number: int, digest: str) -> Generator[None]:
    """Mark turn `number` of the thread (a checkpoint call) and keep its calls' keys apart from other turns'."""
    run_checkpoint(TURN, lambda: number, discriminator=f"{number}.{digest}", kind="user", inputs=None)
    if number == 1:
        yield  # the first turn's keys are those of threads recorded before turns were marked
        return
    with scope("turn", discriminator=str(number)):
        yield


@contextlib.asynccontextmanager
async def _ain_turn(number: int, digest: str) -> AsyncGenerator[None]:
    """`_in_turn` for the async entry points (the turn marker is committed off the event loop)."""

    async def turn_number() -> int:
        return number

    await run_checkpoint_async(TURN, turn_number, discriminator=f"{number}.{digest}", kind="user", inputs=None)
    if number == 1:
        yield
        return
    with scope("turn", discriminator=str(number)):
        yield


def default_name(graph: Pregel[Any, Any, Any, Any]) -> str:
    """The graph's `name`; for an unnamed graph of one node (an `@entrypoint`), that node's name."""
    if graph.name != DEFAULT_GRAPH_NAME:
        return graph.name
    nodes = [node for node in graph.nodes if not node.startswith("__")]
    return nodes[0] if len(nodes) == 1 else graph.name


UNFINISHED = ("running", "failed", "waiting")
INPUT_CHANNEL = "__start__"


RUN = object()
"""`plan_call`'s answer when the graph has to run (nothing to serve)."""


def _may_continue(graph: Pregel[Any, Any, Any, Any], input: Any, config: Any) -> bool:
    """Whether a call could repeat a thread's latest input (checked without touching any store)."""
    return not (
        input is None
        or isinstance(input, Command)
        or thread_id_of(config) is None
        or not isinstance(graph.checkpointer, BaseCheckpointSaver)
        or active_run() is not None
        or current_execution() is not None
        or not is_durable(graph)
    )


def served_output(graph: Pregel[Any, Any, Any, Any], state: Any) -> Any:
    """What `invoke` returned for a finished run: the thread's state, read through the output channels."""
    values = state.values
    channels = graph.output_channels
    if isinstance(channels, str) or not isinstance(values, dict):
        return values
    return {key: values[key] for key in channels if key in values}  # pyright: ignore[reportUnknownVariableType]


def _plan(
    graph: Pregel[Any, Any, Any, Any], state: Any, latest: Any, input: Any, config: Any
) -> tuple[Any, Any]:
    """The input to run with and the output to serve instead (or `RUN`), from the thread's state."""
    if latest is None:
        return input, RUN
    stored = latest.checkpoint["channel_values"].get(INPUT_CHANNEL)
    if fingerprint(jsonable(stored)) != fingerprint(jsonable(input)):
        return input, RUN  # a new input on the thread: a new turn, live
    try:
        status = Client().get_summary(str(thread_id_of(config))).status
    except ExecutionNotFoundError:
        return input, RUN
    if state.tasks:
        if any(task.interrupts for task in state.tasks):
            return input, RUN  # waiting at LangGraph's interrupt(): as LangGraph does
        return (None, RUN) if status in UNFINISHED else (input, RUN)  # crashed: continue that run
    if status == "completed":
        return input, served_output(graph, state)  # the same input again, finished: served
    return input, RUN


def plan_call(graph: Pregel[Any, Any, Any, Any], input: Any, config: Any) -> tuple[Any, Any]:
    """How a call on a thread with a checkpointer runs under the re-run rule.

    The thread's latest input (LangGraph's latest `source="input"` checkpoint) and the thread's
    execution decide: the same input as the latest run, which crashed, failed or stopped at a
    durable wait (pending tasks that are not interrupts), continues that run (`None` as input, as
    LangGraph's own `invoke(None, config)`); the same input as the latest run, which completed
    (no pending task), is served: the graph does not run, and the output is read from the
    checkpointer. Any other input runs as LangGraph runs it (a new turn, live). `aplan_call` is the
    same for the async entry points.

    Returns:
        `(input, RUN)` to run the graph with `input`, or `(input, output)` to return `output`.
    """
    if not _may_continue(graph, input, config):
        return input, RUN
    checkpointer: Any = graph.checkpointer
    state = graph.get_state(config)
    latest = next(iter(checkpointer.list(config, filter={"source": "input"}, limit=1)), None)
    return _plan(graph, state, latest, input, config)


async def aplan_call(graph: Pregel[Any, Any, Any, Any], input: Any, config: Any) -> tuple[Any, Any]:
    """`plan_call` for `ainvoke` / `astream`: no synchronous checkpointer call.

    Async checkpointers (`AsyncSqliteSaver`, `AsyncPostgresSaver`) refuse synchronous calls made
    from the event loop's thread, so the state and the latest input are read with `aget_state` and
    `alist`.
    """
    if not _may_continue(graph, input, config):
        return input, RUN
    checkpointer: Any = graph.checkpointer
    state = await graph.aget_state(config)
    latest = None
    async for item in checkpointer.alist(config, filter={"source": "input"}, limit=1):
        latest = item
        break
    return await asyncio.to_thread(_plan, graph, state, latest, input, config)  # reads the store


def served_stream(graph: Pregel[Any, Any, Any, Any], output: Any, kwargs: dict[str, Any]) -> list[Any]:
    """What a stream of a served call yields: the final state in `values` mode, nothing else."""
    mode: Any = kwargs.get("stream_mode") or graph.stream_mode
    prefix: tuple[Any, ...] = ((),) if kwargs.get("subgraphs") else ()
    if mode == "values":
        return [(*prefix, output) if prefix else output]
    if isinstance(mode, list | tuple) and "values" in mode:
        return [(*prefix, "values", output)]
    return []


def _make_durable_class(base: type[Any]) -> type[Any]:
    """A subclass of a compiled graph's class whose entry points open the durable boundary."""

    class DurableGraph(base):  # type: ignore[valid-type, misc]
        def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
            input, served = plan_call(self, input, config)
            if served is not RUN:
                return served
            with graph_boundary(self, input, config):
                return base.invoke(self, input, config, **kwargs)

        async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
            input, served = await aplan_call(self, input, config)
            if served is not RUN:
                return served
            async with agraph_boundary(self, input, config):
                return await base.ainvoke(self, input, config, **kwargs)

        def stream(self, input: Any, config: Any = None, **kwargs: Any) -> Iterator[Any]:
            if active_run() is not None or not is_durable(self):
                yield from base.stream(self, input, config, **kwargs)
                return
            input, served = plan_call(self, input, config)
            if served is not RUN:
                yield from served_stream(self, served, kwargs)
                return
            # The execution's context variables live in a context of their own, entered for each
            # step of the stream, so a consumer that stops early does not leave them set.
            context = contextvars.copy_context()
            stack = contextlib.ExitStack()
            context.run(stack.enter_context, graph_boundary(self, input, config))
            inner = context.run(base.stream, self, input, config, **kwargs)
            try:
                while (item := context.run(next, inner, _END)) is not _END:
                    yield item
            except BaseException as error:
                context.run(inner.close)
                if not context.run(stack.__exit__, type(error), error, error.__traceback__):
                    raise
            else:
                context.run(stack.close)

        async def astream(self, input: Any, config: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
            if active_run() is not None or not is_durable(self):
                async for item in base.astream(self, input, config, **kwargs):
                    yield item
                return
            input, served = await aplan_call(self, input, config)
            if served is not RUN:
                for item in served_stream(self, served, kwargs):
                    yield item
                return
            # One task, in a copy of the caller's context, runs the whole stream inside the boundary.
            # It pulls the next item only when the consumer asks for it, so the graph does not run
            # ahead of a consumer (one that stops early stops the graph where plain LangGraph would).
            wanted: asyncio.Queue[None] = asyncio.Queue()
            items: asyncio.Queue[Any] = asyncio.Queue()

            async def pump() -> None:
                try:
                    async with (
                        agraph_boundary(self, input, config),
                        contextlib.aclosing(base.astream(self, input, config, **kwargs)) as stream,
                    ):
                        iterator = aiter(stream)
                        while True:
                            await wanted.get()
                            try:
                                item = await anext(iterator)
                            except StopAsyncIteration:
                                break
                            items.put_nowait((item,))
                finally:
                    items.put_nowait(_END)

            task = asyncio.create_task(pump(), context=contextvars.copy_context())
            try:
                while True:
                    wanted.put_nowait(None)
                    item = await items.get()
                    if item is _END:
                        break
                    yield item[0]
                await task  # the run's outcome: its error, or the execution's verdict (waiting...)
            finally:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    return DurableGraph


def durable(
    graph: GraphT,
    *,
    approve: Sequence[str] | Any = None,
    approval_timeout: timedelta | float | None = None,
    name: str | None = None,
    model_retries: RetryPolicy | None = None,
    budget: Budget | None = None,
) -> GraphT:
    """Make a compiled LangGraph graph durable, in place, and return it.

    Accepts a compiled `StateGraph`, the result of `create_agent` / `create_react_agent`, or a
    functional `@entrypoint`. Afterwards `invoke`, `ainvoke`, `stream`, `astream` (and `batch`,
    `astream_events`, which go through them) run durably: every chat model call (LangChain
    `BaseChatModel`: `invoke`/`ainvoke` of any provider, `bind_tools` bindings, a direct
    `stream`/`astream`) and every tool call (`BaseTool`, so `ToolNode` and agents' tools) made
    during the run is a checkpoint call, committed to the store before it returns to graph code.

    Identity: a run with a `thread_id` belongs to the execution whose id is the thread id, so every
    call on the thread (new input, `invoke(None, config)` after a crash, `Command(resume=...)`
    after an interrupt) is served the calls already made at the same logical position. The
    re-run rule: the same input as the thread's latest run is served when that run completed
    (with a checkpointer the graph does not run and the output is read from the checkpointer;
    without one every call is served) and resumed when it crashed, failed or is waiting (with a
    checkpointer, as `invoke(None, config)` would); a different input is a new turn and runs
    live. A run without a `thread_id` is a new execution each time, except that the same input
    after a crash resumes it. Inside a `@flow` the calls belong to the flow's execution.

    Keys: a model call's key is its logical position (graph namespace without task ids, superstep,
    task path), a fingerprint of the request (model, messages without ids, bound tools and
    options) and an occurrence index; a tool call's key is its namespace, step and `tool_call_id`.
    Task ids and checkpoint ids are never used (they change after a lost checkpoint write).

    Approval: tool calls selected by `approve` need a decision before they run. When the graph
    has a checkpointer the gate calls LangGraph's `interrupt()` with a request
    `{"kind": "tool_approval", "tool", "arguments", "tool_call_id", "question"}`; resume with
    `Command(resume={"approved": True})` (or `{interrupt_id: answer, ...}` for parallel calls); an
    invalid answer asks again, naming the problem. Without a checkpointer each is a durable wait
    named `approve:<tool>:<tool_call_id>-<8 hex of position and arguments>`, answered with
    `{"approved": bool, "message": ...}`
    (CLI: `kitaru-adapters executions answer`), and the run raises `ExecutionWaitingError` until
    it is answered and the run is called again. A denial gives the model an error `ToolMessage`.

    Args:
        graph: The compiled graph.
        approve: Tool names that need approval, or `callable(tool_name, arguments) -> bool`.
        approval_timeout: How long an approval wait polls the store before the execution suspends
            (`timedelta` or seconds; only without a checkpointer). Default: suspend at once unless
            at a terminal.
        name: Name used in the execution name `langgraph:<name>` (default: the graph's `name`, or
            an `@entrypoint`'s function name). Keep it stable: resume finds executions by it.
        model_retries: How a failed chat model call is retried inside its checkpoint call (rate
            limits honouring `Retry-After`, timeouts, connection and 5xx errors; never 401/403 or
            other 4xx). Default: `kitaru_core.model_retries(...)` around the run, else
            `ModelRetryPolicy()`; `ModelRetryPolicy(max_attempts=1)` turns retries off.
        budget: Limits on what the execution's chat model calls may spend (`Budget(usd=5.0)`):
            when one is reached, the run stops before the next chat model call at a durable wait
            named `budget`, answered `{"action": "raise", "usd": 8.0}` or `{"action": "stop",
            "reason": "..."}` (always a `kitaru_core` wait, also with a checkpointer). Default: the
            enclosing `@flow(budget=...)`'s, else none.

    Returns:
        The same graph object (its class becomes a subclass with the same name).

    Raises:
        AdapterError: `graph` is not a compiled LangGraph graph (`Pregel`).
        ConfigurationError: `approve` is a string instead of a list, or `budget` is not a `Budget`.
    """
    if not isinstance(graph, Pregel):  # pyright: ignore[reportUnnecessaryIsInstance] - checked at run time
        raise AdapterError(
            "durable() from kitaru_adapters.langgraph takes a compiled graph (StateGraph.compile(), "
            f"create_agent(...), an @entrypoint), got {type(graph).__qualname__}. Compile the graph first."
        )
    options = DurableOptions.build(
        name or default_name(graph), approve, approval_timeout, model_retries, budget
    )
    seams.check()
    install_model_wraps()
    install_tool_wraps()
    with _subclasses.lock:
        object.__setattr__(graph, OPTIONS_ATTRIBUTE, options)
        return _subclasses.make_durable(graph, _make_durable_class)


def undurable(graph: GraphT) -> GraphT:
    """Return a graph made durable by `durable()` to its plain state, in place, and return it.

    The graph's class becomes its original class again and its durable options are removed:
    later runs record nothing and open no execution. The process-wide wraps of `BaseChatModel`
    and `BaseTool` stay: they record only inside a durable graph run. Calls already recorded stay
    in the store; `durable(graph)` again records again. A graph that is not durable is returned
    unchanged.

    Args:
        graph: The compiled graph.

    Returns:
        The same graph object.
    """
    with _subclasses.lock:
        _subclasses.make_plain(graph)
        if OPTIONS_ATTRIBUTE in vars(graph):
            object.__delattr__(graph, OPTIONS_ATTRIBUTE)
    return graph
