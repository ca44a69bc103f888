"""Workers recover executions: an expired lease of another host, a killed child, the shutdown timeout.

Real worker processes (`kitaru-adapters worker`) on a SQLite file and on PostgreSQL, with the
helpers of test_workers.py. The flow is `recovery_program.held_run`: each checkpoint body appends a
nonce to its side-effect file and returns it, so the store's record of each call names the body
whose output was committed, and a body that ran again after its call completed shows as a line
after that one. Bodies wait while a hold file exists: a test keeps a run inside a body to kill it,
to stop it, or to fill a worker's places.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import test_workers  # pyright: ignore[reportMissingImports]
from sqlalchemy import update

from kitaru_core import Client
from kitaru_core import _tables as tables
from kitaru_core._leases import HOST_ID, process_alive
from kitaru_core._runtime import get_store
from kitaru_core._workers import list_workers, retry_state

PROGRAM = Path(__file__).with_name("recovery_program.py")
FLOW = "recovery_program:held_run"
ANOTHER_HOST_ID = "boot:00000000-0000-4000-8000-000000000000/pid:[4026531836]"
"""A lease host id no process of this machine has: its pids mean nothing here."""

# the fixtures of test_workers.py: the store per backend, and no worker outliving its test
environment = test_workers.environment  # pyright: ignore[reportUnknownMemberType]
_no_worker_outlives_its_test = test_workers._no_worker_outlives_its_test  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType]
_until = test_workers._until  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType]
_status = test_workers._status  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType]
_stop = test_workers._stop  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType]


def _start_worker(environment: dict[str, str], log: Path, *arguments: str) -> subprocess.Popen[bytes]:
    """A worker (test_workers.py's, stopped after the test) that also imports `recovery_program`."""
    return test_workers._start_worker(environment, log, "--import", "recovery_program", *arguments)  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType, reportUnknownVariableType]


def _bodies(folder: Path, name: str, calls: int) -> list[list[tuple[str, float, float]]]:
    """Per call of execution `name`: the bodies that wrote its side effect, as (nonce, started, ended)."""
    result: list[list[tuple[str, float, float]]] = []
    for index in range(calls):
        path = folder / f"{name}-{index}"
        lines = path.read_text().splitlines() if path.exists() else []
        result.append(
            [(nonce, float(started), float(ended)) for nonce, started, ended in map(str.split, lines)]
        )
    return result


def _pid(nonce: str) -> int:
    return int(nonce.split("-", 1)[0])


def _assert_each_call_ran_once(folder: Path, execution_id: str, calls: int) -> list[int]:
    """Each call's body ran once and the store holds that body's nonce; returns the pid of each call's body."""
    bodies = _bodies(folder, execution_id, calls)
    assert [len(call) for call in bodies] == [1] * calls, bodies
    records = get_store().load_calls(execution_id, include_superseded=True)
    assert [record.status for record in records] == ["completed"] * calls  # none superseded
    nonces = [nonce for [(nonce, _started, _ended)] in bodies]
    assert Client().get_output(execution_id) == nonces
    return [_pid(nonce) for nonce in nonces]


def _rewrite_lease(execution_id: str, **values: object) -> None:
    t = tables.executions
    with get_store().engine.begin() as connection:
        connection.execute(update(t).where(t.c.id == execution_id).values(**values))


