"""Benchmark of the durable core against the performance budgets of design.md §7.

Not a test (pytest does not collect it). Run it with `nox -s bench` or:

    PYTHONDONTWRITEBYTECODE= .venv/bin/python tests/benchmarks/bench_core.py [--calls N] [--repeat R]

Every repetition uses a fresh SQLite file store (WAL, the project's default engine settings) in a
new temporary directory and prints, from that one run:

1. bare SQLite WAL commit: the stdlib `sqlite3` baseline (same PRAGMAs as `_store._on_connect`,
   `BEGIN IMMEDIATE` + one small INSERT + `COMMIT`),
2. record: one live `@checkpoint` call inside a `@flow` (each call commits),
3. serve: one call served from the store on resume,
4. resume: wall time of the whole resuming flow call (find, lease, load records, serve N calls,
   mark them served, finish),
5. import: `import kitaru_core` in a fresh interpreter (bytecode cache allowed),

each as a ratio to the bare commit and against its budget.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy

import kitaru_core
from kitaru_core import checkpoint, flow

BUDGETS = {  # design.md §7
    "record_us": 500.0,
    "serve_us": 100.0,
    "import_ms": 150.0,
    "resume_s": 0.5,
}

# -- the measured flow ------------------------------------------------------------------------------


class PlannedFailure(RuntimeError):
    """Raised at the end of the first run so the execution is `failed` and the next run resumes it."""


@dataclass
class FlowProbe:
    """What the benchmark flow observed during one run."""

    fail_at_end: bool = False
    timings_ns: list[int] = field(default_factory=list)
    live_calls: int = 0
    execution_id: str | None = None


PROBE = FlowProbe()


@checkpoint
def step(i: int) -> int:
    """The trivial checkpoint: its cost is the core's overhead alone."""
    PROBE.live_calls += 1
    return i + 1


@flow(name="bench_core.calls")
def calls_flow(tag: str, n: int) -> int:
    """Call `step` `n` times, timing each call; raise at the end when asked to."""
    context = kitaru_core.current_execution()
    PROBE.execution_id = context.execution_id if context is not None else None
    timings = PROBE.timings_ns
    clock = time.perf_counter_ns
    total = 0
    for i in range(n):
        started = clock()
        total += step(i)
        timings.append(clock() - started)
    if PROBE.fail_at_end:
        raise PlannedFailure(f"planned failure after {n} calls ({tag})")
    return total


@flow(name="bench_core.warmup")
def warmup_flow(n: int) -> int:
    """A short flow run first so one-time costs (first engine connection, pydantic adapters) are paid."""
    return sum(step(i) for i in range(n))


# -- helpers ----------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))
    return ordered[index]


@dataclass
class Stats:
    """Median, p95 and mean of a sample, in microseconds."""

    median: float
    p95: float
    mean: float
    count: int

    @classmethod
    def of_ns(cls, samples_ns: Sequence[int]) -> Stats:
        """Summarize nanosecond samples as microseconds."""
        micros = [sample / 1000 for sample in samples_ns]
        return cls(statistics.median(micros), percentile(micros, 0.95), statistics.fmean(micros), len(micros))


def verdict(value: float, budget: float) -> str:
    """PASS when under the budget."""
    return "PASS" if value < budget else "OVER"


def sqlite_pragmas(connection: sqlite3.Connection) -> dict[str, Any]:
    """The PRAGMAs that matter for commit cost, as the connection sees them."""
    names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout", "wal_autocheckpoint", "page_size")
    return {name: connection.execute(f"PRAGMA {name}").fetchone()[0] for name in names}


SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def filesystem_of(path: Path) -> str:
    """The file system type holding `path` (fsync cost depends on it), from /proc/mounts."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    resolved, best = str(path.resolve()), ("", "unknown")
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and resolved.startswith(parts[1]) and len(parts[1]) > len(best[0]):
            best = (parts[1], parts[2])
    return f"{best[1]} (mounted at {best[0]})"


# -- the measurements -------------------------------------------------------------------------------


def bare_commit(directory: Path, commits: int) -> tuple[Stats, dict[str, Any]]:
    """Median cost of BEGIN IMMEDIATE + one small INSERT + COMMIT with stdlib sqlite3 on a WAL file.

    The connection is set up as `_store._make_engine` sets up its connections: autocommit mode
    (`isolation_level=None`, the store issues BEGIN itself), timeout 30 s, `journal_mode=WAL`,
    `foreign_keys=ON`, `busy_timeout=30000`, and SQLite's default `synchronous` (FULL).
    """
    connection = sqlite3.connect(
        directory / "bare.db", isolation_level=None, timeout=30, check_same_thread=False
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA busy_timeout=30000")
    connection.execute(
        "CREATE TABLE rows (id INTEGER PRIMARY KEY AUTOINCREMENT, execution_id TEXT NOT NULL, "
        "call_key TEXT NOT NULL, payload BLOB, ended_at REAL NOT NULL)"
    )
    pragmas = sqlite_pragmas(connection)
    insert = "INSERT INTO rows (execution_id, call_key, payload, ended_at) VALUES (?, ?, ?, ?)"
    samples: list[int] = []
    clock = time.perf_counter_ns
    for i in range(-50, commits):  # 50 warm-up commits are not counted
        started = clock()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(insert, ("bench", f"step:{i}", b"1", time.time()))
        connection.execute("COMMIT")
        elapsed = clock() - started
        if i >= 0:
            samples.append(elapsed)
    connection.close()
    return Stats.of_ns(samples), pragmas


@dataclass
class CoreFigures:
    """Figures of the record/serve/resume measurement."""

    store_url: str
    store_pragmas: dict[str, Any]
    record: Stats
    serve: Stats
    resume_s: float
    serve_loop_s: float
    execution_id: str


def core_calls(directory: Path, calls: int, tag: str) -> CoreFigures:
    """Record `calls` checkpoint calls in one flow run that fails at its end, then resume it."""
    store_url = f"sqlite:///{directory / 'kitaru.db'}"
    kitaru_core.configure(store_url=store_url, artifacts_url=str(directory / "artifacts"), reset=True)
    from kitaru_core._runtime import get_store

    store = get_store()
    with store.engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert raw is not None
        store_pragmas = sqlite_pragmas(raw)  # pyright: ignore[reportArgumentType]
        connection.rollback()

    warmup_flow.run(20, fresh=True)

    # 2. record: every call runs and commits.
    PROBE.fail_at_end, PROBE.timings_ns, PROBE.live_calls = True, [], 0
    try:
        calls_flow(tag, calls)
    except PlannedFailure:
        pass
    else:
        raise AssertionError("the first run should have failed at its end")
    if PROBE.live_calls != calls:
        raise AssertionError(f"expected {calls} live calls, {PROBE.live_calls} ran")
    record = Stats.of_ns(PROBE.timings_ns)
    first_execution = PROBE.execution_id
    failed = store.get_execution(first_execution or "")
    if failed.status != "failed":
        raise AssertionError(f"the first run left the execution {failed.status!r}, expected 'failed'")

    # 3 + 4. resume: same flow, same inputs: the failed execution resumes and every call is served.
    PROBE.fail_at_end, PROBE.timings_ns, PROBE.live_calls = False, [], 0
    started = time.perf_counter()
    calls_flow(tag, calls)
    resume_s = time.perf_counter() - started
    if PROBE.execution_id != first_execution:
        raise AssertionError(f"resume ran execution {PROBE.execution_id}, expected {first_execution}")
    if PROBE.live_calls != 0:
        raise AssertionError(f"resume ran {PROBE.live_calls} calls live; all should be served from the store")
    if store.get_execution(first_execution or "").status != "completed":
        raise AssertionError("the resumed execution did not complete")
    serve = Stats.of_ns(PROBE.timings_ns)
    serve_loop_s = sum(PROBE.timings_ns) / 1e9
    store.close()
    return CoreFigures(store_url, store_pragmas, record, serve, resume_s, serve_loop_s, first_execution or "")


IMPORT_PROBE = (
    "import time\nstarted = time.perf_counter()\nimport kitaru_core\nprint(time.perf_counter() - started)\n"
)


def import_time(runs: int, cwd: Path) -> tuple[float, list[float]]:
    """Median seconds of `import kitaru_core` in fresh interpreters, with the bytecode cache usable."""
    environment = dict(os.environ)
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    environment.pop("PYTHONPROFILEIMPORTTIME", None)
    samples: list[float] = []
    for index in range(runs + 1):  # the first run only writes .pyc files
        output = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE],
            cwd=cwd,
            env=environment,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        if index > 0:
            samples.append(float(output.strip().splitlines()[-1]))
    return statistics.median(samples), samples


# -- report -----------------------------------------------------------------------------------------


def machine_facts(directory: Path) -> None:
    """Print what the figures depend on."""
    bytecode = os.environ.get("PYTHONDONTWRITEBYTECODE")
    print("machine")
    print(f"  python        {platform.python_version()} ({sys.executable})")
    print(f"  platform      {platform.platform()}")
    print(f"  cpu count     {os.cpu_count()}")
    print(f"  sqlite        {sqlite3.sqlite_version} (stdlib sqlite3 module)")
    print(f"  SQLAlchemy    {sqlalchemy.__version__}")
    print(f"  kitaru_core   {kitaru_core.__version__}")
    print(f"  temp dir fs   {filesystem_of(directory)}")
    print(
        f"  PYTHONDONTWRITEBYTECODE={bytecode!r} in this process; "
        "unset in the import-time subprocesses so cached bytecode is used"
    )


def line(label: str, value: str, ratio: float, budget: str, passed: str) -> str:
    """One figure line: value, ratio to the bare commit, budget and verdict."""
    return f"  {label:<24} {value:<44} = {ratio:>8.2f}x bare commit   budget {budget:<9} {passed}"


def run_once(index: int, args: argparse.Namespace) -> dict[str, float]:
    """One full measurement in a fresh temporary directory; prints it and returns its headline figures."""
    directory = Path(tempfile.mkdtemp(prefix="kitaru-bench-", dir=args.dir))
    try:
        bare, bare_pragmas = bare_commit(directory, args.commits)
        core = core_calls(directory, args.calls, tag=f"run-{index}")
        import_median_s, import_samples = import_time(args.import_runs, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    def pragma_text(pragmas: dict[str, Any]) -> str:
        sync = SYNCHRONOUS.get(pragmas["synchronous"], pragmas["synchronous"])
        return (
            f"journal_mode={pragmas['journal_mode']} synchronous={sync} foreign_keys={pragmas['foreign_keys']} "
            f"busy_timeout={pragmas['busy_timeout']} wal_autocheckpoint={pragmas['wal_autocheckpoint']}"
        )

    base = bare.median
    record, serve = core.record, core.serve
    import_ms = import_median_s * 1000
    print(f"\nrun {index + 1}/{args.repeat}  (temp dir {directory}, removed)")
    print(f"  store URL     {core.store_url}")
    print(f"  store PRAGMAs {pragma_text(core.store_pragmas)}")
    print(f"  bare PRAGMAs  {pragma_text(bare_pragmas)}")
    print(
        f"  {'bare SQLite WAL commit':<24} median {base:8.1f} us  p95 {bare.p95:8.1f} us  "
        f"mean {bare.mean:8.1f} us  ({bare.count} x BEGIN IMMEDIATE + INSERT + COMMIT, stdlib sqlite3)"
    )
    print(
        line(
            "record checkpoint call",
            f"median {record.median:7.1f} us  p95 {record.p95:7.1f}  mean {record.mean:7.1f}",
            record.median / base,
            f"< {BUDGETS['record_us']:.0f} us",
            verdict(record.median, BUDGETS["record_us"]),
        )
    )
    print(
        line(
            "serve call on resume",
            f"median {serve.median:7.1f} us  p95 {serve.p95:7.1f}  mean {serve.mean:7.1f}",
            serve.median / base,
            f"< {BUDGETS['serve_us']:.0f} us",
            verdict(serve.median, BUDGETS["serve_us"]),
        )
    )
    print(
        line(
            f"resume of {args.calls} calls",
            f"{core.resume_s:.3f} s (serving loop {core.serve_loop_s:.3f} s, rest "
            f"{core.resume_s - core.serve_loop_s:.3f} s)",
            core.resume_s * 1e6 / base,
            f"< {BUDGETS['resume_s']} s",
            verdict(core.resume_s, BUDGETS["resume_s"]),
        )
    )
    print(
        line(
            "import kitaru_core",
            f"median {import_ms:6.1f} ms of {len(import_samples)} fresh interpreters",
            import_ms * 1000 / base,
            f"< {BUDGETS['import_ms']:.0f} ms",
            verdict(import_ms, BUDGETS["import_ms"]),
        )
    )
    print(f"    import samples (ms): {', '.join(f'{sample * 1000:.1f}' for sample in import_samples)}")
    if args.calls != 1000:
        print(f"  note: the resume budget is defined for 1,000 calls; this run used {args.calls}.")
    return {
        "bare_us": base,
        "record_us": record.median,
        "serve_us": serve.median,
        "resume_s": core.resume_s,
        "import_ms": import_ms,
    }


TYPICAL_OUTPUT: dict[str, Any] = {  # what a checkpoint typically returns: an API record as a dict
    "order_id": 7,
    "customer": "c-1042",
    "status": "paid",
    "total": 30.0,
    "currency": "EUR",
    "paid": True,
    "note": None,
    "lines": [{"sku": f"SKU-{index}", "quantity": index + 1, "price": 9.99} for index in range(5)],
}


def codec_cost(samples: int = 5000) -> None:
    """Encode+decode cost of one call's output: the 0.1 codec (pydantic, annotation) vs `json+typed/1`."""
    from pydantic import TypeAdapter

    from kitaru_core import JsonCodec

    hint = dict[str, Any]
    adapter = TypeAdapter(hint)

    def old_round_trip() -> Any:  # 0.1: dump through the annotation's TypeAdapter, validate it back
        return adapter.validate_json(adapter.dump_json(TYPICAL_OUTPUT))

    codec = JsonCodec(type_hint=hint)

    def new_round_trip() -> Any:
        return codec.decode(*codec.encode(TYPICAL_OUTPUT))

    print("\ncodec: encode + decode of a typical dict output (8 keys, 5 nested line dicts)")
    for label, function in (("0.1 json (pydantic)", old_round_trip), ("json+typed/1", new_round_trip)):
        timings_ns: list[int] = []
        for _ in range(samples):
            started = time.perf_counter_ns()
            function()
            timings_ns.append(time.perf_counter_ns() - started)
        stats = Stats.of_ns(timings_ns)
        print(f"  {label:<22} median {stats.median:7.1f} us  p95 {stats.p95:7.1f} us  ({samples} samples)")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, run the measurement `--repeat` times, print every run and a summary."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--calls", type=int, default=1000, help="checkpoint calls per flow run (default 1000)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="repeat the whole measurement R times (default 1)"
    )
    parser.add_argument(
        "--commits", type=int, default=2000, help="bare SQLite commits measured (default 2000)"
    )
    parser.add_argument("--import-runs", type=int, default=5, help="fresh interpreters timed (default 5)")
    parser.add_argument(
        "--dir", default=None, help="where to create the temporary directory (default: $TMPDIR)"
    )
    args = parser.parse_args(argv)
    if args.calls < 1 or args.repeat < 1 or args.commits < 1 or args.import_runs < 1:
        parser.error("--calls, --repeat, --commits and --import-runs must be >= 1")

    machine_facts(Path(args.dir or tempfile.gettempdir()))
    codec_cost()
    results = [run_once(index, args) for index in range(args.repeat)]
    if args.repeat > 1:
        print(f"\nsummary of {args.repeat} runs (per-run medians; min / median / max)")
        for key, unit in (
            ("bare_us", "us"),
            ("record_us", "us"),
            ("serve_us", "us"),
            ("resume_s", "s"),
            ("import_ms", "ms"),
        ):
            values = [result[key] for result in results]
            print(
                f"  {key:<10} {min(values):10.3f} / {statistics.median(values):10.3f} / {max(values):10.3f} {unit}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
