"""The flow the worker recovery tests submit; run as a program it is a plain runner of `held_run` (to be SIGKILLed).

Every checkpoint body writes `<directory>/started-<name>-<i>` (its pid) when it starts, waits while
`<directory>/hold-<name>-<i>` exists, then appends one line to the side-effect file
`<directory>/<name>-<i>`: a nonce (`<pid>-<random hex>`), when the body started and when it ended
(epoch seconds). It returns the nonce, so the store's record of the call names the body whose
output was committed; a line after that one is a body that ran once the call had completed.

    python recovery_program.py NAME CALLS DIRECTORY    # runs held_run(NAME, CALLS, DIRECTORY) as execution NAME
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from pathlib import Path

from kitaru_core import checkpoint, flow


@checkpoint
def held_step(directory: str, name: str, index: int) -> str:
    """One call with a side effect that names its body; it waits first while its hold file exists."""
    folder = Path(directory)
    started = time.time()
    (folder / f"started-{name}-{index}").write_text(str(os.getpid()))
    while (folder / f"hold-{name}-{index}").exists():
        time.sleep(0.02)
    nonce = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    with open(folder / f"{name}-{index}", "a", encoding="utf-8") as handle:
        handle.write(f"{nonce} {started!r} {time.time()!r}\n")
    return nonce


@flow
def held_run(name: str, calls: int, directory: str) -> list[str]:
    """`calls` checkpoint calls in a row; returns their nonces."""
    return [held_step(directory, name, index) for index in range(calls)]


@checkpoint
def fatal_step(directory: str, name: str, index: int) -> str:
    """Call 0 completes; any later call kills its own process (as the out-of-memory killer would), every time."""
    folder = Path(directory)
    with open(folder / f"{name}-{index}", "a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()}\n")
    if index > 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return f"step {index}"


@flow
def fatal_run(name: str, directory: str) -> list[str]:
    """Two checkpoint calls; the second kills its process each time it runs."""
    return [fatal_step(directory, name, index) for index in range(2)]


if __name__ == "__main__":
    held_run.run(sys.argv[1], int(sys.argv[2]), sys.argv[3], execution_id=sys.argv[1])
