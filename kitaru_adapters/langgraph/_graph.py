"""`durable(graph)`: every run of a compiled graph is (part of) an execution, identified by its thread."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.pregel import Pregel
from langgraph.types import Command

from kitaru_adapters.langgraph._model import install_model_wraps, jsonable
from kitaru_adapters.langgraph._position import (
    DurableOptions,
    GraphRun,
    active_run,
    enter_run,
    leave_run,
)
from kitaru_adapters.langgraph._tools import install_tool_wraps
from kitaru_core import Client, current_execution, durable_run, execution, fingerprint, scope
from kitaru_core.errors import AdapterError, ExecutionNotFoundError

GraphT = TypeVar("GraphT", bound=Pregel[Any, Any, Any, Any])

OPTIONS_ATTRIBUTE = "__kitaru_durable_options__"
_durable_classes: dict[type[Any], type[Any]] = {}
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
    `invoke(None)` after a crash, `Command(resume=...)` after an interrupt) runs the same execution.
    Without one, the call is an execution identified by its input (re-running the same call after a
    crash resumes it). Inside a `@flow` the call's checkpoint calls belong to the flow's execution.
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
        if current_execution() is not None:
            with scope(name, discriminator=thread_id):
                yield
        elif thread_id is not None:
            with execution(thread_id, name=name, inputs={"thread_id": thread_id}):
                yield
        else:
            with durable_run(name, inputs={"input": jsonable(input)}):
                yield
    finally:
        leave_run(token)


def default_name(graph: Pregel[Any, Any, Any, Any]) -> str:
    """The graph's `name`; for an unnamed graph of one node (an `@entrypoint`), that node's name."""
    if graph.name != DEFAULT_GRAPH_NAME:
        return graph.name
    nodes = [node for node in graph.nodes if not node.startswith("__")]
    return nodes[0] if len(nodes) == 1 else graph.name


UNFINISHED = ("running", "failed", "waiting")
INPUT_CHANNEL = "__start__"


def resume_input(graph: Pregel[Any, Any, Any, Any], input: Any, config: Any) -> Any:
    """`None` instead of `input` when a call is the re-run of a thread's crashed call.

    With a checkpointer, LangGraph resumes an unfinished run with `invoke(None, config)`; the same
    `invoke(input, config)` again would start a new run on top of the saved state. So when the
    thread's execution did not finish (crashed, failed, or stopped at a durable wait), the
    checkpointer holds pending tasks that are not interrupts, and the thread's latest input equals
    this one, the call continues the unfinished run instead.
    """
    thread_id = thread_id_of(config)
    checkpointer = graph.checkpointer
    if (
        input is None
        or isinstance(input, Command)
        or thread_id is None
        or not isinstance(checkpointer, BaseCheckpointSaver)
        or active_run() is not None
        or current_execution() is not None
        or not is_durable(graph)
    ):
        return input
    # Cheapest first: after a run that finished, the thread has no pending task.
    state = graph.get_state(config)
    if not state.tasks or any(task.interrupts for task in state.tasks):
        return input
    latest = next(iter(checkpointer.list(config, filter={"source": "input"}, limit=1)), None)
    if latest is None:
        return input
    stored = latest.checkpoint["channel_values"].get(INPUT_CHANNEL)
    if fingerprint(jsonable(stored)) != fingerprint(jsonable(input)):
        return input
    try:
        status = Client().get_execution(thread_id).status
    except ExecutionNotFoundError:
        return input
    return None if status in UNFINISHED else input


def _durable_class(base: type[Any]) -> type[Any]:
    """A subclass of a compiled graph's class whose entry points open the durable boundary."""
    cached = _durable_classes.get(base)
    if cached is not None:
        return cached

    class DurableGraph(base):  # type: ignore[valid-type, misc]
        def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
            input = resume_input(self, input, config)
            with graph_boundary(self, input, config):
                return base.invoke(self, input, config, **kwargs)

        async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
            input = resume_input(self, input, config)
            with graph_boundary(self, input, config):
                return await base.ainvoke(self, input, config, **kwargs)

        def stream(self, input: Any, config: Any = None, **kwargs: Any) -> Iterator[Any]:
            if active_run() is not None or not is_durable(self):
                yield from base.stream(self, input, config, **kwargs)
                return
            input = resume_input(self, input, config)
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
            input = resume_input(self, input, config)
            # One task, in a copy of the caller's context, runs the whole stream inside the boundary.
            # It pulls the next item only when the consumer asks for it, so the graph does not run
            # ahead of a consumer (one that stops early stops the graph where plain LangGraph would).
            wanted: asyncio.Queue[None] = asyncio.Queue()
            items: asyncio.Queue[Any] = asyncio.Queue()

            async def pump() -> None:
                try:
                    with graph_boundary(self, input, config):
                        async with contextlib.aclosing(base.astream(self, input, config, **kwargs)) as stream:
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

    DurableGraph.__name__ = base.__name__
    DurableGraph.__qualname__ = base.__qualname__
    DurableGraph.__module__ = base.__module__
    DurableGraph.__doc__ = base.__doc__
    _durable_classes[base] = DurableGraph
    return DurableGraph


def durable(
    graph: GraphT,
    *,
    approve: Sequence[str] | Any = None,
    approval_timeout: timedelta | float | None = None,
    name: str | None = None,
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
    after an interrupt) is served the calls already made at the same logical position. With a
    checkpointer, making the same call again after the thread's run crashed or failed continues
    that run (as `invoke(None, config)` would). A run without a `thread_id` is an execution
    identified by its input: re-running it after a crash resumes it. Inside a `@flow` the calls
    belong to the flow's execution.

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

    Returns:
        The same graph object (its class becomes a subclass with the same name).

    Raises:
        AdapterError: `graph` is not a compiled LangGraph graph (`Pregel`).
        ConfigurationError: `approve` is a string instead of a list.
    """
    if not isinstance(graph, Pregel):  # pyright: ignore[reportUnnecessaryIsInstance] - checked at run time
        raise AdapterError(
            "durable() from kitaru_adapters.langgraph takes a compiled graph (StateGraph.compile(), "
            f"create_agent(...), an @entrypoint), got {type(graph).__qualname__}. Compile the graph first."
        )
    options = DurableOptions.build(name or default_name(graph), approve, approval_timeout)
    install_model_wraps()
    install_tool_wraps()
    object.__setattr__(graph, OPTIONS_ATTRIBUTE, options)
    if type(graph) not in _durable_classes.values():
        graph.__class__ = _durable_class(type(graph))
    return graph