def test_an_expired_lease_of_another_host_is_taken_over_once_expired_and_completed_calls_are_served(
    environment: dict[str, str], tmp_path: Path
) -> None:
    effects = tmp_path / "effects"
    (effects / "hold-f-2").touch()
    runner = subprocess.Popen(
        [sys.executable, str(PROGRAM), "f", "4", str(effects)], env=environment, stderr=subprocess.DEVNULL
    )
    _until(lambda: (effects / "started-f-2").exists(), 60, "the runner to reach call 2")
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    held = get_store().get_execution("f")
    assert (held.status, held.lease_pid, held.lease_host_id) == ("running", runner.pid, HOST_ID)
    # the runner's lease as if it ran on another machine: same owner token and (dead here) pid
    _rewrite_lease("f", lease_host="elsewhere.example", lease_host_id=ANOTHER_HOST_ID)
    (effects / "hold-f-2").unlink()

    log = tmp_path / "worker.log"
    worker = _start_worker(environment, log)
    _until(lambda: any(row.pid == worker.pid for row in list_workers(get_store())), 60, "the worker", log)
    expires_at = time.time() + 2.0
    _rewrite_lease("f", lease_expires_at_epoch_s=expires_at)
    _until(lambda: _status("f") == "completed", 60, "the takeover", log)

    pids = _assert_each_call_ran_once(effects, "f", 4)
    assert pids[:2] == [runner.pid, runner.pid]  # stored before the kill: served, not run again
    assert runner.pid not in pids[2:]
    [[(_nonce, taken_over_started, _ended)]] = _bodies(effects, "f", 3)[2:]
    # the worker looked many times while the lease was live, and took it only once it had expired
    # (a worker that judged the dead pid as one of this host's would have taken it at once)
    assert taken_over_started > expires_at
    assert "took execution 'f' (runner gone)" in log.read_text()
    assert Client().get_execution("f").run_count == 2
    assert _stop(worker) == 0


def test_a_killed_child_costs_only_its_own_execution_which_resumes_without_running_completed_calls(
    environment: dict[str, str], tmp_path: Path
) -> None:
    effects = tmp_path / "effects"
    names = ["b0", "b1", "b2"]
    for name in names:
        (effects / f"hold-{name}-1").touch()
    log = tmp_path / "worker.log"
    worker = _start_worker(environment, log, "--concurrency", "3")
    for name in names:
        Client().submit(FLOW, name, 3, str(effects), execution_id=name)
    _until(lambda: all((effects / f"started-{name}-1").exists() for name in names), 60, "three runs", log)
    children = {name: int((effects / f"started-{name}-1").read_text()) for name in names}
    assert len(set(children.values())) == 3
    assert worker.pid not in children.values()
    assert {name: get_store().get_execution(name).lease_pid for name in names} == children

    os.kill(children["b1"], signal.SIGKILL)
    _until(
        lambda: "execution 'b1': process ended (signal SIGKILL)" in log.read_text(),
        60,
        "the worker to record the killed run",
        log,
    )
    # recorded failed (ProcessLost), and its resume scheduled by the worker on its own
    [scheduled] = [event for event in get_store().list_audit("b1") if event.action == "retry scheduled"]
    assert (scheduled.details["error"], scheduled.details["attempt"]) == ("ProcessLost", 2)
    assert scheduled.details["delay_s"] == 1.0
    # the other two runs go on in their own processes, still held
    assert [_status("b0"), _status("b2")] == ["running", "running"]
    assert process_alive(children["b0"])
    assert process_alive(children["b2"])
    (effects / "hold-b0-1").unlink()
    (effects / "hold-b2-1").unlink()
    _until(lambda: _status("b0") == _status("b2") == "completed", 60, "the other two", log)
    for name in ("b0", "b2"):  # each ran in one process from start to end, once
        assert _assert_each_call_ran_once(effects, name, 3) == [children[name]] * 3
        assert Client().get_execution(name).run_count == 1

    # the retry was taken and waits inside call 1 (still held): a new process, call 0 served
    _until(lambda: _status("b1") == "running", 60, "the worker to resume the killed run", log)
    (effects / "hold-b1-1").unlink()
    _until(lambda: _status("b1") == "completed", 60, "the resumed run", log)
    first, second, third = _assert_each_call_ran_once(effects, "b1", 3)
    assert first == children["b1"]  # completed before the kill: served
    assert second == third != children["b1"]  # the call cut off before its side effect ran once, later
    assert Client().get_execution("b1").run_count == 2
    assert worker.poll() is None
    assert _stop(worker) == 0


