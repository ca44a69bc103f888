"""A store written by schema revision 0001, committed as a file: every later version must open it,
migrate it if needed, and resume the execution inside without running its completed call again.

Regenerate only on purpose: `python tests/conformance/test_golden_store.py` writes
`golden/store-0001.sqlite` (an execution `golden-1` waiting at `go` after one completed call).
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import kitaru_core
from kitaru_core import Client, checkpoint, configure, flow, wait

GOLDEN = Path(__file__).resolve().parent / "golden" / "store-0001.sqlite"
runs: Counter[str] = Counter()


@checkpoint
def draft(ticket: str) -> str:
    runs["draft"] += 1
    return f"draft for {ticket}"


@flow(name="golden-store-flow")
def reply(ticket: str) -> str:
    text = draft(ticket)
    if wait("go", question=f"Send {text!r}?", schema=bool):
        return f"sent: {text}"
    return "not sent"


def test_a_store_written_by_revision_0001_resumes(tmp_path: Path) -> None:
    database = tmp_path / "kitaru.db"
    shutil.copy(GOLDEN, database)
    configure(store_url=f"sqlite:///{database}", artifacts_url=str(tmp_path / "artifacts"), reset=True)
    try:
        client = Client()
        [execution] = client.list_executions()
        assert (execution.id, execution.status) == ("golden-1", "waiting")
        assert [call.key for call in client.get_execution("golden-1").calls] == ["draft:0"]
        client.answer("golden-1", "go", True)
        runs.clear()
        assert reply.run("T-7", execution_id="golden-1") == "sent: draft for T-7"
        assert runs == Counter()  # the completed call was served from the old store
        assert client.get_execution("golden-1").status == "completed"
    finally:
        configure(reset=True)


@pytest.mark.parametrize("import_from", ["kitaru_core.adapters", "kitaru_core"])
def test_adapter_api_code_resumes_a_store_written_by_revision_0001(import_from: str, tmp_path: Path) -> None:
    """Code recording calls the way adapters do (the 0.1 import path or `kitaru_core.adapters`) resumes it.

    The completed call is served (its key and input fingerprint still match), the answered wait
    returns its answer, and the user's view of the execution counts the resumed run.
    """
    database = tmp_path / "kitaru.db"
    shutil.copy(GOLDEN, database)
    configure(store_url=f"sqlite:///{database}", artifacts_url=str(tmp_path / "artifacts"), reset=True)
    namespace: dict[str, object] = {}
    exec(f"from {import_from} import run_checkpoint", namespace)
    run_checkpoint: Any = namespace["run_checkpoint"]
    ran: list[str] = []

    def body(ticket: str) -> str:
        ran.append(ticket)
        return f"draft for {ticket}"

    try:
        client = Client()
        client.answer("golden-1", "go", True)
        with kitaru_core.execution("golden-1", name="golden-store-flow") as run:
            text = run_checkpoint("draft", body, "T-7", inputs={"ticket": "T-7"})
            answer = wait("go", question=f"Send {text!r}?", schema=bool)
        assert (text, answer, ran) == ("draft for T-7", True, [])
        assert (run.execution_id, run.flow_name, run.run_number, run.served_completed) == (
            "golden-1",
            "golden-store-flow",
            2,
            False,
        )
        assert client.get_execution("golden-1").status == "completed"
    finally:
        configure(reset=True)


def _write_golden() -> None:  # pragma: no cover - run by hand
    GOLDEN.unlink(missing_ok=True)
    configure(store_url=f"sqlite:///{GOLDEN}", artifacts_url="memory://golden", reset=True)
    with pytest.raises(kitaru_core.errors.ExecutionWaitingError):
        reply.run("T-7", execution_id="golden-1")
    from kitaru_core import _runtime

    _runtime.get_store().engine.dispose()
    import sqlite3

    with sqlite3.connect(GOLDEN) as connection:  # fold the WAL into the file
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("PRAGMA journal_mode=DELETE")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    _write_golden()
