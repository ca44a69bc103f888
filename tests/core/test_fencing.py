"""Fencing and lease identity (issue 10, items 4 and 5), with real processes stopped by SIGSTOP.

A runner paused past its lease while another runner takes over must not start one more checkpoint
body when it continues; a live process whose lease expired is taken over; a lease written by another
host id (another container with the same host name) is never judged by its pid here.

`KITARU_FENCING_TRIALS` sets the number of pause/takeover trials (default 20; `nox -s chaos_leases`
runs more).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import kitaru_core
from kitaru_core import Client, checkpoint, flow
from kitaru_core._runtime import HOST_ID, get_store
from kitaru_core.errors import ExecutionLockedError, LeaseLostError, StoreError

LEASE_S = 0.6
STEPS = 8
TRIALS = int(os.environ.get("KITARU_FENCING_TRIALS", "20"))

RUNNER = """
import sys
import time
from pathlib import Path

from kitaru_core import checkpoint, flow

BODIES = Path(sys.argv[1])
WHO = sys.argv[3]
STEPS = int(sys.argv[4])


@checkpoint(name="step")
def step(number: int) -> int:
    with BODIES.open("a") as handle:  # the side effect: one line per body start
        handle.write(f"{WHO} {number}\\n")
    time.sleep(0.05)
    return number


@flow(name="fenced")
def fenced() -> int:
    total = 0
    for number in range(STEPS):
        total += step(number)
        time.sleep(0.05)  # between checkpoint calls: a pause may land here or inside a body
    return total


if __name__ == "__main__":
    print(fenced.run(execution_id=sys.argv[2]), flush=True)
"""


def successor_flow(bodies: Path) -> Any:
    """The runner's flow, run in this process by the runner that takes over."""

    @checkpoint(name="step")
    def step(number: int) -> int:
        with bodies.open("a") as handle:
            handle.write(f"successor {number}\n")
        return number

    @flow(name="fenced")
    def fenced() -> int:
        return sum(step(number) for number in range(STEPS))

    return fenced


def body_starts(bodies: Path, who: str) -> list[int]:
    if not bodies.exists():
        return []
    return [int(line.split()[1]) for line in bodies.read_text().splitlines() if line.split()[0] == who]


