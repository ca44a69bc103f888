"""The waiting page reads each waiting execution's summary, not its timeline.

It shows the flow's name, the status and (for an importable flow) the "then resume" choice: all in
the execution's own record, so the page costs the same whatever the executions have recorded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from kitaru_core import checkpoint, execution, wait
from kitaru_core.errors import ExecutionWaitingError
from tests.server import flows


@checkpoint
def step(index: int) -> int:
    return index


def fifty_steps_then_wait() -> None:
    """An execution of no importable flow (no entry point) that records 50 calls, then waits."""
    with execution("named-only", name="desk"):
        for index in range(50):
            step(index)
        wait("go", question="Go on?", schema=bool)


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """The SQL statements every engine of this process runs while the test does."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(Engine, "before_cursor_execute", note)
    yield seen
    event.remove(Engine, "before_cursor_execute", note)


def test_the_waiting_page_reads_no_call_audit_event_or_artifact(api: TestClient, statements: list[str]) -> None:
    with pytest.raises(ExecutionWaitingError):
        flows.confirm.run("W-1", execution_id="importable")
    with pytest.raises(ExecutionWaitingError):
        fifty_steps_then_wait()

    statements.clear()
    page = api.get("/waiting")

    assert page.status_code == 200
    articles = re.findall(r'<article class="wait".*?</article>', page.text, re.DOTALL)
    shown = {re.search(r'data-execution="([^"]+)"', article)[1]: article for article in articles}  # type: ignore[index]
    assert set(shown) == {"importable", "named-only"}
    flow_and_status = {
        execution_id: re.findall(r"·\s*(\S+)\s*<span class=\"badge status-(\w+)\"", article)
        for execution_id, article in shown.items()
    }
    assert flow_and_status == {"importable": [("confirm", "waiting")], "named-only": [("desk", "waiting")]}
    # the "then resume" choice is offered only where the flow can be imported here (entry point)
    assert "then resume the execution" in shown["importable"]
    assert "then resume the execution" not in shown["named-only"]
    read_tables = {table for sql in statements for table in re.findall(r"FROM (kitaru_\w+)", sql)}
    assert read_tables.isdisjoint({"kitaru_checkpoint_calls", "kitaru_audit_events", "kitaru_artifacts"}), statements
