"""The store's cost, counted rather than timed: which index a list query uses, statements and commits per operation."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy

from kitaru_core import _tables as tables
from kitaru_core._store import Store


def _plan(store: Store, **filters: Any) -> str:
    """The query plan of `Store.list_executions(**filters)`'s page query, as one line."""
    t = tables.executions
    query = (
        sqlalchemy.select(t)
        .where(
            *Store._execution_filters(  # pyright: ignore[reportPrivateUsage]
                filters.get("statuses", ()), filters.get("flow_name"), filters.get("created_after_epoch_s"), None
            )
        )
        .order_by(t.c.created_at_epoch_s.desc(), t.c.id)
        .limit(50)
    )
    compiled = str(query.compile(dialect=store.engine.dialect, compile_kwargs={"literal_binds": True}))
    with store.engine.begin() as connection:
        if store.engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + compiled).all()
        else:  # a tiny table: make the planner show what it would use on a large one
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            connection.exec_driver_sql("SET LOCAL enable_sort = off")
            rows = connection.exec_driver_sql("EXPLAIN " + compiled).all()
    return " | ".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        ({}, "ix_kitaru_executions_created"),
        ({"statuses": ["failed"]}, "ix_kitaru_executions_status_created"),
        ({"flow_name": "f"}, "ix_kitaru_executions_flow_created"),
        ({"created_after_epoch_s": 1.0}, "ix_kitaru_executions_created"),
    ],
)
def test_a_page_of_the_executions_list_is_read_from_an_index_in_list_order(
    shared_store: str, tmp_path: Any, filters: dict[str, Any], index: str
) -> None:
    store = Store(shared_store, str(tmp_path / "artifacts"))
    try:
        plan = _plan(store, **filters)
    finally:
        store.close()
    assert index in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # SQLite: no sort, the index gives the order
    assert "Sort" not in plan, plan  # PostgreSQL: the same


class StatementCounter:
    """Counts SQL statements and commits on an engine (SQLAlchemy events), by kind."""

    def __init__(self, engine: sqlalchemy.Engine) -> None:
        self.engine = engine
        self.statements: list[str] = []
        self.commits = 0

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(" ".join(statement.split())[:60])

    def _commit(self, _conn: Any) -> None:
        self.commits += 1

    def __enter__(self) -> StatementCounter:
        sqlalchemy.event.listen(self.engine, "before_cursor_execute", self._statement)
        sqlalchemy.event.listen(self.engine, "commit", self._commit)
        return self

    def __exit__(self, *_exc: object) -> None:
        sqlalchemy.event.remove(self.engine, "before_cursor_execute", self._statement)
        sqlalchemy.event.remove(self.engine, "commit", self._commit)

    @property
    def writes(self) -> list[str]:
        return [s for s in self.statements if s.split(" ", 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}]


def test_running_a_completed_named_run_again_serves_it_with_one_commit(shared_store: str) -> None:
    from kitaru_core import Client, checkpoint, execution
    from kitaru_core._runtime import get_store

    runs: list[int] = []

    @checkpoint(name="double")
    def double(value: int) -> int:
        runs.append(value)
        return value * 2

    def run() -> list[int]:
        with execution("served-again", name="served-again"):
            return [double(value) for value in range(3)]

    assert run() == [0, 2, 4]
    with StatementCounter(get_store().engine) as counter:
        assert run() == [0, 2, 4]
    assert runs == [0, 1, 2]  # served: no body ran again
    # One commit records the served run (run count, which calls were served); no lease is taken
    # because no body runs (before: lease, served marks and finish were three commits).
    assert counter.commits == 1, counter.statements
    assert len(counter.writes) == 2, counter.writes
    detail = Client().get_execution("served-again")
    assert (detail.status, detail.run_count) == ("completed", 2)
    assert [call.source for call in detail.calls] == ["store"] * 3


def test_a_completed_flow_run_again_by_its_execution_id_costs_one_read(shared_store: str) -> None:
    from kitaru_core import checkpoint, flow
    from kitaru_core._runtime import get_store

    runs: list[int] = []

    @checkpoint(name="triple")
    def triple(value: int) -> int:
        runs.append(value)
        return value * 3

    @flow(name="read-once")
    def tripled(count: int) -> list[int]:
        return [triple(value) for value in range(count)]

    assert tripled.run(3, execution_id="read-once") == [0, 3, 6]
    with StatementCounter(get_store().engine) as counter:
        assert tripled.run(3, execution_id="read-once") == [0, 3, 6]
    assert runs == [0, 1, 2]  # the flow's body did not run: its stored output was returned
    assert counter.commits == 0, counter.statements
    assert len(counter.statements) == 1, counter.statements
    assert counter.statements[0].startswith("SELECT"), counter.statements


