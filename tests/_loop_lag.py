"""A deliberately slow store and an event-loop lag meter, for the async I/O tests of every adapter.

`slow_store()` makes the configured store sleep on every commit (a SQLAlchemy engine event) and on
every artifact write and read, as a database or object store far away would. `LoopLagMeter` runs a
heartbeat task on the event loop (sleep 10 ms, again and again) and records by how much each sleep
overshot: a loop blocked by store I/O overshoots by the store's delay, a free loop by a few ms.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

STORE_DELAY_S = 0.15
"""How long each commit (and artifact access) of the slow store takes, in seconds."""

MAX_LAG_S = 0.05
"""The bound on the event loop's lag while calls are recorded: far below one slow commit."""

TICK_S = 0.01


@dataclass
class SlowStore:
    """What the slow store saw: how many slow operations ran, and on which threads."""

    delay_s: float
    operations: int = 0
    threads: set[str] = field(default_factory=set[str])
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def slow_down(self) -> None:
        """Sleep `delay_s` (the calling thread, as slow I/O would) and count the operation."""
        with self._lock:
            self.operations += 1
            self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)


_STORE_METHODS_NOT_SLOWED = {"close", "prepare_value", "load_value"}  # values: the artifact store is slowed


@contextmanager
def slow_store(delay_s: float = STORE_DELAY_S) -> Iterator[SlowStore]:
    """Make the store the current settings point at slow: each store operation sleeps `delay_s` first.

    Every public method of the `Store` (reads, writes, lease renewals) and every artifact write and
    read sleeps on the thread that calls it, as a database or object store far away would.

    Yields:
        The counters of slow operations (`operations`, and the `threads` that ran them).
    """
    from kitaru_core._runtime import get_store

    store = get_store()
    slow = SlowStore(delay_s)

    def slowly(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            slow.slow_down()
            return function(*args, **kwargs)

        return run

    names = [
        name
        for name in dir(type(store))
        if not name.startswith("_") and name not in _STORE_METHODS_NOT_SLOWED and callable(getattr(store, name))
    ]
    targets: list[tuple[Any, str]] = [(store, name) for name in names]
    targets += [(store.artifacts, "put"), (store.artifacts, "get")]
    for owner, name in targets:
        setattr(owner, name, slowly(getattr(owner, name)))
    try:
        yield slow
    finally:
        for owner, name in targets:
            delattr(owner, name)  # the class's method again


def _cpu_queue_wait_s() -> float:
    """Seconds the calling thread has waited for a CPU while runnable (Linux schedstat), else 0."""
    try:
        with open("/proc/thread-self/schedstat", encoding="ascii") as handle:
            return int(handle.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class LoopLagMeter:
    """Measure how late the event loop runs a 10 ms heartbeat while the code inside runs.

    Use as `async with LoopLagMeter() as meter:`; afterwards `meter.max_lag_s` is the largest
    overshoot of one 10 ms sleep in seconds, and `meter.ticks` how many sleeps were measured.

    On a machine with more runnable threads than CPUs a woken loop can wait tens of milliseconds
    for a CPU, however free it is. On Linux the loop thread's CPU queue wait during each tick
    (`/proc/thread-self/schedstat`, second field) is taken off that tick's overshoot: what remains
    is the time the loop was busy or blocked, the lag the code under test causes (a store call
    sleeping on the loop's thread is blocked, not queued, so it counts in full). `max_raw_lag_s`
    keeps the clock's figure.
    """

    def __init__(self) -> None:
        self.max_lag_s = 0.0
        """The largest overshoot of one tick not spent waiting for a CPU (what blocking adds), in seconds."""
        self.max_raw_lag_s = 0.0
        """The largest overshoot of one tick as the clock saw it (with waiting for a CPU), in seconds."""
        self.ticks = 0
        self.late_stacks: list[str] = []
        """Where the loop's thread was while a tick was late by over half the bound (for failure messages)."""
        self._task: asyncio.Task[None] | None = None
        self._last_tick_s = time.monotonic()
        self._stop = threading.Event()
        self._loop_thread = threading.get_ident()
        self._watchdog = threading.Thread(target=self._watch, name="loop-lag-watchdog", daemon=True)
        self._gc_was_enabled = True

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            queued_before_s = _cpu_queue_wait_s()
            self._last_tick_s = time.monotonic()
            await asyncio.sleep(TICK_S)
            lag_s = loop.time() - before - TICK_S
            self.max_raw_lag_s = max(self.max_raw_lag_s, lag_s)
            self.max_lag_s = max(self.max_lag_s, lag_s - (_cpu_queue_wait_s() - queued_before_s))
            self.ticks += 1

    def _watch(self) -> None:
        while not self._stop.wait(TICK_S / 2):
            names = {thread.ident: thread.name for thread in threading.enumerate()}
            if time.monotonic() - self._last_tick_s > TICK_S + MAX_LAG_S / 2:
                frames = sys._current_frames()  # pyright: ignore[reportPrivateUsage]
                if len(self.late_stacks) < 20:
                    self.late_stacks.append(
                        "\n".join(
                            f"[{names.get(ident, ident)}]\n" + "".join(traceback.format_stack(frame)[-4:])
                            for ident, frame in frames.items()
                            if ident != threading.get_ident()
                        )
                    )

    async def __aenter__(self) -> LoopLagMeter:
        # The cyclic garbage collector is paused while measuring: a collection (e.g. of the
        # SQLAlchemy event listeners earlier tests left behind) can stop any thread for hundreds of
        # ms (seen once in CI: 335 ms inside SQLAlchemy's `_collection_gced`), and that is not the
        # store I/O this meter is about.
        gc.collect()
        self._gc_was_enabled = gc.isenabled()
        gc.disable()
        self._loop_thread = threading.get_ident()
        self._task = asyncio.create_task(self._beat())
        await asyncio.sleep(0)  # the heartbeat starts before the measured code
        self._watchdog.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._stop.set()
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task
        if self._gc_was_enabled:
            gc.enable()


def assert_loop_stayed_free(meter: LoopLagMeter, slow: SlowStore, *, at_least: int = 3) -> None:
    """Assert the measured code recorded through the slow store and the loop never lagged past the bound."""
    assert slow.operations >= at_least, f"only {slow.operations} slow store operations: nothing was recorded"
    assert meter.ticks > 0
    assert meter.max_lag_s < MAX_LAG_S, (
        f"the event loop lagged {meter.max_lag_s * 1000:.0f} ms (bound {MAX_LAG_S * 1000:.0f} ms; "
        f"{meter.max_raw_lag_s * 1000:.0f} ms with waiting for a CPU) "
        f"while {slow.operations} store operations took {slow.delay_s * 1000:.0f} ms each; the loop's "
        f"thread meanwhile:\n" + "\n---\n".join(meter.late_stacks[:3])
    )
    assert "MainThread" not in slow.threads, "store I/O ran on the event loop's thread"
