"""Kill a child process with SIGKILL while it is inside a checkpoint call's body (shared by the test packages)."""

from __future__ import annotations

import select
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest


def kill_when_inside(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    marker: str = "INSIDE",
    before_kill: Callable[[], None] | None = None,
    timeout_s: float = 60,
) -> None:
    """Run `command` until it prints the line `marker` (its body is running), then SIGKILL it there.

    `before_kill` runs between the two, e.g. to wait until a parallel sibling call has committed.
    """
    with subprocess.Popen(
        list(command), env=dict(env), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        deadline = time.monotonic() + timeout_s
        line = ""
        while time.monotonic() < deadline and child.poll() is None and not line:
            ready, _, _ = select.select([child.stdout], [], [], 0.1)
            if ready:
                line = child.stdout.readline().strip()
        if line != marker:
            child.kill()
            _, stderr = child.communicate(timeout=10)
            pytest.fail(
                f"the child did not reach the body (printed {line!r} instead of {marker!r}):\n{stderr}"
            )
        if before_kill is not None:
            before_kill()
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
