"""Store faults (issue 10, items 6 and 7): retries, lost acknowledgements, SQLite locking, PostgreSQL restarts.

The PostgreSQL tests start their own cluster (initdb on a free port in a temporary folder, as the
`postgres` user when run as root), restart it and terminate its connections while a flow runs.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

import kitaru_core
from kitaru_core import Client, checkpoint, flow
from kitaru_core._runtime import get_store
from kitaru_core._store import Store, classify_fault
from kitaru_core.errors import MigrationError, StoreError

REQUIRE_POSTGRES = os.environ.get("KITARU_REQUIRE_POSTGRES") == "1"


def report(line: str) -> None:
    """Print a measured figure (shown with `pytest -s`; never asserted on)."""
    print(f"\n[figure] {line}")


# -- lost acknowledgements -------------------------------------------------------------------------


def test_every_operation_recognises_its_own_commit_when_the_acknowledgement_is_lost(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each store operation commits, then its connection "drops" before the answer: the retry must
    find its own write, so nothing is recorded twice and nothing fails on a key."""
    store = get_store()
    real = store._retrying  # pyright: ignore[reportPrivateUsage]
    dropped: list[str] = []

    def lose_first_acknowledgement(
        what: str | Callable[[], str], operation: Callable[[bool], Any], *, budget_s: float | None = None
    ) -> Any:
        first = [True]

        def attempt(retry: bool) -> Any:
            result = operation(retry)
            if first[0]:
                first[0] = False
                dropped.append(what if isinstance(what, str) else what())
                raise OperationalError(
                    "COMMIT", {}, ConnectionError("server closed the connection unexpectedly")
                )
            return result

        return real(what, attempt, budget_s=budget_s)

    monkeypatch.setattr(store, "_retrying", lose_first_acknowledgement)
    bodies: list[int] = []

    @checkpoint(name="step")
    def step(number: int) -> int:
        bodies.append(number)
        return number * 10

    @flow(name="acknowledged")
    def acknowledged() -> int:
        return sum(step(number) for number in range(3))

    assert acknowledged.run(execution_id="ack-1") == 30
    monkeypatch.undo()
    assert bodies == [0, 1, 2]
    detail = Client().get_execution("ack-1")
    assert (detail.status, detail.run_count) == ("completed", 1)
    assert [(call.key, call.status) for call in detail.calls] == [
        ("step:0", "completed"),
        ("step:1", "completed"),
        ("step:2", "completed"),
    ]
    assert any(what.startswith("record checkpoint call") for what in dropped)
    assert any(what.startswith("take the lease") for what in dropped)
    assert any(what.startswith("record the outcome") for what in dropped)


def test_faults_are_classified() -> None:
    assert (
        classify_fault(
            OperationalError("x", {}, ConnectionError("terminating connection due to administrator command"))
        )
        == "transient"
    )
    assert (
        classify_fault(OperationalError("x", {}, sqlite3.OperationalError("database is locked"))) == "locked"
    )
    assert classify_fault(OperationalError("x", {}, sqlite3.OperationalError("no such table: t"))) is None
    assert classify_fault(ValueError("not a database error")) is None


def test_a_fault_past_the_retry_budget_fails_cleanly(
    sqlite_file_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kitaru_core.configure(store_retry_budget_s=0.3)
    store = get_store()
    assert store.retry_budget_s == 0.3

    def unreachable(_retry: bool) -> None:
        raise OperationalError("SELECT 1", {}, ConnectionError("connection refused"))

    started = time.monotonic()
    with pytest.raises(StoreError, match=r"stayed unreachable for 0\.3 s .*resumes") as failed:
        store._retrying("read something", unreachable)  # pyright: ignore[reportPrivateUsage]
    report(f"budget 0.3 s: gave up after {time.monotonic() - started:.2f} s, message: {failed.value}")


# -- SQLite locking --------------------------------------------------------------------------------

HOLDER = """
import os
import signal
import sys

from sqlalchemy import update

from kitaru_core import _tables as tables, checkpoint, flow
from kitaru_core._runtime import get_store


@checkpoint(name="hold")
def hold() -> str:
    store = get_store()
    t = tables.executions
    with store._writer.begin() as connection:  # the write transaction every store write uses
        connection.execute(update(t).where(t.c.id == sys.argv[1]).values(updated_at_epoch_s=t.c.updated_at_epoch_s))
        print("IN_WRITE", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)  # paused inside the write transaction
    return "held"


@flow(name="holder")
def holder() -> str:
    return hold()


if __name__ == "__main__":
    print(holder.run(execution_id=sys.argv[1]), flush=True)
"""


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("kitaru-adapters")
    return [str(script)] if script.exists() else [sys.executable, "-m", "kitaru_core.cli"]


def stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0] == "T"


