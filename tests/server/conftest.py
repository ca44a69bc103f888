"""Fixtures of the server tests: an in-process API client, and a real server in another process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

import httpx
from fastapi.testclient import TestClient

import kitaru_core
from kitaru_core.server import ServerSettings, create_app

TOKEN = "test-token-0123456789abcdef"
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A SQLite file store shared with other processes: `(store URL, artifacts folder)`."""
    url = f"sqlite:///{tmp_path / 'kitaru.db'}"
    artifacts = str(tmp_path / "artifacts")
    kitaru_core.configure(store_url=url, artifacts_url=artifacts, inline_limit_bytes=512, reset=True)
    yield url, artifacts
    kitaru_core.configure(reset=True)


def make_api(store: tuple[str, str], tmp_path: Path, *, open_reads: bool = True) -> TestClient:
    settings = ServerSettings(
        token=TOKEN,
        open_reads=open_reads,
        store_url=store[0],
        artifacts_url=store[1],
        resume_log_dir=tmp_path / "logs",
        poll_interval_s=0.05,
        allowed_hosts=("testserver", "127.0.0.1", "localhost"),
    )
    return TestClient(create_app(settings))


@pytest.fixture
def api(sqlite_store: tuple[str, str], tmp_path: Path) -> Iterator[TestClient]:
    """The app in this process (reads open, as on loopback)."""
    with make_api(sqlite_store, tmp_path) as client:
        yield client


def flow_env(store_url: str, artifacts_url: str, **extra: str) -> dict[str, str]:
    """Environment of another process using the same store."""
    return {
        **os.environ,
        "KITARU_STORE_URL": store_url,
        "KITARU_ARTIFACTS_URL": artifacts_url,
        "KITARU_INLINE_LIMIT_BYTES": "512",
        "KITARU_INTERACTIVE": "false",
        "PYTHONPATH": str(REPO),
        **extra,
    }


def kitaru_cli(store: tuple[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run `kitaru-adapters ARGUMENTS...` in another process on the same store."""
    return subprocess.run(
        [sys.executable, "-m", "kitaru_core.cli", *arguments],
        cwd=REPO,
        env=flow_env(*store),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_flow(
    store: tuple[str, str], flow: str, execution_id: str, *arguments: str, **env: str
) -> subprocess.Popen[str]:
    """Start `tests.server.flows.<flow>` in another process."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.server.run_flow", flow, execution_id, *arguments],
        cwd=REPO,
        env=flow_env(*store, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen[str], expected_code: int) -> str:
    output, _ = process.communicate(timeout=60)
    assert process.returncode == expected_code, output
    return output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LiveServer:
    """A `kitaru-adapters serve` process."""

    url: str
    store: tuple[str, str]
    process: subprocess.Popen[str]
    log_dir: Path

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


def start_server(store: tuple[str, str], tmp_path: Path, *extra: str) -> LiveServer:
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    command = [
        sys.executable, "-m", "kitaru_core.cli", "--store-url", store[0], "--artifacts-url", store[1],
        "serve", "--port", str(port), "--token", TOKEN, "--poll-interval", "0.1",
        "--log-dir", str(tmp_path / "resume-logs"), *extra,
    ]  # fmt: skip
    with log.open("w") as output:  # the child keeps its own descriptor
        process = subprocess.Popen(
            command, cwd=REPO, env=flow_env(*store), stdout=output, stderr=subprocess.STDOUT, text=True
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {log.read_text()}")
        try:
            if httpx.get(f"{url}/api/executions", timeout=1).status_code == 200:
                return LiveServer(url, store, process, tmp_path / "resume-logs")
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"the server did not start: {log.read_text()}")


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture
def live_server(sqlite_store: tuple[str, str], tmp_path: Path) -> Iterator[LiveServer]:
    """`kitaru-adapters serve` in another process, on a SQLite file."""
    server = start_server(sqlite_store, tmp_path)
    yield server
    stop_server(server)


def wait_until(predicate: object, timeout_s: float = 30.0, interval_s: float = 0.05) -> None:
    """Poll `predicate()` until it is true."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")
