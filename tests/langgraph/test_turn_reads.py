"""What a run on a long thread reads to find its turn: the turn markers, not every stored call.

A graph without a checkpointer numbers the turns of a thread with marker calls (`langgraph:turn`).
Finding the turn of the next run reads those markers with one key-range query
(`Client.list_calls(key_prefix=...)`), so a thread with thousands of stored calls costs the same
few statements as a new one. Counted with SQLAlchemy events, never timed.
"""

from __future__ import annotations

import operator
import re
from typing import Annotated, Any

import pytest
import sqlalchemy
from langgraph.graph import START, StateGraph
from sqlalchemy import event
from typing_extensions import TypedDict

from kitaru_adapters.langgraph import durable
from kitaru_adapters.langgraph._graph import TURN, _next_turn  # pyright: ignore[reportPrivateUsage]
from kitaru_core import Client, checkpoint
from kitaru_core._runtime import get_store

STORED_CALLS = 2_000


class Work(TypedDict):
    count: int
    notes: Annotated[list[str], operator.add]


@checkpoint(name="note")
def note(index: int) -> str:
    return f"note {index} " + "x" * 200


def note_taker() -> Any:
    """A graph whose one node records `count` checkpoint calls."""

    def take_notes(state: Work) -> dict[str, list[str]]:
        return {"notes": [note(index)[:8] for index in range(state["count"])]}

    return durable(StateGraph(Work).add_node("take", take_notes).add_edge(START, "take").compile(name="notes"))


class Statements:
    """The SQL statements an engine runs inside the block, with their parameters (SQLAlchemy events)."""

    def __init__(self, engine: sqlalchemy.Engine) -> None:
        self.engine = engine
        self.run: list[tuple[str, Any]] = []

    def _statement(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        self.run.append((" ".join(statement.split()), parameters))

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._statement)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)

    def reading_calls(self) -> list[tuple[str, Any]]:
        """The statements that read whole checkpoint call records (their outputs included)."""
        return [
            (sql, parameters)
            for sql, parameters in self.run
            if sql.startswith("SELECT") and "kitaru_checkpoint_calls.output," in sql
        ]


def _plan(engine: sqlalchemy.Engine, sql: str, parameters: Any) -> str:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, parameters).all()
    return " | ".join(str(row[-1]) for row in rows)


def test_finding_the_turn_of_a_long_thread_reads_the_turn_markers_only(shared_store: str) -> None:
    graph = note_taker()
    config = {"configurable": {"thread_id": "long-thread"}}
    assert len(graph.invoke({"count": STORED_CALLS, "notes": []}, config)["notes"]) == STORED_CALLS
    calls = Client().get_execution("long-thread").calls
    assert len(calls) == STORED_CALLS + 1  # the notes and turn 1's marker
    new_input = {"count": 1, "notes": []}
    engine = get_store().engine

    with Statements(engine) as statements:
        number, _digest = _next_turn("long-thread", new_input)

    assert number == 2  # another input: the thread's next turn
    # The execution's record, then its turn markers: two statements, whatever the thread holds
    # (`get_execution` read every call, wait, audit event and artifact: 6 statements and 2,001
    # call records with their outputs).
    assert len(statements.run) == 2, statements.run
    ((sql, parameters),) = statements.reading_calls()
    where = sql.partition(" WHERE ")[2]
    assert re.search(r"call_key( COLLATE \"C\"\))? >= .* AND .*call_key( COLLATE \"C\"\))? < ", where), sql
    assert f"{TURN}:" in str(parameters), parameters
    if engine.dialect.name == "sqlite":  # the range is read from the index, not the thread's calls
        plan = _plan(engine, sql, parameters)
        assert "USING INDEX ix_kitaru_checkpoint_calls_execution (execution_id=? AND call_key>? AND call_key<?)" in (
            plan
        ), plan


def test_a_new_turn_on_a_long_thread_loads_no_stored_call_record(shared_store: str) -> None:
    graph = note_taker()
    config = {"configurable": {"thread_id": "long-thread"}}
    graph.invoke({"count": STORED_CALLS, "notes": []}, config)

    with Statements(get_store().engine) as statements:
        state = graph.invoke({"count": 2, "notes": []}, config)

    assert state["notes"] == ["note 0 x", "note 1 x"]  # turn 2 ran live: its keys are its own
    # Whole call records (with outputs) are read only for the turn markers: the resume keeps an
    # index of keys for the rest (before: every call of the thread, outputs included).
    reads = statements.reading_calls()
    assert len(reads) == 1, reads
    assert f"{TURN}:" in str(reads[0][1]), reads
    turns = [call.key for call in Client().list_calls("long-thread", key_prefix=f"{TURN}:")]
    assert [key.rpartition(":")[2].partition(".")[0] for key in turns] == ["1", "2"]
    assert [call.key for call in Client().get_execution("long-thread").calls][-2:] == [
        "turn:2/note:0",
        "turn:2/note:1",
    ]


@pytest.mark.parametrize("same_input", [True, False], ids=["same-input", "new-input"])
def test_the_turn_found_is_the_one_the_whole_timeline_gives(shared_store: str, same_input: bool) -> None:
    graph = note_taker()
    config = {"configurable": {"thread_id": "turns"}}
    for count in (1, 2, 3):
        graph.invoke({"count": count, "notes": []}, config)
    number, _digest = _next_turn("turns", {"count": 3 if same_input else 4, "notes": []})
    markers = [call for call in Client().get_execution("turns").calls if call.name == TURN]
    assert len(markers) == 3
    assert number == (3 if same_input else 4)
