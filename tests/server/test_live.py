"""Live updates: a real server process streams a change when another process writes the store.

On SQLite (a file shared by processes) and PostgreSQL. The latency from another process's commit
to the event is printed (`-s`) and must stay under a few poll intervals.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kitaru_core import Client
from tests.conftest import _truncate_postgres  # pyright: ignore[reportPrivateUsage]
from tests.server.conftest import (
    REPO,
    LiveServer,
    bearer,
    finish,
    flow_env,
    run_flow,
    start_server,
    stop_server,
)

LATENCY_BUDGET_S = 2.0  # the server polls every 0.1 s here; this leaves room for a loaded machine


class EventReader:
    """Reads a server-sent event stream in a thread: `(arrival time, data)` per `change` event."""

    def __init__(self, url: str) -> None:
        self.events: queue.Queue[tuple[float, dict[str, object]]] = queue.Queue()
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self._thread.start()
        assert self.connected.wait(10), "the event stream did not open"

    def _read(self, url: str) -> None:
        try:
            with httpx.stream("GET", url, timeout=httpx.Timeout(10, read=None)) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                self.connected.set()
                kind = ""
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        kind = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and kind == "change":
                        self.events.put((time.time(), json.loads(line.split(":", 1)[1])))
        except httpx.HTTPError:
            return  # the server stopped

    def next(self, timeout_s: float = 10.0) -> tuple[float, dict[str, object]]:
        return self.events.get(timeout=timeout_s)

    def quiet(self, for_s: float) -> bool:
        try:
            self.events.get(timeout=for_s)
        except queue.Empty:
            return True
        return False


def answer_from_another_process(
    store: tuple[str, str], execution_id: str, wait_name: str, value: object
) -> float:
    """Answer a wait in a new process; return the time its commit returned."""
    code = (
        "import json, sys, time\n"
        "from kitaru_core import Client\n"
        "Client().answer(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))\n"
        "print(time.time())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, execution_id, wait_name, json.dumps(value)],
        cwd=REPO,
        env=flow_env(*store),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A store other processes can share: a SQLite file, or the test PostgreSQL database."""
    import kitaru_core

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'kitaru.db'}"
    else:
        url = request.getfixturevalue("postgres_database")
        _truncate_postgres(url)
    artifacts = str(tmp_path / "artifacts")
    kitaru_core.configure(store_url=url, artifacts_url=artifacts, inline_limit_bytes=512, reset=True)
    yield url, artifacts
    kitaru_core.configure(reset=True)


@pytest.fixture
def server(backend_store: tuple[str, str], tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(backend_store, tmp_path)
    yield live
    stop_server(live)


def test_events_follow_writes_of_other_processes(server: LiveServer, backend_store: tuple[str, str]) -> None:
    backend = "sqlite" if backend_store[0].startswith("sqlite") else "postgres"
    everything = EventReader(f"{server.url}/api/events")
    _, initial = everything.next()
    assert initial["execution_id"] is None
    assert everything.quiet(0.5)  # nothing changes, nothing is sent

    execution_id = f"live-{uuid.uuid4().hex[:6]}"
    finish(run_flow(backend_store, "refund_order", execution_id, "L-1", "25"), 3)  # stops at the approval
    arrivals = [everything.next()[0]]
    while not everything.quiet(0.5):  # the run's later writes (its wait, its status) come as more events
        arrivals.append(time.time())
    detail = Client().get_execution(execution_id)
    assert [call.key for call in detail.calls] == ["look_up_order:0"]
    (stored_call,) = Client().store.load_calls(execution_id)
    after_commit = [arrival for arrival in arrivals if arrival >= stored_call.ended_at_epoch_s]
    assert after_commit, "no event followed the checkpoint call's commit"
    record_latency_s = after_commit[0] - stored_call.ended_at_epoch_s

    only_this = EventReader(f"{server.url}/api/events?execution_id={execution_id}")
    only_this.next()  # its current state
    finish(run_flow(backend_store, "confirm", f"other-{execution_id}", "L-2"), 3)
    everything.next()
    assert only_this.quiet(0.8), "a change to another execution reached a stream that watches one execution"

    committed = answer_from_another_process(
        backend_store, execution_id, "approve:issue_refund:call-1", {"approved": True}
    )
    arrival, data = only_this.next()
    answer_latency_s = arrival - committed
    assert data["execution_id"] == execution_id
    print(f"\n[{backend}] SSE latency: checkpoint call commit -> event {record_latency_s * 1000:.0f} ms; "
          f"answer commit -> event {answer_latency_s * 1000:.0f} ms")  # fmt: skip
    assert answer_latency_s < LATENCY_BUDGET_S

    # resumed through the API: the stream follows the run to the end
    resumed = httpx.post(f"{server.url}/api/executions/{execution_id}/resume", headers=bearer())
    assert resumed.status_code == 202, resumed.text
    deadline = time.monotonic() + 30
    while Client().get_execution(execution_id).status != "completed":
        only_this.next(timeout_s=max(0.1, deadline - time.monotonic()))
    assert Client().get_output(execution_id) == "refunded $25 on L-1"
