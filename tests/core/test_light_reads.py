"""Light reads of one execution: `Client.get_summary` and `Client.list_calls(key_prefix=...)`.

Both answer what `get_execution` answers for the part they read, at a cost that does not follow
the execution's size: the summary is one statement, the calls under a key prefix one key-range
query (on every backend, and on PostgreSQL whatever the database's collation).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

import kitaru_core
from kitaru_core import Client, execution, flow, scope
from kitaru_core._runtime import get_store
from kitaru_core.adapters import run_checkpoint
from kitaru_core.errors import ExecutionNotFoundError
from tests.conftest import POSTGRES_URL, REQUIRE_POSTGRES, postgres_available
from tests.core.test_store_performance import StatementCounter

# Names chosen to trip a prefix read: LIKE wildcards, case, the character right after `:` (`;`),
# characters that a linguistic collation orders apart from their bytes, the code points around
# the surrogates and the last code point.
NAMES = [
    "turn",
    "Turn",
    "turnover",
    "turn;x",
    "tu%n",
    "tu_n",
    "a-a",
    "a-z",
    "ab",
    "a.",
    "é",
    "e",
    "\ud7ff",
    "\ue000",
    "\U0010ffff",
    "x\U0010ffff",
    "y",
]


def record_calls(execution_id: str) -> None:
    """An execution whose call keys are `NAMES` (`name:1`, `name:2`), a scope, and one superseded record."""

    def stop_after_one_call() -> None:
        with execution(execution_id, name="keys"):
            run_checkpoint("step", lambda: 1, inputs={"version": 1})
            raise RuntimeError("stop before the end, so the next run resumes it")

    with pytest.raises(RuntimeError):
        stop_after_one_call()
    with execution(execution_id, name="keys"):
        run_checkpoint("step", lambda: 2, inputs={"version": 2})  # the first record is superseded
        for name in NAMES:
            for discriminator in ("1", "2"):
                run_checkpoint(name, str, name, discriminator=discriminator, inputs=None)
        with scope("turn", discriminator="3"):
            run_checkpoint("model_request", lambda: "inside", inputs=None)


def prefixes(keys: list[str]) -> list[str]:
    """Every prefix of every key, and a few that match nothing."""
    every = {key[:end] for key in keys for end in range(len(key) + 1)}
    return sorted(every | {"turn:4", "zzz", "\U0010ffff\U0010ffff", "turn:3/model_request:0/"})


def test_list_calls_keeps_exactly_the_calls_whose_key_starts_with_the_prefix(store_url: str) -> None:
    record_calls("keys-1")
    client = Client()
    timeline = client.get_execution("keys-1").calls
    keys = [call.key for call in timeline]
    assert "turn:3/model_request:0" in keys
    assert [call.status for call in timeline].count("superseded") == 1
    for prefix in prefixes(keys):
        found = client.list_calls("keys-1", key_prefix=prefix)
        expected = [call for call in timeline if call.key.startswith(prefix)]
        assert found == expected, prefix  # same views, same order, superseded included
    assert client.list_calls("keys-1") == timeline


def test_list_calls_and_get_summary_refuse_an_unknown_execution(store_url: str) -> None:
    client = Client()
    with pytest.raises(ExecutionNotFoundError):
        client.list_calls("no-such-execution", key_prefix="turn:")
    with pytest.raises(ExecutionNotFoundError):
        client.get_summary("no-such-execution")


def test_get_summary_is_the_listed_summary_in_one_statement(store_url: str) -> None:
    record_calls("keys-2")
    client = Client()
    with StatementCounter(get_store().engine) as counter:
        summary = client.get_summary("keys-2")
    assert len(counter.statements) == 1, counter.statements
    (listed,) = client.list_executions()
    assert summary == listed
    detail = client.get_execution("keys-2")
    assert summary.model_dump() == {field: getattr(detail, field) for field in type(summary).model_fields}
    assert (summary.status, summary.run_count, summary.flow_name) == ("completed", 2, "keys")


def test_list_calls_reads_the_execution_and_one_key_range(store_url: str) -> None:
    record_calls("keys-3")
    with StatementCounter(get_store().engine) as counter:
        calls = Client().list_calls("keys-3", key_prefix="turn:")
    assert [call.key for call in calls] == ["turn:1", "turn:2", "turn:3/model_request:0"]
    assert len(counter.statements) == 2, counter.statements


@pytest.fixture
def icu_postgres_store(tmp_path: Path) -> Iterator[str]:
    """A fresh PostgreSQL database whose default collation is ICU `en-US` (the usual production setup)."""
    if not postgres_available():
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required (KITARU_REQUIRE_POSTGRES=1) but {POSTGRES_URL} does not answer.")
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} does not answer")
    name = f"kitaru_test_icu_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(
            f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        )
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    kitaru_core.configure(store_url=url, artifacts_url=str(tmp_path / "artifacts"), reset=True)
    try:
        yield url
    finally:
        kitaru_core.configure(reset=True)
        from kitaru_core._store import close_stores

        close_stores(url)
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.mark.postgres
def test_list_calls_compares_keys_by_code_point_under_a_linguistic_collation(icu_postgres_store: str) -> None:
    record_calls("keys-icu")
    engine = get_store().engine
    with engine.connect() as connection:  # the range a plain comparison would read misses the keys
        plain: Any = connection.exec_driver_sql(
            "SELECT count(*) FROM kitaru_checkpoint_calls WHERE call_key >= 'turn:' AND call_key < 'turn;'"
        ).scalar()
    assert plain == 0
    client = Client()
    timeline = client.get_execution("keys-icu").calls
    for prefix in ["turn:", "a-", "tu%", "e", "\ud7ff", "x\U0010ffff"]:
        expected = [call for call in timeline if call.key.startswith(prefix)]
        assert expected
        assert client.list_calls("keys-icu", key_prefix=prefix) == expected, prefix


@flow
def light_reads_order(order_id: int) -> int:
    return run_checkpoint("lookup", lambda: order_id * 10, inputs={"order_id": order_id})


def test_a_queued_replay_says_who_can_start_it(sqlite_file_store: str) -> None:
    """`executions replay --no-run` reads the new execution's entry point from its summary."""
    from typer.testing import CliRunner

    from kitaru_core.cli import app

    assert light_reads_order(4) == 40
    with execution("named-only", name="desk"):
        run_checkpoint("lookup", lambda: 1, inputs=None)
    flow_execution = next(summary.id for summary in Client().list_executions() if summary.id != "named-only")
    for source, expected in [
        (flow_execution, "queued on default: a worker runs it"),
        ("named-only", "queued, not started by an importable @flow"),
    ]:
        result = CliRunner().invoke(
            app, ["--store-url", sqlite_file_store, "executions", "replay", source, "--from", "1", "--no-run"]
        )
        assert result.exit_code == 0, result.output
        assert expected in " ".join(result.stdout.split()), result.stdout
