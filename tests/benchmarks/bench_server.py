"""Request latencies of the dashboard and HTTP API, against a real `kitaru-adapters serve` process.

Not a test (pytest does not collect it). It fills a SQLite store with executions (one with a long
timeline), starts the server on 127.0.0.1 and times, over keep-alive HTTP from this process:
listing a page of executions, one execution with its timeline, the execution page (HTML), the
pending waits, a refused answer (422) and an accepted one, and the time from another process's
answer to the `change` event on the event stream.

    python tests/benchmarks/bench_server.py [--executions 200] [--calls 200] [--requests 200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

import kitaru_core
from kitaru_core import checkpoint, execution, flow, wait
from kitaru_core.errors import ExecutionWaitingError

TOKEN = "bench-token-0123456789abcdef"


@checkpoint
def step(index: int) -> dict[str, int]:
    return {"index": index, "square": index * index}


@flow
def long_run(calls: int) -> int:
    total = sum(step(index)["square"] for index in range(calls))
    return total if wait("go", question="Publish?", schema=bool) else 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _timed(client: httpx.Client, requests: int, method: str, path: str, **kwargs: object) -> list[float]:
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code < 500, response.text
    return samples


def _report(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    print(f"{name:<44} median {statistics.median(samples):7.2f} ms   p95 {p95:7.2f} ms   (n={len(samples)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=200)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--requests", type=int, default=200)
    arguments = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="kitaru-bench-server-"))
    url = f"sqlite:///{folder / 'kitaru.db'}"
    kitaru_core.configure(store_url=url, artifacts_url=str(folder / "artifacts"))
    for index in range(arguments.executions):
        with execution(f"e-{index}", name="filler"):
            step(index)
    for index in range(arguments.requests + 1):
        with contextlib.suppress(ExecutionWaitingError):
            long_run.run(arguments.calls if index == 0 else 1, execution_id=f"long-{index}")
    port = _free_port()
    environment = {**os.environ, "KITARU_STORE_URL": url, "KITARU_ARTIFACTS_URL": str(folder / "artifacts")}
    server = subprocess.Popen(
        [sys.executable, "-m", "kitaru_core.cli", "serve", "--port", str(port), "--token", TOKEN,
         "--log-dir", str(folder / "logs"), "--poll-interval", "0.25"],
        env=environment, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{base}/api/executions", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        print(
            f"store: {arguments.executions + arguments.requests + 1} executions; timeline of {arguments.calls} calls; "
            f"{arguments.requests} requests each"
        )
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            _report(
                "GET /api/executions (page of 50)",
                _timed(client, arguments.requests, "GET", "/api/executions"),
            )
            _report(
                f"GET /api/executions/long-0 ({arguments.calls} calls)",
                _timed(client, arguments.requests, "GET", "/api/executions/long-0"),
            )
            _report(
                "GET /executions/long-0 (HTML page)",
                _timed(client, arguments.requests, "GET", "/executions/long-0"),
            )
            _report("GET /api/waits (all pending)", _timed(client, arguments.requests, "GET", "/api/waits"))
            refused = _timed(
                client,
                arguments.requests,
                "POST",
                "/api/executions/long-0/waits/go/answer",
                json={"value": "yes"},
            )
            _report("POST answer, refused (422)", refused)
            accepted = []
            for index in range(1, arguments.requests + 1):
                started = time.perf_counter()
                response = client.post(f"/api/executions/long-{index}/waits/go/answer", json={"value": True})
                accepted.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text
            _report("POST answer, accepted (200)", accepted)

        # another process answers; time until the event stream reports it
        latencies: list[float] = []
        events: list[float] = []
        ready = threading.Event()

        def read() -> None:
            try:
                with httpx.stream("GET", f"{base}/api/events?execution_id=long-0", timeout=None) as stream:
                    for line in stream.iter_lines():
                        if line.startswith("data:"):
                            events.append(time.time())
                            ready.set()
            except httpx.HTTPError:
                return  # the server stopped

        threading.Thread(target=read, daemon=True).start()
        ready.wait(10)
        code = "import time; from kitaru_core import Client; Client().answer('long-0', 'go', True); print(time.time())"
        before = len(events)
        answered = float(subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True,
                                         text=True, check=True).stdout)  # fmt: skip
        deadline = time.time() + 10
        while len(events) == before and time.time() < deadline:
            time.sleep(0.005)
        latencies.append((events[-1] - answered) * 1000)
        print(f"{'answer in another process -> SSE event':<44} {latencies[0]:7.1f} ms (poll interval 250 ms)")
        print(json.dumps({"store": url}))
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
