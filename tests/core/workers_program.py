"""Flows the worker tests submit; run as a program it is a plain runner of `counted` (to be SIGKILLed).

Every checkpoint body appends one line to a side-effect file `<directory>/<name>-<i>`, so a call
that ran twice shows two lines. A body waits, before its side effect, while a file
`<directory>/hold-<name>-<i>` exists: a test holds a run there to kill or stop it mid-call.

    python workers_program.py NAME CALLS DIRECTORY    # runs counted(NAME, CALLS, DIRECTORY) as execution NAME
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

from kitaru_core import ExecutionRetryPolicy, checkpoint, flow, wait


@checkpoint
def step(directory: str, name: str, index: int, pause_s: float = 0.0) -> int:
    """One call with a counted side effect; it waits first while its hold file exists, then `pause_s`."""
    folder = Path(directory)
    (folder / f"started-{name}-{index}").write_text(str(os.getpid()))
    while (folder / f"hold-{name}-{index}").exists():
        time.sleep(0.02)
    time.sleep(pause_s)
    with open(folder / f"{name}-{index}", "a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()}\n")
    return index


@flow
def counted(name: str, calls: int, directory: str, pause_s: float = 0.0) -> int:
    """`calls` checkpoint calls in a row (each pausing `pause_s`); returns their sum."""
    return sum(step(directory, name, index, pause_s) for index in range(calls))


@checkpoint
def nonced_step(directory: str, name: str, index: int, pause_s: float = 0.0) -> str:
    """A call that appends a fresh nonce (`<pid>-<random hex>`) to `<directory>/<name>-<i>` and returns it.

    The store keeps the nonce of the body whose call was committed, so a test can tell which line
    of the side-effect file that body wrote: a line after it is a body that ran after the commit.
    """
    time.sleep(pause_s)
    nonce = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    with open(Path(directory) / f"{name}-{index}", "a", encoding="utf-8") as handle:
        handle.write(f"{nonce}\n")
    return nonce


@flow
def nonced(name: str, calls: int, directory: str, pause_s: float = 0.0) -> list[str]:
    """`calls` nonce-writing checkpoint calls in a row (each pausing `pause_s`); returns their nonces."""
    return [nonced_step(directory, name, index, pause_s) for index in range(calls)]


@flow
def approved(name: str, directory: str) -> str:
    """A call, a wait for a yes or no, and a call after it."""
    step(directory, name, 0)
    answer = wait("go-on", question="Go on?", schema=bool)
    step(directory, name, 1)
    return f"go on: {answer}"


@checkpoint
def timed(directory: str, name: str, pause_s: float) -> None:
    """A call that writes when it started and ended to `<directory>/interval-<name>`."""
    started = time.time()
    time.sleep(pause_s)
    with open(Path(directory) / f"interval-{name}", "a", encoding="utf-8") as handle:
        handle.write(f"{started} {time.time()}\n")


@flow
def timed_run(name: str, directory: str, pause_s: float = 0.3) -> str:
    """One timed call."""
    timed(directory, name, pause_s)
    return name


class ProviderError(Exception):
    """An error that carries an HTTP status, as provider SDKs' errors do."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


@checkpoint
def flaky(directory: str, name: str, failures: int, status_code: int) -> str:
    """Appends a line to `<directory>/<name>-flaky` per attempt; the first `failures` attempts raise.

    `status_code` 0 raises a plain `ValueError` (a bug), else a `ProviderError` with that status.
    """
    path = Path(directory) / f"{name}-flaky"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()} {time.time()!r}\n")
    if len(path.read_text().splitlines()) <= failures:
        if status_code == 0:
            raise ValueError(f"{name}: a bug")
        raise ProviderError(status_code)
    return "ok"


@flow(retry=ExecutionRetryPolicy(max_attempts=3, initial_delay_s=0.2, jitter=0.0))
def retried(name: str, directory: str, failures: int, status_code: int = 503) -> str:
    """A call, then a call that fails `failures` times; a worker retries the execution by error class."""
    step(directory, name, 0)
    return flaky(directory, name, failures, status_code)


if __name__ == "__main__":
    counted.run(sys.argv[1], int(sys.argv[2]), sys.argv[3], execution_id=sys.argv[1])
