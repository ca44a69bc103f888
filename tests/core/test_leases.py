"""One runner at a time (design §4.5): leases, takeover after a kill, heartbeats, recover.

The first runner is a real child process killed with SIGKILL while a checkpoint sleeps.
"""

from __future__ import annotations

import os
import select
import signal
import socket
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
from kitaru_core import Client, _config, _leases, checkpoint, current_execution, flow
from kitaru_core._runtime import get_store
from kitaru_core.errors import ExecutionLockedError

CHILD_SCRIPT = """
import sys
import time
from pathlib import Path

from kitaru_core import checkpoint, flow

COUNTER = Path(sys.argv[1])


@checkpoint(name="first")
def first() -> str:
    with COUNTER.open("a") as handle:
        handle.write("child\\n")
    return "one"


@checkpoint(name="second")
def second() -> str:
    print("SLEEPING", flush=True)
    time.sleep(60)
    return "never"


@flow(name="lease_job")
def job() -> str:
    return first() + "+" + second()


if __name__ == "__main__":
    print(job.run(execution_id=sys.argv[2]), flush=True)
"""


def parent_flow(counter: Path) -> Any:
    """The same flow as the child's, whose second checkpoint returns at once."""

    @checkpoint(name="first")
    def first() -> str:
        with counter.open("a") as handle:
            handle.write("parent\n")
        return "one"

    @checkpoint(name="second")
    def second() -> str:
        return "two"

    @flow(name="lease_job")
    def job() -> str:
        return first() + "+" + second()

    return job


@contextmanager
def sleeping_child(
    tmp_path: Path, store_url: str, execution_id: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """A child process running `lease_job`, stopped inside its second checkpoint."""
    script = tmp_path / "child.py"
    script.write_text(CHILD_SCRIPT, encoding="utf-8")
    child_env = {
        **os.environ,
        "KITARU_STORE_URL": store_url,
        "KITARU_ARTIFACTS_URL": str(tmp_path / "artifacts"),
        **(env or {}),
    }
    with subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "counter.txt"), execution_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env,
        cwd=tmp_path,
    ) as child:
        try:
            assert child.stdout is not None
            deadline = time.monotonic() + 30
            line = ""
            while time.monotonic() < deadline and child.poll() is None:
                ready, _, _ = select.select([child.stdout], [], [], 0.1)
                if ready:
                    line = child.stdout.readline()
                    break
            if line.strip() != "SLEEPING":
                child.kill()
                _, stderr = child.communicate(timeout=10)
                pytest.fail(f"the child did not reach its sleeping checkpoint: {line!r}\n{stderr}")
            yield child
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=10)


def kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL


def set_lease(execution_id: str, host: str, expires_at_epoch_s: float) -> None:
    with get_store().engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE kitaru_executions SET lease_host = :host, lease_host_id = :host_id, "
                "lease_expires_at_epoch_s = :expires WHERE id = :id"
            ),
            {"host": host, "host_id": f"boot:{host}", "expires": expires_at_epoch_s, "id": execution_id},
        )


def test_live_runner_refuses_a_second_one_and_a_killed_runner_is_taken_over_at_once(
    sqlite_file_store: str, tmp_path: Path
) -> None:
    counter = tmp_path / "counter.txt"
    job = parent_flow(counter)
    with sleeping_child(tmp_path, sqlite_file_store, "lease-1") as child:
        with pytest.raises(ExecutionLockedError) as locked:
            job.run(execution_id="lease-1")
        assert locked.value.holder == f"{socket.gethostname()}:{child.pid}"
        assert locked.value.execution_id == "lease-1"
        assert locked.value.lease_expires_in_s > 0
        assert f"{socket.gethostname()}:{child.pid}" in str(locked.value)
        summary = Client().get_execution("lease-1")
        assert (summary.status, summary.run_count, summary.runner_alive) == ("running", 1, True)

        kill(child)
        assert Client().get_execution("lease-1").runner_alive is False
        started = time.monotonic()
        assert job.run(execution_id="lease-1") == "one+two"
        assert time.monotonic() - started < 1.0  # no waiting for the dead runner's lease to expire

    assert counter.read_text() == "child\n"  # the first checkpoint ran once, in the child
    detail = Client().get_execution("lease-1")
    assert (detail.status, detail.run_count) == ("completed", 2)
    assert [(call.key, call.source) for call in detail.calls] == [("first:0", "store"), ("second:0", "live")]