def wait_until(condition: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the runner")
        time.sleep(0.01)


@contextmanager
def runner(
    tmp_path: Path, store_url: str, execution_id: str, bodies: Path, steps: int = STEPS
) -> Iterator[subprocess.Popen[str]]:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER, encoding="utf-8")
    env = {
        **os.environ,
        "KITARU_STORE_URL": store_url,
        "KITARU_ARTIFACTS_URL": str(tmp_path / "artifacts"),
        "KITARU_LEASE_DURATION_S": str(LEASE_S),
    }
    with subprocess.Popen(
        [sys.executable, str(script), str(bodies), execution_id, "paused", str(steps)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    ) as child:
        try:
            yield child
        finally:
            if child.poll() is None:
                child.send_signal(signal.SIGCONT)
                child.kill()
            child.wait(timeout=10)


def all_threads_stopped(pid: int) -> bool:
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "T":
            return False
    return True


def pause_outside_a_write(child: subprocess.Popen[str], store_url: str) -> None:
    """SIGSTOP the runner, but not while it holds SQLite's write lock (that blocks every writer: see
    test_store_faults.py); then continue it briefly and stop it again."""
    database = store_url.split("///", 1)[1]
    while True:
        child.send_signal(signal.SIGSTOP)
        wait_until(lambda: all_threads_stopped(child.pid), timeout_s=10)  # the signal is asynchronous
        probe = sqlite3.connect(database, timeout=0.2, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            child.send_signal(signal.SIGCONT)
            time.sleep(0.01)
        finally:
            probe.close()


def test_a_runner_paused_past_its_lease_starts_no_stale_body(sqlite_file_store: str, tmp_path: Path) -> None:
    kitaru_core.configure(lease_duration_s=LEASE_S, sqlite_busy_timeout_s=5)
    rng = random.Random(10)
    stale: list[int] = []
    lost = 0
    for trial in range(TRIALS):
        bodies = tmp_path / f"bodies-{trial}.txt"
        execution_id = f"fenced-{trial}"
        with runner(tmp_path, sqlite_file_store, execution_id, bodies) as child:
            wait_until(lambda: len(body_starts(bodies, "paused")) >= 2)  # noqa: B023
            time.sleep(rng.uniform(0.0, 0.12))  # lands inside a body or between two calls
            pause_outside_a_write(child, sqlite_file_store)
            started_before_pause = len(body_starts(bodies, "paused"))
            time.sleep(LEASE_S + 0.3)  # the paused runner's lease expires
            assert successor_flow(bodies).run(execution_id=execution_id) == sum(range(STEPS))
            child.send_signal(signal.SIGCONT)
            _, stderr = child.communicate(timeout=30)
        stale.append(len(body_starts(bodies, "paused")) - started_before_pause)
        if child.returncode != 0:
            assert "LeaseLostError" in stderr, stderr
            lost += 1
        calls = Client().get_execution(execution_id).calls
        assert sorted(call.key for call in calls if call.status == "completed") == sorted(
            f"step:{number}" for number in range(STEPS)
        )
    print(
        f"\nfencing: {sum(stale)} stale bodies in {TRIALS} trials; {lost} paused runners stopped with LeaseLostError"
    )
    assert sum(stale) == 0, stale
    assert lost == TRIALS  # every continued runner found its lease gone and stopped


def set_lease(
    execution_id: str,
    *,
    host: str,
    host_id: str,
    pid: int,
    expires_at_epoch_s: float,
    process_start_ticks: int | None = None,
) -> None:
    with get_store().engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE kitaru_executions SET status = 'running', lease_owner = 'elsewhere', "
                "lease_host = :host, lease_host_id = :host_id, lease_pid = :pid, "
                "lease_process_start_ticks = :start, lease_expires_at_epoch_s = :expires WHERE id = :id"
            ),
            {
                "host": host,
                "host_id": host_id,
                "pid": pid,
                "start": process_start_ticks,
                "expires": expires_at_epoch_s,
                "id": execution_id,
            },
        )


def test_a_live_process_whose_lease_expired_is_taken_over(sqlite_file_store: str, tmp_path: Path) -> None:
    kitaru_core.configure(lease_duration_s=LEASE_S)
    bodies = tmp_path / "bodies.txt"
    with runner(tmp_path, sqlite_file_store, "hung", bodies, steps=200) as child:
        wait_until(lambda: len(body_starts(bodies, "paused")) >= 1)
        child.send_signal(signal.SIGSTOP)  # hung: the process exists, its heartbeat stopped
        record = get_store().get_execution("hung")
        assert (record.lease_host_id, record.lease_pid) == (HOST_ID, child.pid)
        assert record.lease_process_start_ticks is not None
        with pytest.raises(ExecutionLockedError):  # while its lease lasts, it is honoured
            successor_flow(bodies).run(execution_id="hung")
        assert Client().recover() == []
        time.sleep(LEASE_S + 0.3)
        assert os.path.exists(f"/proc/{child.pid}")  # still there, stopped
        assert Client().recover() == ["hung"]  # recover no longer waits for the process to die
        assert Client().get_execution("hung").status == "failed"
        assert successor_flow(bodies).run(execution_id="hung") == sum(range(STEPS))
        child.send_signal(signal.SIGCONT)
        _, stderr = child.communicate(timeout=30)
    assert child.returncode != 0
    assert "LeaseLostError" in stderr, stderr
    assert Client().get_execution("hung").status == "completed"


