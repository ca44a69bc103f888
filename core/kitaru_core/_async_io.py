"""Store and artifact I/O of async code paths, moved off the event loop onto worker threads.

The store is synchronous (SQLAlchemy Core on SQLite or PostgreSQL, fsspec for artifacts). Async
paths (`run_checkpoint_async`, async flows, `async with execution(...)` / `durable_run(...)`) hand
every store or artifact access to a worker thread and await it, so a slow database or artifact
store never stalls the event loop (and the model streams, tool calls and timers running on it).

Each execution gets its own *lane*: one worker thread that runs that execution's I/O in the order
it was submitted. First in, first out keeps what the synchronous path guarantees: concurrent
asyncio tasks of one execution get their call keys (`name:0`, `name:1`...) and sequence numbers in
the order they reached their checkpoint calls, and a call's output is committed before the call
returns it (the task awaits the commit). One writer per execution also matches SQLite, which takes
one write at a time anyway; different executions get different lanes. Every function runs in a copy
of the caller's context variables (the execution, the scope, the running call).

Why threads and not SQLAlchemy's asyncio engine: threads cover both backends with the one store
(SQLite's asyncio driver runs a thread per connection anyway), the fencing and lease logic stays
in one place, and the artifact store (fsspec) is synchronous too. The SQLite engine is opened with
`check_same_thread=False` (its heartbeat thread already shares it).
"""

from __future__ import annotations

import contextvars
import functools
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from kitaru_core._context import ExecutionContext

T = TypeVar("T")


class Lane:
    """One worker thread that runs one execution's store I/O in submission order.

    Args:
        name: Part of the worker thread's name (the execution id, for debugging).
    """

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kitaru-io-{name[:40]}")

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `function(*args, **kwargs)` on the lane's thread in a copy of the current context; await it.

        Returns:
            What `function` returned.

        Raises:
            BaseException: What `function` raised.
        """
        import asyncio  # imported when async code runs: `import kitaru_core` stays light

        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, function, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    def close(self) -> None:
        """Let the thread end once the work already submitted is done (does not block)."""
        self._executor.shutdown(wait=False)


_lanes: weakref.WeakKeyDictionary[ExecutionContext, Lane] = weakref.WeakKeyDictionary()
_lanes_lock = threading.Lock()


def lane_for(context: ExecutionContext) -> Lane:
    """The lane of an execution's run in this process (made on first use, dropped with the context)."""
    with _lanes_lock:
        lane = _lanes.get(context)
        if lane is None:
            lane = _lanes[context] = Lane(context.execution_id)
        return lane


def adopt_lane(context: ExecutionContext, lane: Lane) -> None:
    """Make `lane` (which opened the run) the lane of `context`."""
    with _lanes_lock:
        _lanes[context] = lane


def release_lane(context: ExecutionContext) -> None:
    """Close and forget the lane of `context` (its run has ended)."""
    with _lanes_lock:
        lane = _lanes.pop(context, None)
    if lane is not None:
        lane.close()


async def off_loop(context: ExecutionContext | None, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking store I/O on a worker thread: the execution's lane, or any thread without one.

    Args:
        context: The execution the I/O belongs to (its lane keeps the order), or `None` (before an
            execution is open: `asyncio.to_thread`).
        function: The blocking function.
        *args: Its positional arguments.
        **kwargs: Its keyword arguments.

    Returns:
        What `function` returned.
    """
    if context is None:
        import asyncio

        return await asyncio.to_thread(function, *args, **kwargs)
    return await lane_for(context).run(function, *args, **kwargs)
