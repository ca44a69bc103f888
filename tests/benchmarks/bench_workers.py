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

`--measure takeover` times instead how fast a worker takes over an execution whose worker died
with its child (SIGKILL of the process group): two real `kitaru-adapters worker` processes, each in
its own process group, and per round an execution of `many_calls` (`--calls` calls of about 10 ms,
each body appending its call index and pid to a side-effect file). Once the run has recorded a
number of calls (drawn between 20 and 150) and a random part of a poll interval has passed, the
process group of the worker running it is killed; the figures are the time from the kill to the
other worker's log line that it took the execution (`(runner gone)`), and to the first record the
new run writes. Each round then checks that no completed call ran twice (side-effect lines against
the pids the store kept as the calls' outputs), and the killed worker is started again. No server
runs in this mode.

    python tests/benchmarks/bench_workers.py --measure takeover [--store ...] [--rounds 10] [--calls 200] [--poll-interval S]

On one host this is the takeover at once (the lease holder's pid is dead). On another host a
takeover waits for the lease to expire instead: the heartbeat renews it every third of the lease
duration, so that is 2/3 to 3/3 of `lease_duration_s` (default 30 s) after the kill, plus up to a
poll interval; the script does not measure it.
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


@checkpoint
def side_effect(path: str, index: int, pause_s: float) -> int:
    """Append `index pid` to the side-effect file, then work `pause_s`; return the pid that ran it."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"{index} {os.getpid()}\n")
    time.sleep(pause_s)
    return os.getpid()


@flow
def many_calls(path: str, calls: int, pause_s: float) -> list[int]:
    """`calls` side-effect calls in a row; returns the pid of each call's recorded body, in order."""
    return [side_effect(path, index, pause_s) for index in range(calls)]


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

    from kitaru_core import Client
    from kitaru_core import _tables as tables
    from kitaru_core._workers import live_workers_for

    folder, url, drop, environment = _bench_store(kind, "workers")
    client = Client()
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
        _forget_store(url, drop)
    if claims:
        print(
            f"  {kind}, medians: request sent -> answer stored {statistics.median(stored):.3f} s; "
            f"-> the worker took it (its log) {statistics.median(claims):.3f} s; "
            f"-> first record {statistics.median(latencies):.3f} s"
        )
    return latencies


DEFAULT_POLL_INTERVAL_S = 0.5
"""`kitaru-adapters worker --poll-interval`'s default."""
TAKEOVER_PAUSE_S = 0.01
"""Seconds each `side_effect` body works after its side effect: the window a kill usually lands in."""


def measure_takeover(
    kind: str, rounds: int, calls: int, poll_interval_s: float | None
) -> dict[str, list[float]]:
    """Kill -> takeover latencies in seconds, one per round, under `taken`, `first_started`, `first_record`.

    Also `served`: how many recorded calls the new run served before its first new record. Stops
    the script (after printing) when a completed call ran twice or the records do not add up.
    """
    import random

    from sqlalchemy import select

    from kitaru_core import Client
    from kitaru_core import _tables as tables
    from kitaru_core._leases import process_alive
    from kitaru_core._workers import live_workers_for

    folder, url, drop, environment = _bench_store(kind, "takeover")
    client = Client()
    poll = [] if poll_interval_s is None else ["--poll-interval", str(poll_interval_s)]
    logs = [folder / "worker-a.log", folder / "worker-b.log"]

    def start_worker(slot: int) -> subprocess.Popen[bytes]:
        """A worker in its own process group (its children join it), logging to its slot's log."""
        with open(logs[slot], "ab") as output:
            return subprocess.Popen(
                [sys.executable, "-m", "kitaru_core.cli", "worker", "--import", "bench_workers", *poll],
                env=environment, cwd=folder, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    c = tables.checkpoint_calls

    def completed_calls(execution_id: str) -> list[tuple[int, float, float]]:
        """(run number, started, ended) of each completed call record of the execution."""
        query = select(c.c.run_number, c.c.started_at_epoch_s, c.c.ended_at_epoch_s).where(
            c.c.execution_id == execution_id, c.c.status == "completed"
        )
        with client.store.engine.connect() as connection:
            return [(int(row[0]), float(row[1]), float(row[2])) for row in connection.execute(query)]

    workers = [start_worker(0), start_worker(1)]
    samples: dict[str, list[float]] = {"taken": [], "first_started": [], "first_record": [], "served": []}
    problems: list[str] = []
    interrupted_run_again = 0
    rng = random.Random(7)
    try:
        for index in range(rounds + 1):  # the first round warms up and is not counted
            pids = {worker.pid for worker in workers}
            _until(
                lambda: pids <= {record.pid for record in live_workers_for(client.store, "default")},  # noqa: B023
                60,
                "both workers",
            )
            time.sleep(2.0)  # the worker started last (each round restarts one) has prestarted its process
            effects = folder / f"effects-t{index}"
            execution_id = client.submit(
                "bench_workers:many_calls", str(effects), calls, TAKEOVER_PAUSE_S, execution_id=f"t{index}"
            )
            kill_after = rng.randint(20, max(20, min(150, calls - 20)))
            _until(
                lambda execution_id=execution_id, kill_after=kill_after: (
                    len(completed_calls(execution_id)) >= kill_after
                ),
                120,
                f"{kill_after} recorded calls",
            )
            # The other worker looks for work once per poll interval (and on wakeups): a random
            # delay within one interval spreads the kills over its cycle instead of the calls'.
            time.sleep(rng.uniform(0.0, poll_interval_s or DEFAULT_POLL_INTERVAL_S))
            record = client.store.get_execution(execution_id)
            holder, killed_run = record.lease_pid, record.run_count
            if holder is None or record.status != "running":
                raise SystemExit(f"{execution_id} is not running under a lease: {record}")
            leader = os.getpgid(holder)  # the group of the worker running it: its children joined it
            [slot] = [slot for slot, worker in enumerate(workers) if worker.pid == leader]
            members = _group(leader)
            killed_at = time.time()
            os.killpg(leader, signal.SIGKILL)
            workers[slot].wait()
            ended_by_s = time.monotonic() + 30
            while any(process_alive(pid) for pid in members):  # its child too, orphaned by the kill
                if time.monotonic() > ended_by_s:
                    raise SystemExit(f"the killed processes {sorted(members)} did not end")
                time.sleep(0.005)
            _until(
                lambda execution_id=execution_id: client.get_execution(execution_id).status == "completed",
                120,
                "the takeover to complete",
            )
            rows = completed_calls(execution_id)
            new = [row for row in rows if row[0] > killed_run]
            taken_at = _claimed_at(logs[1 - slot], execution_id, after=killed_at, reason="runner gone")

            outputs: list[int] = client.get_output(execution_id)
            ran: dict[int, list[int]] = {}
            for line in effects.read_text().splitlines():
                call, pid = line.split()
                ran.setdefault(int(call), []).append(int(pid))
            run_twice, cut_off = judge_calls(outputs, ran, holder)
            problems += [f"{execution_id} {problem}" for problem in run_twice]
            interrupted_run_again += cut_off if index else 0
            if len(rows) != calls or len(outputs) != calls or set(ran) != set(range(calls)):
                problems.append(
                    f"{execution_id}: {len(rows)} records, {len(outputs)} outputs, {len(ran)} calls with side effects"
                )
            if sum(pid == holder for pid in outputs) != len(rows) - len(new):
                problems.append(
                    f"{execution_id}: the killed run's records do not match the outputs of its pid"
                )
            if taken_at is None or not new:
                problems.append(
                    f"{execution_id}: no takeover line in the other worker's log, or no new record"
                )
            elif index:
                samples["taken"].append(taken_at - killed_at)
                samples["first_started"].append(min(row[1] for row in new) - killed_at)
                samples["first_record"].append(min(row[2] for row in new) - killed_at)
                samples["served"].append(float(len(rows) - len(new)))
                if os.environ.get("KITARU_BENCH_VERBOSE"):
                    print(f"    round {index}: killed after {len(rows) - len(new)} records; taken "
                          f"{samples['taken'][-1]:.3f} s, first new call started {samples['first_started'][-1]:.3f} s, "
                          f"first new record {samples['first_record'][-1]:.3f} s")  # fmt: skip
            workers[slot] = start_worker(slot)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait()
        _forget_store(url, drop)
    counted = len(samples["taken"])
    if counted:
        print(
            f"  {kind}, medians: kill -> the other worker took it (its log) {statistics.median(samples['taken']):.3f} s; "
            f"-> the new run's first call started {statistics.median(samples['first_started']):.3f} s; "
            f"-> its first record {statistics.median(samples['first_record']):.3f} s "
            f"(it served {statistics.median(samples['served']):.0f} recorded calls first)"
        )
    print(
        f"  {kind}, checks over {counted} rounds: completed calls run twice or records not adding up: "
        f"{len(problems)}; the call the kill cut off ran again (allowed, at least once): {interrupted_run_again} times"
    )
    if problems:
        raise SystemExit("\n".join(["a takeover went wrong:", *problems]))
    return samples


def judge_calls(outputs: list[int], ran: dict[int, list[int]], killed_pid: int) -> tuple[list[str], int]:
    """Which completed calls ran twice, and how many cut-off calls ran again (allowed).

    Args:
        outputs: Per call, in order, the pid the store kept as its output (the body it committed).
        ran: Per call, the pids of the bodies that ran it, in the order of their side effects.
        killed_pid: The process killed while it ran the execution.

    Returns:
        One line per call whose bodies are neither just the committed one, nor the killed process's
        (cut off before its commit) followed by the committed one of another process; and the count
        of the latter.
    """
    problems: list[str] = []
    cut_off = 0
    for call, committed in enumerate(outputs):
        bodies = ran.get(call, [])
        if bodies == [committed]:
            continue
        if bodies == [killed_pid, committed] and committed != killed_pid:
            cut_off += 1
            continue
        problems.append(
            f"call {call}: bodies ran in processes {bodies}, the store kept the output of {committed}"
        )
    return problems, cut_off


def _group(leader: int) -> set[int]:
    """The pids of the process group `leader` leads (a worker and its children)."""
    members: set[int] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == leader:
                    members.add(int(entry))
            except OSError:
                continue
    return members


def _bench_store(kind: str, measure: str) -> tuple[Path, str, object, dict[str, str]]:
    """A fresh store for one measurement, configured in this process: `(folder, url, drop, environment)`.

    `kind` is `sqlite` (a file in a new temporary folder) or `postgres` (a database of its own,
    dropped by `drop`, else `None`); `environment` points the worker processes at the same store.
    """
    import kitaru_core

    folder = Path(tempfile.mkdtemp(prefix=f"kitaru-bench-{measure}-{kind}-"))
    drop = None
    if kind == "postgres":
        url, drop = _postgres_database()
    else:
        url = f"sqlite:///{folder / 'kitaru.db'}"
    artifacts = str(folder / "artifacts")
    kitaru_core.configure(store_url=url, artifacts_url=artifacts, reset=True)
    environment = {
        **os.environ,
        "KITARU_STORE_URL": url,
        "KITARU_ARTIFACTS_URL": artifacts,
        "KITARU_INTERACTIVE": "false",
        "PYTHONPATH": os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    return folder, url, drop, environment


def _forget_store(url: str, drop: object) -> None:
    """Close this process's store of `url` and reset the configuration; drop the database (`drop`)."""
    import kitaru_core
    from kitaru_core._store import close_stores

    kitaru_core.configure(reset=True)
    close_stores(url)
    if drop is not None:
        drop()  # type: ignore[operator]


def _claimed_at(log: Path, execution_id: str, *, after: float, reason: str = "") -> float | None:
    """When the worker's log says it took `execution_id` (the last such line after `after`).

    `reason`: only lines that give this reason (`runner gone`, `queued`...); empty: any.
    """
    from datetime import datetime

    if not log.exists():
        return None
    needle = f"took execution {execution_id!r}" + (f" ({reason})" if reason else "")
    found = None
    for line in log.read_text(errors="replace").splitlines():
        if needle in line:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if stamp >= after - 0.01:
                found = stamp
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--poll-interval", type=float, default=None, help="the worker's (default: its own)")
    parser.add_argument(
        "--measure",
        choices=["answer", "takeover"],
        default="answer",
        help="answer: API answer -> resumed run (default); takeover: a worker's group killed -> the other takes over",
    )
    parser.add_argument("--calls", type=int, default=200, help="takeover: checkpoint calls per execution")
    arguments = parser.parse_args()
    if arguments.calls < 40:
        parser.error("--calls must be at least 40 (the kill lands after 20 or more recorded calls)")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    kinds = ["sqlite", "postgres"] if arguments.store == "both" else [arguments.store]
    if arguments.measure == "takeover":
        _main_takeover(kinds, arguments.rounds, arguments.calls, arguments.poll_interval)
        return
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


def _main_takeover(kinds: list[str], rounds: int, calls: int, poll_interval_s: float | None) -> None:
    from kitaru_core import _config

    for kind in kinds:
        samples = measure_takeover(kind, rounds, calls, poll_interval_s)
        for key, what in [
            ("taken", "kill -> the other worker took it over (its log)"),
            ("first_record", "kill -> first record of the new run"),
        ]:
            figures = {
                "store": kind,
                "rounds": len(samples[key]),
                "median_s": round(statistics.median(samples[key]), 3),
                "min_s": round(min(samples[key]), 3),
                "max_s": round(max(samples[key]), 3),
            }
            print(f"{what}: {json.dumps(figures)}")
        print(f"  load average {os.getloadavg()[0]:.2f}")
    lease_s = _config.current_settings().lease_duration_s
    print(
        f"another host (not measured): the lease expires first, {2 * lease_s / 3:.0f}-{lease_s:.0f} s after the kill "
        f"(lease_duration_s = {lease_s:g}, renewed every third of it), then the next look for work takes it"
    )


if __name__ == "__main__":
    main()
