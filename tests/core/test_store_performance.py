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
