"""Control-flow signals of a run (suspend at a wait, cancel, lease lost, stop): `BaseException`s."""

from __future__ import annotations

import threading

# -- control-flow signals: BaseException so `except Exception` in agent code cannot swallow them ----


class _Signal(BaseException):
    def __init__(self, execution_id: str) -> None:
        super().__init__(execution_id)
        self.execution_id = execution_id


class SuspendExecution(_Signal):
    """Raised by `wait()` to stop the execution until an answer arrives (not an `Exception`)."""


class CancelExecution(_Signal):
    """Raised at the next checkpoint call of an execution that was cancelled (not an `Exception`)."""


class LeaseLost(_Signal):
    """Raised when another runner took the execution over (not an `Exception`)."""


class StopRun(_Signal):
    """Raised at the next checkpoint call after `request_stop()` (a worker shutting down; not an `Exception`).

    The run releases its lease and the execution becomes `queued` again, so a worker continues it.
    """


_stop_requested = threading.Event()


def request_stop() -> None:
    """Make runs in this process stop before their next checkpoint body (safe in a signal handler).

    The call running now finishes and is committed; the next one raises `StopRun` instead of
    starting, and the run releases its lease with the execution `queued` (see `ExecutionRun`).
    """
    _stop_requested.set()


def stop_requested() -> bool:
    """Whether `request_stop()` was called in this process."""
    return _stop_requested.is_set()


def find_signal(error: BaseException) -> _Signal | None:
    """The runtime signal in `error`, looking inside exception groups and causes."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, _Signal):
            return current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)  # pyright: ignore[reportUnknownMemberType]
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
    return None
