"""The server hands "resume" and answer-then-resume to a live worker, and never imports flow code.

A real `kitaru-adapters serve` process and a real `kitaru-adapters worker` process share a SQLite
file. `tests/server/worker_flows.py` writes a marker file per process that imports it (holding its
parent pid), so the test proves which processes ran flow code: the worker's children, never the
server nor a background process of the server's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kitaru_core import Client
from kitaru_core._workers import (
    _save_worker,  # pyright: ignore[reportPrivateUsage]
    live_workers_for,
)
from tests.server.conftest import (
    REPO,
    LiveServer,
    bearer,
    flow_env,
    start_server,
    stop_server,
    wait_until,
)

FLOWS = "tests.server.worker_flows"


def start_worker(store: tuple[str, str], log: Path, *arguments: str) -> subprocess.Popen[bytes]:
    """`kitaru-adapters worker` on the store, in its own process group (its children join it)."""
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "kitaru_core.cli", "worker", "--poll-interval", "0.1", *arguments],
            cwd=REPO,
            env=flow_env(*store),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


@pytest.fixture
def markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder of import markers; every process the test starts inherits its name."""
    folder = tmp_path / "imported-by"
    folder.mkdir()
    monkeypatch.setenv("KITARU_TEST_IMPORT_MARKERS", str(folder))
    return folder


@pytest.fixture
def server_and_worker(
    sqlite_store: tuple[str, str], tmp_path: Path, markers: Path
) -> Iterator[tuple[LiveServer, subprocess.Popen[bytes], Path]]:
    log = tmp_path / "worker.log"
    worker = start_worker(sqlite_store, log)
    server = start_server(sqlite_store, tmp_path)
    try:
        wait_until(lambda: live_workers_for(Client().store, "default") != [], timeout_s=30)
        yield server, worker, log
    finally:
        stop_server(server)
        stop_worker(worker)


def importers(markers: Path) -> dict[int, int]:
    """pid -> parent pid of every process that imported the flows."""
    return {int(path.name): int(path.read_text()) for path in markers.iterdir()}


def test_with_a_live_worker_the_server_hands_answers_and_resumes_to_it_and_imports_no_flow(
    server_and_worker: tuple[LiveServer, subprocess.Popen[bytes], Path], tmp_path: Path, markers: Path
) -> None:
    server, worker, log = server_and_worker
    effects = tmp_path / "effects"
    effects.mkdir()
    client = Client()

    # a submitted execution runs in a worker's child up to its approval
    execution_id = client.submit(f"{FLOWS}:approval_then_step", "api", str(effects))
    wait_until(lambda: client.get_execution(execution_id).status == "waiting", timeout_s=60)
    [wait] = client.pending_waits(execution_id)
    with server.client(**bearer()) as http:
        sent_at = time.time()
        response = http.post(
            f"/api/executions/{execution_id}/waits/{wait.name}/answer",
            json={"value": {"approved": True}, "resume": True},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["resumed"] == {
            "execution_id": execution_id,
            "pid": None,
            "log_path": None,
            "queued_for_worker": True,
        }
        wait_until(lambda: client.get_execution(execution_id).status == "completed", timeout_s=30)
        resumed_at = float((effects / "api-resumed").read_text().split()[1])
        print(f"\nanswered through the HTTP API -> the worker's child started the next call in "
              f"{resumed_at - sent_at:.3f} s")  # fmt: skip
        assert client.get_output(execution_id) == "resumed"
        assert [len((effects / name).read_text().splitlines()) for name in ("api-before", "api-resumed")] == [
            1,
            1,
        ]
        audit = [(event.action, event.details) for event in client.get_execution(execution_id).audit]
        assert ("resume", {"queued_for_worker": True, "workers": 1}) in audit

        # "resume" of a failed execution: queued for the worker, which completes it
        (effects / "fail-flaky").touch()
        failing = client.submit(f"{FLOWS}:fails_while_flag", "flaky", str(effects))
        wait_until(lambda: client.get_execution(failing).status == "failed", timeout_s=60)
        (effects / "fail-flaky").unlink()
        response = http.post(f"/api/executions/{failing}/resume")
        assert response.status_code == 202, response.text
        assert response.json()["queued_for_worker"] is True
        wait_until(lambda: client.get_execution(failing).status == "completed", timeout_s=30)
        assert len((effects / "flaky-first").read_text().splitlines()) == 1  # served on the resume
        # a completed one is refused as before, and nothing is queued
        refused = http.post(f"/api/executions/{failing}/resume")
        assert (refused.status_code, refused.json()["error"]) == (409, "ExecutionError")
        # a replay asked to run now is queued for the live worker too, which runs it
        replayed = http.post(f"/api/executions/{failing}/replay", json={})
        assert replayed.status_code == 202, replayed.text
        assert replayed.json()["status"] == "queued"
        assert replayed.json()["pid"] is None
        replay_id = replayed.json()["execution_id"]
        wait_until(lambda: client.get_execution(replay_id).status == "completed", timeout_s=30)

    # who imported the flows: this test process and the worker's children, never the server
    imported = importers(markers)
    assert server.process.pid not in imported
    children = {pid for pid, parent in imported.items() if parent == worker.pid}
    assert len(children) >= 3, (imported, log.read_text())
    assert set(imported) - {os.getpid()} == children, (imported, log.read_text())
    assert not server.log_dir.exists() or not list(server.log_dir.glob("*.log"))  # no background resume


def test_without_a_live_worker_the_server_resumes_in_a_background_process(
    api: TestClient, sqlite_store: tuple[str, str], tmp_path: Path
) -> None:
    """A worker row that stopped, or whose heartbeat is older than three intervals, is not live."""
    store = Client().store
    now = time.time()
    row = {
        "host": "elsewhere", "host_id": "another-host", "pid": 1, "queues": json.dumps(["default:3"]),
        "concurrency": 1, "running": "[]", "started_at_epoch_s": now - 100, "heartbeat_at_epoch_s": now - 60,
    }  # fmt: skip
    _save_worker(store, "stale", row, create=True)
    _save_worker(
        store, "stopped", {**row, "heartbeat_at_epoch_s": now, "stopped_at_epoch_s": now}, create=True
    )
    _save_worker(
        store, "other-queue", {**row, "heartbeat_at_epoch_s": now, "queues": '["emails"]'}, create=True
    )
    assert live_workers_for(store, "default") == []
    _save_worker(store, "live", {**row, "heartbeat_at_epoch_s": now}, create=True)
    assert [record.id for record in live_workers_for(store, "default")] == ["live"]
    assert [record.id for record in live_workers_for(store, "emails")] == ["other-queue"]

    # with the (pretend) live worker, a resume only queues the execution: nothing is started
    from tests.server import worker_flows

    effects = tmp_path / "effects"
    effects.mkdir()
    (effects / "fail-x").touch()
    with pytest.raises(RuntimeError):
        worker_flows.fails_while_flag.run("x", str(effects), execution_id="x")
    response = api.post("/api/executions/x/resume", headers=bearer())
    assert response.status_code == 202, response.text
    assert response.json() == {"execution_id": "x", "pid": None, "log_path": None, "queued_for_worker": True}
    assert Client().get_execution("x").status == "queued"
