"""Flows a worker runs for the server tests, importable as `tests.server.worker_flows`.

Importing this module writes `<KITARU_TEST_IMPORT_MARKERS>/<pid>` holding the importing process's
parent pid, so a test can tell which processes imported flow code (the server must not: it hands
resumes to a worker). After its wait, `approval_then_step` writes the time its next call started
to `<directory>/<name>-resumed-at`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from kitaru_core import checkpoint, flow, request_approval

_MARKERS = os.environ.get("KITARU_TEST_IMPORT_MARKERS")
if _MARKERS:
    Path(_MARKERS, str(os.getpid())).write_text(str(os.getppid()))


@checkpoint
def record(directory: str, name: str, what: str) -> str:
    """A call with a side effect: appends to `<directory>/<name>-<what>` and writes when it started."""
    started = time.time()
    with open(Path(directory, f"{name}-{what}"), "a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()} {started!r}\n")
    return what


@flow
def approval_then_step(name: str, directory: str) -> str:
    """A call, an approval of a tool call, and a call after it (or `denied`)."""
    record(directory, name, "before")
    decision = request_approval("send", {"name": name}, call_id=f"call-{name}")
    if not decision.approved:
        return "denied"
    return record(directory, name, "resumed")


@flow
def fails_while_flag(name: str, directory: str) -> str:
    """A call, then a call that raises while `<directory>/fail-<name>` exists."""
    record(directory, name, "first")
    if Path(directory, f"fail-{name}").exists():
        raise RuntimeError(f"{name}: failing while the flag file exists")
    return record(directory, name, "second")