def test_a_served_rerun_that_reaches_a_new_call_takes_the_lease_before_its_body(shared_store: str) -> None:
    from kitaru_core import Client, checkpoint, execution
    from kitaru_core._runtime import get_store

    seen: list[tuple[str, str | None]] = []

    @checkpoint(name="step")
    def step(value: int) -> int:
        record = get_store().get_execution("grown")
        seen.append((record.status, record.lease_owner))
        return value + 1

    with execution("grown", name="grown"):
        step(1)
    seen.clear()
    with execution("grown", name="grown"):
        assert step(1) == 2  # served, no lease taken
        assert step(2) == 3  # new: the body runs under a lease taken just before it
    assert len(seen) == 1
    assert seen[0][0] == "running"
    assert seen[0][1] is not None
    detail = Client().get_execution("grown")
    assert (detail.status, detail.run_count) == ("completed", 2)
    assert [call.source for call in detail.calls] == ["store", "live"]


def test_a_served_rerun_that_raises_is_recorded_failed_as_before(shared_store: str) -> None:
    from kitaru_core import Client, checkpoint, execution

    @checkpoint(name="step")
    def step(value: int) -> int:
        return value + 1

    with execution("served-then-raises", name="served-then-raises"):
        step(1)

    def served_then_raise() -> None:
        with execution("served-then-raises", name="served-then-raises"):
            step(1)
            raise RuntimeError("after the served call")

    with pytest.raises(RuntimeError, match="after the served call"):
        served_then_raise()
    detail = Client().get_execution("served-then-raises")
    assert (detail.status, detail.run_count) == ("failed", 2)


@pytest.mark.postgres
def test_a_recorded_call_costs_one_round_trip_on_postgresql(postgres_database: str, tmp_path: Any) -> None:
    """Counted in libpq's protocol trace: each Sync or simple Query the client sends is one round trip."""
    import os
    import uuid

    import kitaru_core
    from kitaru_core import checkpoint, flow
    from kitaru_core._runtime import get_store

    @checkpoint(name="step")
    def step(value: int) -> int:
        return value + 1

    @flow(name="round-trips")
    def calls(tag: str, count: int) -> None:
        for value in range(count):
            step(value)

    kitaru_core.configure(
        store_url=postgres_database, artifacts_url=str(tmp_path / "artifacts"), lease_duration_s=600, reset=True
    )
    trace_path = tmp_path / "libpq.trace"
    trace_path.touch()
    descriptor = os.open(trace_path, os.O_WRONLY | os.O_APPEND)
    traced: list[Any] = []

    def trace(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if all(dbapi_connection.pgconn is not seen for seen in traced):
            dbapi_connection.pgconn.trace(descriptor)
            traced.append(dbapi_connection.pgconn)

    def round_trips(count: int) -> tuple[int, int]:
        os.ftruncate(descriptor, 0)
        with StatementCounter(get_store().engine) as counter:
            calls(uuid.uuid4().hex, count)
        sent = [line for line in trace_path.read_text().splitlines() if "\tF\t" in line]
        return sum(1 for line in sent if "\tSync" in line or "\tQuery" in line), len(counter.statements)

    try:
        # traced from the first checkout: the connection the calls are recorded on is kept from then
        sqlalchemy.event.listen(get_store().engine, "checkout", trace)
        calls("warm-up", 3)
        empty, empty_statements = round_trips(0)
        full, full_statements = round_trips(20)
    finally:
        for pgconn in traced:
            pgconn.untrace()
        os.close(descriptor)
        sqlalchemy.event.remove(get_store().engine, "checkout", trace)
        kitaru_core.configure(reset=True)
    # the calls' inserts go straight to the driver: SQLAlchemy sees none of them
    assert full_statements == empty_statements, (empty_statements, full_statements)
    # design.md §7: at most 2 round trips per call. Today about one (an autocommit INSERT ... RETURNING;
    # a heartbeat or an idle ping may add one now and then); before: 4 (ping, BEGIN, INSERT, COMMIT).
    # At least one: the trace saw every insert (each call's record is one round trip of its own).
    assert 20 <= full - empty <= 25, (empty, full)