def test_lease_of_another_host_is_honoured_until_it_expires(sqlite_file_store: str, tmp_path: Path) -> None:
    counter = tmp_path / "counter.txt"
    job = parent_flow(counter)
    with sleeping_child(tmp_path, sqlite_file_store, "lease-2") as child:
        kill(child)
        set_lease("lease-2", "other-host", time.time() + 1.0)
        with pytest.raises(ExecutionLockedError) as locked:
            job.run(execution_id="lease-2")
        assert locked.value.holder == f"other-host:{child.pid}"
        assert 0 < locked.value.lease_expires_in_s <= 1.0
        assert Client().get_execution("lease-2").run_count == 1
        time.sleep(1.2)
        assert job.run(execution_id="lease-2") == "one+two"
    assert counter.read_text() == "child\n"
    detail = Client().get_execution("lease-2")
    assert (detail.status, detail.run_count) == ("completed", 2)


def test_recover_marks_a_killed_execution_with_an_expired_lease_failed(
    sqlite_file_store: str, tmp_path: Path
) -> None:
    counter = tmp_path / "counter.txt"
    with sleeping_child(
        tmp_path, sqlite_file_store, "lease-3", env={"KITARU_LEASE_DURATION_S": "0.5"}
    ) as child:
        kill(child)
    time.sleep(0.6)
    assert Client().recover() == ["lease-3"]
    detail = Client().get_execution("lease-3")
    assert detail.status == "failed"
    assert detail.error is not None
    assert detail.error.startswith("ProcessLost")
    assert Client().recover() == []
    assert parent_flow(counter).run(execution_id="lease-3") == "one+two"
    assert counter.read_text() == "child\n"


def test_recover_marks_a_killed_execution_failed_at_once(sqlite_file_store: str, tmp_path: Path) -> None:
    with sleeping_child(tmp_path, sqlite_file_store, "lease-4") as child:
        kill(child)
    assert Client().recover() == ["lease-4"]
    assert Client().get_execution("lease-4").status == "failed"


def test_heartbeat_renews_the_lease_while_a_checkpoint_runs(
    sqlite_file_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kitaru_core.configure(lease_duration_s=0.3)
    store = get_store()
    takeover_attempts: list[str] = []
    samples: list[tuple[float, float | None]] = []

    @checkpoint
    def slow() -> str:
        context = current_execution()
        assert context is not None
        for _ in range(2):
            time.sleep(0.5)
            record = store.get_execution(context.execution_id)
            samples.append((time.time(), record.lease_expires_at_epoch_s))
            with monkeypatch.context() as patch:  # look at the lease as a runner on another host would
                patch.setattr(_leases, "HOST_ID", "boot:other-host/pid:[1]")
                try:
                    _leases.acquire(store, context.execution_id, _config.current_settings())
                    takeover_attempts.append("took over")
                except ExecutionLockedError:
                    takeover_attempts.append("refused")
        return "slept"

    @flow
    def sleepy() -> str:
        return slow()

    assert sleepy() == "slept"
    assert takeover_attempts == ["refused", "refused"]
    assert all(expires is not None and expires > sampled_at for sampled_at, expires in samples)
    assert samples[1][1] > samples[0][1]  # type: ignore[operator]
    (summary,) = Client().list_executions()
    detail = Client().get_execution(summary.id)
    assert (detail.status, detail.run_count) == ("completed", 1)
    assert [call.status for call in detail.calls] == ["completed"]