def test_a_runner_paused_inside_a_write_blocks_no_reader(sqlite_file_store: str, tmp_path: Path) -> None:
    kitaru_core.configure(sqlite_busy_timeout_s=3)
    script = tmp_path / "holder.py"
    script.write_text(HOLDER, encoding="utf-8")
    env = {
        **os.environ,
        "KITARU_STORE_URL": sqlite_file_store,
        "KITARU_ARTIFACTS_URL": str(tmp_path / "artifacts"),
    }
    with subprocess.Popen(
        [sys.executable, str(script), "held-1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as child:
        try:
            assert child.stdout is not None
            ready, _, _ = select.select([child.stdout], [], [], 60)
            assert ready
            assert child.stdout.readline().strip() == "IN_WRITE"
            deadline = time.monotonic() + 10
            while not stopped(child.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert stopped(child.pid)

            # Readers: this process's Client, and a new process (the CLI opens the store, checks
            # the schema revision, lists). A read that wanted the write lock would fail after 3 s.
            started = time.monotonic()
            (listed,) = Client().list_executions()
            client_s = time.monotonic() - started
            assert (listed.id, listed.status) == ("held-1", "running")
            started = time.monotonic()
            cli = subprocess.run(
                [*cli_command(), "--store-url", sqlite_file_store, "executions", "list", "--json"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env={**env, "KITARU_SQLITE_BUSY_TIMEOUT_S": "3"},
            )
            cli_s = time.monotonic() - started
            assert cli.returncode == 0, cli.stderr
            assert "held-1" in cli.stdout

            # A writer waits the busy timeout, then gets a StoreError naming the lease holder.
            kitaru_core.configure(sqlite_busy_timeout_s=0.5)
            started = time.monotonic()
            with pytest.raises(StoreError, match="is locked") as locked:
                Client().cancel("held-1")
            writer_s = time.monotonic() - started
            message = str(locked.value)
            assert f"pid {child.pid}" in message
            assert "sqlite_busy_timeout_s" in message
            report(
                f"SQLite runner paused inside a write: Client().list_executions() {client_s * 1000:.0f} ms, "
                f"CLI `executions list` (new process) {cli_s:.2f} s, writer refused after {writer_s:.2f} s"
            )
        finally:
            child.send_signal(signal.SIGCONT)
        stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr
    assert stdout.strip().endswith("held")


def test_a_locked_database_is_not_reported_as_a_failed_migration(tmp_path: Path) -> None:
    database = tmp_path / "locked.db"
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE busy (x INTEGER)")
    try:
        with pytest.raises(StoreError, match="is locked") as locked:
            Store(f"sqlite:///{database}", str(tmp_path / "artifacts"), sqlite_busy_timeout_s=0.3)
        assert not isinstance(locked.value, MigrationError)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store = Store(f"sqlite:///{database}", str(tmp_path / "artifacts"), sqlite_busy_timeout_s=0.3)
    assert store.list_executions() == []
    store.close()


# -- a PostgreSQL cluster of the test's own --------------------------------------------------------


class Cluster:
    """A throwaway PostgreSQL cluster on a free port (run as `postgres` when this process is root)."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.folder = Path(tempfile.mkdtemp(prefix="kitaru-pg-"))
        self.data = self.folder / "data"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, tool: str, *args: str) -> None:
        command = [str(self.binaries / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        finished = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if finished.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {finished.stdout}\n{finished.stderr}")

    def pg_ctl(self, action: str, *args: str) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.folder} -c fsync=off"
        self.run(
            "pg_ctl", action, "-D", str(self.data), "-l", str(self.folder / "log"), "-w", "-o", options, *args
        )

    def terminate_connections(self) -> int:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as admin:
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = 'postgres' AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            ).fetchall()
        return len(rows)

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


def postgres_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[4]))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    binaries = postgres_binaries()
    if binaries is None:
        if REQUIRE_POSTGRES:
            pytest.fail(
                "KITARU_REQUIRE_POSTGRES=1 but no PostgreSQL binaries under /usr/lib/postgresql/*/bin"
            )
        pytest.skip("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
    own = Cluster(binaries)
    try:
        own.pg_ctl("start")
        yield own
    finally:
        from kitaru_core._store import close_stores

        close_stores(own.url)
        own.remove()


STEPS = 60


def chaos_flow(bodies: list[tuple[int, float]], started: threading.Event) -> Any:
    @checkpoint(name="step")
    def step(number: int) -> int:
        bodies.append((number, time.monotonic()))
        started.set()
        time.sleep(0.02)
        return number

    @flow(name="pg_chaos")
    def pg_chaos(run: str) -> int:
        return sum(step(number) for number in range(STEPS))

    return pg_chaos


def in_background(action: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as error:  # reported by the test
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def largest_gap_s(bodies: list[tuple[int, float]]) -> float:
    times = [at for _, at in bodies]
    return max((later - earlier for earlier, later in itertools.pairwise(times)), default=0.0)


@pytest.mark.postgres
def test_a_postgresql_restart_mid_run_is_retried_and_the_run_completes(
    cluster: Cluster, tmp_path: Path
) -> None:
    kitaru_core.configure(
        store_url=cluster.url, artifacts_url=str(tmp_path / "artifacts"), lease_duration_s=5, reset=True
    )
    store = get_store()
    retries_before = store.retries
    bodies: list[tuple[int, float]] = []
    started = threading.Event()
    restart_s: list[float] = []

    def restart_after_ten_calls() -> None:
        while len(bodies) < 10:
            time.sleep(0.005)
        began = time.monotonic()
        cluster.pg_ctl("restart", "-m", "fast")
        restart_s.append(time.monotonic() - began)

    thread, errors = in_background(restart_after_ten_calls)
    assert chaos_flow(bodies, started)("restart") == sum(range(STEPS))
    thread.join(timeout=60)
    assert errors == []
    assert [number for number, _ in bodies] == list(range(STEPS))  # every call ran exactly once
    calls = store.load_calls(Client().list_executions()[0].id)
    assert [(call.call_key, call.status) for call in calls] == [
        (f"step:{n}", "completed") for n in range(STEPS)
    ]
    retried = store.retries - retries_before
    assert retried >= 1
    report(
        f"PostgreSQL restart (pg_ctl restart -m fast took {restart_s[0]:.2f} s): run continued, longest stall "
        f"between calls {largest_gap_s(bodies):.2f} s, {retried} retried store operations, {STEPS} calls each run once"
    )


@pytest.mark.postgres
def test_terminated_connections_mid_run_are_retried(cluster: Cluster, tmp_path: Path) -> None:
    kitaru_core.configure(
        store_url=cluster.url, artifacts_url=str(tmp_path / "artifacts"), lease_duration_s=5, reset=True
    )
    store = get_store()
    retries_before = store.retries
    bodies: list[tuple[int, float]] = []
    terminated: list[int] = []

    def terminate_three_times() -> None:
        for after in (10, 25, 40):
            while len(bodies) < after:
                time.sleep(0.005)
            terminated.append(cluster.terminate_connections())

    thread, errors = in_background(terminate_three_times)
    assert chaos_flow(bodies, threading.Event())("terminate") == sum(range(STEPS))
    thread.join(timeout=60)
    assert errors == []
    assert sum(terminated) >= 3
    assert [number for number, _ in bodies] == list(range(STEPS))
    report(
        f"pg_terminate_backend x3 ({sum(terminated)} connections): run continued, longest stall "
        f"{largest_gap_s(bodies):.2f} s, {store.retries - retries_before} retried store operations"
    )


@pytest.mark.postgres
def test_a_database_down_past_the_budget_fails_the_run_cleanly_and_it_resumes(
    cluster: Cluster, tmp_path: Path
) -> None:
    kitaru_core.configure(
        store_url=cluster.url,
        artifacts_url=str(tmp_path / "artifacts"),
        lease_duration_s=5,
        store_retry_budget_s=1.0,
        reset=True,
    )
    bodies: list[tuple[int, float]] = []
    stopped_at: list[int] = []

    def stop_after_ten_calls() -> None:
        while len(bodies) < 10:
            time.sleep(0.005)
        cluster.pg_ctl("stop", "-m", "fast")
        stopped_at.append(len(bodies))

    pg_chaos = chaos_flow(bodies, threading.Event())
    thread, errors = in_background(stop_after_ten_calls)
    try:
        with pytest.raises(StoreError, match="stayed unreachable") as failed:
            pg_chaos("down")
        thread.join(timeout=60)
        assert errors == []
    finally:
        cluster.pg_ctl("start")
    report(f"database down past a 1 s budget: {type(failed.value).__name__}: {str(failed.value)[:160]}...")
    store = get_store()
    (record,) = [
        record
        for record in store.list_executions()
        if record.flow_name == "pg_chaos" and record.status != "completed"
    ]
    completed = {call.call_key for call in store.load_calls(record.id) if call.status == "completed"}
    first_run = len(bodies)
    assert pg_chaos("down") == sum(range(STEPS))  # the same inputs resume the same execution
    ran = [number for number, _ in bodies]
    for number in range(STEPS):
        expected = 1 if f"step:{number}" in completed else (1, 2)
        assert ran.count(number) in (expected if isinstance(expected, tuple) else (expected,)), (number, ran)
    assert len(completed) >= 9
    report(
        f"resumed after the outage: {len(completed)} completed calls served, {len(bodies) - first_run} ran"
    )


def test_the_store_settings_reach_the_store(sqlite_file_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KITARU_STORE_RETRY_BUDGET_S", "2.5")
    monkeypatch.setenv("KITARU_SQLITE_BUSY_TIMEOUT_S", "4")
    store = get_store()
    assert (store.retry_budget_s, store.sqlite_busy_timeout_s) == (2.5, 4.0)
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 4000
    with pytest.raises(kitaru_core.errors.ConfigurationError, match="store_retry_budget_s"):
        kitaru_core.configure(store_retry_budget_s=-1)
    with pytest.raises(kitaru_core.errors.ConfigurationError, match="sqlite_busy_timeout_s"):
        kitaru_core.configure(sqlite_busy_timeout_s=0)
