"""Answer -> resumed latency: an approval answered through the HTTP API, resumed by a live worker.

Not a test (pytest does not collect it). It starts a real `kitaru-adapters serve` and a real
`kitaru-adapters worker` (default poll interval unless `--poll-interval`) on one store, submits
executions of `approval` (a call, a wait, a call), and for each one, once it waits and the worker
is idle, answers the wait with `POST /api/executions/ID/waits/go-on/answer` (`resume: true`). The
latency is the time from sending that request to the first record the resumed run writes (the
`ended_at_epoch_s` of the call after the wait: the call's body is empty, so this is when its record
was written). The server never imports this module; the worker's children do.

    python tests/benchmarks/bench_workers.py [--store sqlite|postgres|both] [--rounds 10] [--poll-interval S]

PostgreSQL: `KITARU_TEST_POSTGRES_URL` (default `postgresql+psycopg://postgres@127.0.0.1:5432/test`);
the script creates a database of its own there and drops it afterwards. Needs the `server` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

TOKEN = "bench-token-0123456789abcdef"
HERE = Path(__file__).resolve().parent

from kitaru_core import checkpoint, flow, wait  # noqa: E402


@checkpoint
def before(name: str) -> str:
    """The call before the wait."""
    return name


@checkpoint
def after(name: str) -> float:
    """The call after the wait: the resumed run's first record."""
    return time.time()


@flow
def approval(name: str) -> float:
    """A call, a wait for a yes or no, and a call after it."""
    before(name)
    wait("go-on", question="Go on?", schema=bool)
    return after(name)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _until(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def _postgres_database() -> tuple[str, object]:
    import sqlalchemy

    base = os.environ.get("KITARU_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    name = f"kitaru_bench_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return base.rsplit("/", 1)[0] + f"/{name}", drop


def measure(kind: str, rounds: int, poll_interval_s: float | None) -> list[float]:
    """Answer -> resumed latencies in seconds, one per round."""
    import httpx
    from sqlalchemy import select

    import kitaru_core
    from kitaru_core import Client
    from kitaru_core import _tables as tables
    from kitaru_core._workers import live_workers_for

    folder = Path(tempfile.mkdtemp(prefix=f"kitaru-bench-workers-{kind}-"))
    drop = None
    if kind == "postgres":
        url, drop = _postgres_database()
    else:
        url = f"sqlite:///{folder / 'kitaru.db'}"
    artifacts = str(folder / "artifacts")
    kitaru_core.configure(store_url=url, artifacts_url=artifacts, reset=True)
    client = Client()
    environment = {
        **os.environ,
        "KITARU_STORE_URL": url,
        "KITARU_ARTIFACTS_URL": artifacts,
        "KITARU_INTERACTIVE": "false",
        "PYTHONPATH": os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "kitaru_core.cli", "serve", "--port", str(port), "--token", TOKEN,
         "--log-dir", str(folder / "logs")],
        env=environment, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    poll = [] if poll_interval_s is None else ["--poll-interval", str(poll_interval_s)]
    log = open(folder / "worker.log", "ab")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "kitaru_core.cli", "worker", "--import", "bench_workers", *poll],
        env=environment, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    latencies: list[float] = []
    claims: list[float] = []
    stored: list[float] = []
    base = f"http://127.0.0.1:{port}"
    try:
        _until(lambda: live_workers_for(client.store, "default") != [], 60, "the worker")
        for _ in range(100):
            try:
                httpx.get(f"{base}/api/executions", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        calls = tables.checkpoint_calls
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
            for index in range(rounds + 1):  # the first round warms up and is not counted
                execution_id = client.submit("bench_workers:approval", f"r{index}", execution_id=f"r{index}")
                _until(lambda: client.get_execution(execution_id).status == "waiting", 60, "the wait")  # noqa: B023
                ended = f"execution {execution_id!r}: process ended"
                _until(lambda: ended in (folder / "worker.log").read_text(), 60, "the worker's child to end")  # noqa: B023
                time.sleep(1.0)  # the worker is between looks for work, and its next process is up
                sent_at = time.time()
                response = http.post(
                    f"/api/executions/{execution_id}/waits/go-on/answer", json={"value": True, "resume": True}
                )
                assert response.status_code == 200, response.text
                assert response.json()["resumed"]["queued_for_worker"] is True, response.text

                def written(execution_id: str = execution_id) -> float | None:
                    with client.store.engine.connect() as connection:
                        return connection.execute(
                            select(calls.c.ended_at_epoch_s).where(
                                calls.c.execution_id == execution_id, calls.c.name.like("%after")
                            )
                        ).scalar()

                _until(lambda: written() is not None, 60, "the resumed run's first record")
                if index:
                    latencies.append(float(written() or 0.0) - sent_at)
                    claimed_at = _claimed_at(folder / "worker.log", execution_id, after=sent_at)
                    if claimed_at is not None:
                        claims.append(claimed_at - sent_at)
                    [answered] = [w for w in client.store.list_waits(execution_id) if w.name == "go-on"]
                    stored.append(float(answered.answered_at_epoch_s or 0.0) - sent_at)
                    if os.environ.get("KITARU_BENCH_VERBOSE"):
                        print(f"    round {index}: stored {stored[-1]:.3f} s, taken "
                              f"{claims[-1] if claims else float('nan'):.3f} s, first record {latencies[-1]:.3f} s")  # fmt: skip
                _until(lambda: client.get_execution(execution_id).status == "completed", 60, "done")  # noqa: B023
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        log.close()
        server.terminate()
        server.wait(timeout=10)
        kitaru_core.configure(reset=True)
        from kitaru_core import _store

        for key in [key for key in _store._stores if key[0] == url]:  # pyright: ignore[reportPrivateUsage]
            _store._stores.pop(key).close()  # pyright: ignore[reportPrivateUsage]
        if drop is not None:
            drop()  # type: ignore[operator]
    if claims:
        print(
            f"  {kind}, medians: request sent -> answer stored {statistics.median(stored):.3f} s; "
            f"-> the worker took it (its log) {statistics.median(claims):.3f} s; "
            f"-> first record {statistics.median(latencies):.3f} s"
        )
    return latencies


def _claimed_at(log: Path, execution_id: str, *, after: float) -> float | None:
    """When the worker's log says it took `execution_id` (the last such line after `after`)."""
    from datetime import datetime

    found = None
    for line in log.read_text(errors="replace").splitlines():
        if f"took execution {execution_id!r}" in line:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if stamp >= after - 0.01:
                found = stamp
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--poll-interval", type=float, default=None, help="the worker's (default: its own)")
    arguments = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    kinds = ["sqlite", "postgres"] if arguments.store == "both" else [arguments.store]
    for kind in kinds:
        samples = measure(kind, arguments.rounds, arguments.poll_interval)
        figures = {
            "store": kind,
            "rounds": len(samples),
            "median_s": round(statistics.median(samples), 3),
            "min_s": round(min(samples), 3),
            "max_s": round(max(samples), 3),
        }
        print(f"answer through the API -> resumed run's first record: {json.dumps(figures)}")


if __name__ == "__main__":
    main()
