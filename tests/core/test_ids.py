"""One id grammar at every entry point, unambiguous idempotency keys, private store files (issue 10)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kitaru_core
from kitaru_core import Client, checkpoint, durable_run, execution, flow, idempotency_key, scope, wait
from kitaru_core._ids import MAX_ID_CHARACTERS, check_execution_id, check_wait_name, fit_name
from kitaru_core.errors import ConfigurationError, ExecutionWaitingError, InvalidIdError

HOSTILE_IDS = [
    "a/b",
    "../../other-execution",
    "%2F..%2Fx",
    'it\'s "quoted"',
    "<script>alert(1)</script>",
    "semi;colon && rm -rf ~",
    "ünïcödé ✓ 注文",
    "x" * MAX_ID_CHARACTERS,
]

INVALID_IDS = [
    "",
    " leading",
    "trailing ",
    "new\nline",
    "tab\there",
    "nul\x00byte",
    "bidi\u202eoverride",
    "zero\u200bwidth",
    "x" * (MAX_ID_CHARACTERS + 1),
]


@checkpoint
def double(value: int) -> int:
    return value * 2


@flow
def doubling(value: int) -> int:
    return double(value) + double(value + 1)


# -- the grammar -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE_IDS)
def test_hostile_but_printable_ids_are_valid(value: str) -> None:
    assert check_execution_id(value) == value
    assert check_wait_name(value) == value


@pytest.mark.parametrize("value", [*INVALID_IDS, 42, None])
def test_invalid_ids_are_refused_with_the_rule_that_was_broken(value: object) -> None:
    with pytest.raises(InvalidIdError, match="not a valid execution id") as caught:
        check_execution_id(value)
    assert "1 to 200 characters" in str(caught.value)
    assert isinstance(caught.value, ConfigurationError)
    assert isinstance(caught.value, ValueError)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_fit_name_always_gives_a_valid_name_and_keeps_valid_ones(name: str) -> None:
    fitted = fit_name(name)
    assert check_wait_name(fitted) == fitted
    try:
        check_wait_name(name)
    except InvalidIdError:
        assert fitted != name
    else:
        assert fitted == name


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.text(max_size=300))
def test_fit_name_never_merges_two_names(first: str, second: str) -> None:
    if first != second:
        assert fit_name(first) != fit_name(second)


# -- at every entry point, on every backend ---------------------------------------------------------


@pytest.mark.parametrize("execution_id", INVALID_IDS)
def test_every_entry_point_refuses_an_invalid_execution_id(store_url: str, execution_id: str) -> None:
    with pytest.raises(InvalidIdError), execution(execution_id):
        pass
    with pytest.raises(InvalidIdError):
        doubling.run(3, execution_id=execution_id)
    with pytest.raises(InvalidIdError), durable_run("agent", execution_id=execution_id):
        pass
    assert Client().list_executions() == []  # nothing was created


@pytest.mark.parametrize("execution_id", HOSTILE_IDS)
def test_a_hostile_valid_id_is_an_idempotency_key_on_every_backend(store_url: str, execution_id: str) -> None:
    assert doubling.run(5, execution_id=execution_id) == 22
    assert doubling.run(5, execution_id=execution_id) == 22  # completed: served, not run again
    detail = Client().get_execution(execution_id)
    assert detail.status == "completed"
    assert [call.status for call in detail.calls] == ["completed", "completed"]


def test_a_wait_name_is_checked_where_it_is_given(sqlite_file_store: str) -> None:
    with pytest.raises(InvalidIdError, match="not a valid wait name"), execution("asks"):
        wait("approve\nrefund", question="?", schema=bool)
    with pytest.raises(ExecutionWaitingError), execution("asks-2"):
        wait("approve/refund ../../x", question="?", schema=bool)
    assert [view.name for view in Client().pending_waits("asks-2")] == ["approve/refund ../../x"]


def test_an_approval_wait_name_from_a_hostile_tool_call_id_is_valid_and_distinct() -> None:
    ordinary = kitaru_core.approval_wait_name("refund", "call_abc123")
    assert ordinary == "approve:refund:call_abc123"  # unchanged: names stored by 0.1 still match
    hostile = [
        kitaru_core.approval_wait_name("refund", call_id)
        for call_id in ["x" * 500, "x" * 499 + "y", "a\nb", "a\rb", " padded "]
    ]
    for name in hostile:
        assert check_wait_name(name) == name
    assert len(set(hostile)) == len(hostile)


# -- idempotency keys ------------------------------------------------------------------------------


def test_idempotency_keys_of_two_executions_never_collide(sqlite_file_store: str) -> None:
    """Before, `a/b:0` + call `c:0` and `a` + call `b:0/c:0` both gave `a/b:0/c:0`."""
    keys: list[str] = []

    @checkpoint(name="c")
    def charge() -> str:
        key = idempotency_key()
        keys.append(key)
        return key

    with execution("a/b:0"):
        charge()
    with execution("a"), scope("b"):
        charge()
    assert keys == ["a%2Fb:0/c:0", "a/b:0/c:0"]


valid_ids = st.text(min_size=1, max_size=60).filter(lambda text: text == fit_name(text))


@settings(max_examples=100, deadline=None)
@given(valid_ids, st.text(alphabet="ab/:%", min_size=1, max_size=8))
def test_an_idempotency_key_splits_back_into_its_execution_and_call(
    execution_id: str, scope_name: str
) -> None:
    kitaru_core.configure(store_url="sqlite://", artifacts_url="memory://ids", reset=True)
    try:
        with execution(execution_id, fresh=False), scope(scope_name) as scope_key:
            with_key = checkpoint(name="c")(idempotency_key)
            key = with_key()
    finally:
        kitaru_core.configure(reset=True)
    encoded_id, _, call_key = key.partition("/")
    assert unquote(encoded_id) == execution_id
    assert call_key == f"{scope_key}/c:0"


# -- the store is private ----------------------------------------------------------------------------


def test_the_default_store_folder_and_database_are_private(tmp_path: Path) -> None:
    """A fresh project: `.kitaru/` is created 0700, the database 0600, artifacts 0700."""
    script = textwrap.dedent(
        """
        import kitaru_core
        from kitaru_core import checkpoint, flow

        @checkpoint
        def big() -> str:
            return "x" * 200_000  # past the inline limit: goes to the artifact store

        @flow
        def run() -> int:
            return len(big())

        print(run())
        """
    )
    environment = {name: value for name, value in os.environ.items() if not name.startswith("KITARU_")}
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "200000"

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    folder = tmp_path / ".kitaru"
    assert mode(folder) == 0o700
    assert mode(folder / "kitaru.db") == 0o600
    assert mode(folder / "artifacts") == 0o700
    for wal in folder.glob("kitaru.db-*"):  # SQLite gives its WAL and shared memory the database's mode
        assert mode(wal) == 0o600