def leased_elsewhere(execution_id: str, **lease: Any) -> Any:
    """A flow whose execution `execution_id` exists with the given lease."""

    @flow(name="leased")
    def leased() -> str:
        return "ran here"

    get_store().create_execution(
        execution_id, flow_name="leased", entry_point=None, inputs_fingerprint=None, inputs=None
    )
    set_lease(execution_id, **lease)
    return leased


def dead_pid() -> int:
    probe = subprocess.Popen([sys.executable, "-c", "pass"])
    probe.wait()
    return probe.pid


def test_a_reused_pid_on_this_host_does_not_keep_a_lease(sqlite_file_store: str) -> None:
    # pid 1 lives, but it is not the process that took the lease: its start time differs.
    leased = leased_elsewhere(
        "reused",
        host=socket.gethostname(),
        host_id=HOST_ID,
        pid=1,
        expires_at_epoch_s=time.time() + 60,
        process_start_ticks=-1,
    )
    assert leased.run(execution_id="reused") == "ran here"


def test_a_dead_holder_on_this_host_is_taken_over_before_its_lease_expires(sqlite_file_store: str) -> None:
    leased = leased_elsewhere(
        "dead",
        host=socket.gethostname(),
        host_id=HOST_ID,
        pid=dead_pid(),
        expires_at_epoch_s=time.time() + 60,
    )
    assert leased.run(execution_id="dead") == "ran here"


def test_another_host_id_with_the_same_host_name_and_pid_does_not_steal_a_live_lease(
    sqlite_file_store: str,
) -> None:
    # Another container on the same kernel (other pid namespace) with the same host name: its pid
    # means nothing here, even though no process has that pid in this namespace.
    other_container = HOST_ID.rsplit("/", 1)[0] + "/pid:[4026599999]"
    leased = leased_elsewhere(
        "container",
        host=socket.gethostname(),
        host_id=other_container,
        pid=dead_pid(),
        expires_at_epoch_s=time.time() + 60,
    )
    with pytest.raises(ExecutionLockedError) as locked:
        leased.run(execution_id="container")
    assert "container" in str(locked.value)
    assert Client().recover() == []
    set_lease(
        "container",
        host=socket.gethostname(),
        host_id=other_container,
        pid=dead_pid(),
        expires_at_epoch_s=time.time() - 1,
    )
    assert leased.run(execution_id="container") == "ran here"  # expired: taken over


def heartbeat_flow(bodies: list[str]) -> Any:
    @checkpoint(name="long")
    def long() -> str:
        bodies.append("long")
        time.sleep(3 * LEASE_S)  # several heartbeats happen meanwhile
        return "long"

    @checkpoint(name="after")
    def after() -> str:
        bodies.append("after")
        return "after"

    @flow(name="heartbeat")
    def heartbeat() -> str:
        return long() + after()

    return heartbeat


def test_a_heartbeat_that_cannot_renew_for_a_lease_duration_stops_the_runner(
    sqlite_file_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kitaru_core.configure(lease_duration_s=LEASE_S)
    store = get_store()

    def unreachable(*_args: Any, **_kwargs: Any) -> tuple[bool, bool]:
        raise StoreError("the database stayed unreachable (simulated)")

    monkeypatch.setattr(store, "renew_lease", unreachable)
    bodies: list[str] = []
    with pytest.raises(LeaseLostError):
        heartbeat_flow(bodies).run(execution_id="unrenewed")
    assert bodies == ["long"]  # the next body did not start


def test_a_heartbeat_tolerates_passing_faults(
    sqlite_file_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kitaru_core.configure(lease_duration_s=LEASE_S)
    store = get_store()
    real = store.renew_lease
    failures = [0]

    def flaky(*args: Any, **kwargs: Any) -> tuple[bool, bool]:
        if failures[0] < 2:  # two failed beats in a row: less than a lease duration without renewal
            failures[0] += 1
            raise StoreError("connection lost (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "renew_lease", flaky)
    bodies: list[str] = []
    assert heartbeat_flow(bodies).run(execution_id="flaky") == "longafter"
    assert bodies == ["long", "after"]
    assert failures[0] == 2