def test_an_execution_that_kills_its_process_every_time_stops_after_its_lost_process_retries(
    environment: dict[str, str], tmp_path: Path
) -> None:
    effects = tmp_path / "effects"  # made by the `environment` fixture
    log = tmp_path / "worker.log"
    worker = _start_worker(environment, log, "--lost-process-retries", "1")
    Client().submit("recovery_program:fatal_run", "oom", str(effects), execution_id="oom")
    _until(
        lambda: log.read_text().count("execution 'oom': process ended (signal SIGKILL)") == 2,
        60,
        "two killed attempts",
        log,
    )
    record = get_store().get_execution("oom")
    assert (record.status, record.error_type, record.lease_owner) == ("failed", "ProcessLost", None)
    assert (effects / "oom-0").read_text().count("\n") == 1  # completed before the first kill: served after it
    assert (effects / "oom-1").read_text().count("\n") == 2  # the first attempt and the one retry
    assert [event.details["attempt"] for event in get_store().list_audit("oom") if event.action == "retry scheduled"] == [2]
    assert retry_state(get_store(), "oom").retry_at_epoch_s is None  # nothing more scheduled
    assert Client().get_execution("oom").run_count == 2
    assert worker.poll() is None
    assert _stop(worker) == 0


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that overlap at any moment (one ending as another starts does not overlap)."""
    events = sorted([(started, 1) for started, _ in intervals] + [(ended, -1) for _, ended in intervals])
    return max(itertools.accumulate(change for _moment, change in events))


def test_the_overlap_count_of_intervals() -> None:
    assert _most_at_once([(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]) == 1
    assert _most_at_once([(0.0, 3.0), (1.0, 2.0), (1.5, 4.0), (3.5, 5.0)]) == 3


def test_a_worker_never_runs_more_executions_at_once_than_its_concurrency(
    environment: dict[str, str], tmp_path: Path
) -> None:
    effects = tmp_path / "effects"
    names = [f"n{index}" for index in range(6)]
    for name in names:
        (effects / f"hold-{name}-0").touch()
        Client().submit(FLOW, name, 1, str(effects), execution_id=name)
    log = tmp_path / "worker.log"
    worker = _start_worker(environment, log, "--concurrency", "2")

    def started() -> list[str]:
        return [name for name in names if (effects / f"started-{name}-0").exists()]

    _until(lambda: len(started()) >= 2, 60, "two runs", log)
    time.sleep(1.0)  # the worker looks about ten times with both its places taken
    assert len(started()) == 2
    assert sorted(_status(name) for name in names) == ["queued"] * 4 + ["running"] * 2
    for name in names:
        (effects / f"hold-{name}-0").unlink()
    _until(lambda: all(_status(name) == "completed" for name in names), 60, "every run", log)
    intervals: list[tuple[float, float]] = []
    for name in names:
        _assert_each_call_ran_once(effects, name, 1)
        intervals += [(begun, ended) for [(_nonce, begun, ended)] in _bodies(effects, name, 1)]
    assert _most_at_once(intervals) == 2  # the two held runs overlapped; never a third
    assert log.read_text().count("took execution") == 6
    assert _stop(worker) == 0


def test_a_run_that_misses_the_shutdown_timeout_is_killed_and_released_for_another_worker(
    environment: dict[str, str], tmp_path: Path
) -> None:
    effects = tmp_path / "effects"
    (effects / "hold-d-1").touch()
    log = tmp_path / "worker.log"
    worker = _start_worker(environment, log, "--shutdown-timeout", "2")
    Client().submit(FLOW, "d", 3, str(effects), execution_id="d")
    _until(lambda: (effects / "started-d-1").exists(), 60, "call 1 to start", log)
    child = int((effects / "started-d-1").read_text())
    assert get_store().get_execution("d").lease_pid == child

    worker.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert worker.poll() is None  # it asked the child to stop at its next boundary, and waits
    assert process_alive(child)
    assert worker.wait(timeout=60) == 0
    assert not process_alive(child)
    assert (effects / "hold-d-1").exists()  # the body never got past its hold: the child was killed
    assert "execution 'd': process ended (signal SIGKILL)" in log.read_text()
    record = get_store().get_execution("d")
    assert (record.status, record.lease_owner, record.error_type) == ("queued", None, None)
    assert [len(call) for call in _bodies(effects, "d", 3)] == [1, 0, 0]

    (effects / "hold-d-1").unlink()
    second_log = tmp_path / "second.log"
    second = _start_worker(environment, second_log)
    _until(lambda: _status("d") == "completed", 60, "the second worker", second_log)
    first, *rest = _assert_each_call_ran_once(effects, "d", 3)
    assert first == child  # completed before the shutdown: served
    assert child not in rest
    assert "took execution 'd' (queued)" in second_log.read_text()
    assert _stop(second) == 0
