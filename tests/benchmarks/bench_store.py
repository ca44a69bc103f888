"""Benchmark of the store at scale: a page of the executions list at 100,000 executions.

Not a test (pytest does not collect it). Run it in the environment of the core tests:

    .nox/tests_core/bin/python tests/benchmarks/bench_store.py [--executions N] [--repeat R] [--backend B]

For each backend (SQLite file, PostgreSQL when it answers) it fills a fresh store with N executions
(20 flows, statuses mostly `completed`, creation times one second apart), then times what the CLI,
`Client.list_executions` and the dashboard's list page run: a page of 50 (`Store.list_executions`) and
its total (`Store.count_executions`), unfiltered and filtered by status, flow, both, and creation
time. Each figure is the median of `--repeat` runs. The same queries are then timed again after
dropping the list indexes of revision 0008 (the "before" figures: the schema of revision 0007), so
both sides are measured in the same run on the same data. The query plans (SQLite `EXPLAIN QUERY
PLAN`, PostgreSQL `EXPLAIN`) of the indexed queries are printed to show the index each one uses.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy

from kitaru_core import _tables as tables
from kitaru_core._store import Store

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
FLOWS = [f"flow_{i:02d}" for i in range(20)]
BUDGET_MS = 20.0  # design.md §7: a page of executions at 100,000 executions

# Revision 0008's list indexes, and the index of 0007 they replace (the "before" schema).
NEW_INDEXES = [
    "ix_kitaru_executions_created",
    "ix_kitaru_executions_status_created",
    "ix_kitaru_executions_flow_created",
    "ix_kitaru_executions_status_updated",
]


def _status(i: int) -> str:
    if i % 1000 == 7:
        return "waiting"
    if i % 500 == 3:
        return "running"
    if i % 20 == 1:
        return "failed"
    if i % 250 == 5:
        return "cancelled"
    return "completed"


def fill(store: Store, count: int) -> float:
    """Insert `count` executions in batches; returns the newest creation time."""
    start = time.time() - count
    rows: list[dict[str, Any]] = []
    with store.engine.begin() as connection:
        for i in range(count):
            created = start + i
            rows.append(
                {
                    "id": f"exec-{i:07d}-{uuid.uuid4().hex[:8]}",
                    "flow_name": FLOWS[(i * 7) % len(FLOWS)],
                    "inputs_fingerprint": f"{i:064x}",
                    "status": _status(i),
                    "run_count": 1,
                    "cancel_requested": False,
                    "created_at_epoch_s": created,
                    "updated_at_epoch_s": created + 3,
                    "ended_at_epoch_s": created + 3,
                    "queue": "default",
                }
            )
            if len(rows) == 10_000:
                connection.execute(sqlalchemy.insert(tables.executions), rows)
                rows = []
        if rows:
            connection.execute(sqlalchemy.insert(tables.executions), rows)
    return start + count


Case = tuple[str, dict[str, Any]]


def cases(newest: float) -> list[Case]:
    return [
        ("unfiltered", {}),
        ("unfiltered, page 20 (offset 950)", {"offset": 950}),
        ("status=failed", {"statuses": ["failed"]}),
        ("status=running|waiting", {"statuses": ["running", "waiting"]}),
        ("status=completed", {"statuses": ["completed"]}),
        ("flow=flow_07", {"flow_name": "flow_07"}),
        ("flow=flow_07 & status=failed", {"flow_name": "flow_07", "statuses": ["failed"]}),
        ("created in the last hour", {"created_after_epoch_s": newest - 3600}),
    ]


def _median_ms(action: Callable[[], object], repeat: int) -> float:
    action()  # warm-up (statement cache, pages in memory)
    samples: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def measure(store: Store, newest: float, repeat: int) -> dict[str, tuple[float, float]]:
    """Per case: (page of 50 ms, total count ms), medians."""
    figures: dict[str, tuple[float, float]] = {}
    for name, filters in cases(newest):
        page_filters = {key: value for key, value in filters.items() if key != "offset"}
        offset = filters.get("offset", 0)
        page_ms = _median_ms(
            lambda page_filters=page_filters, offset=offset: store.list_executions(
                **page_filters, limit=50, offset=offset
            ),
            repeat,
        )
        count_ms = _median_ms(lambda page_filters=page_filters: store.count_executions(**page_filters), repeat)
        figures[name] = (page_ms, count_ms)
    return figures


def plans(store: Store, newest: float) -> None:
    """Print the query plan of each page query."""
    dialect = store.engine.dialect
    t = tables.executions
    for name, filters in cases(newest):
        page_filters = {key: value for key, value in filters.items() if key != "offset"}
        query = (
            sqlalchemy.select(t)
            .where(*Store._execution_filters(  # pyright: ignore[reportPrivateUsage]
                page_filters.get("statuses", ()),
                page_filters.get("flow_name"),
                page_filters.get("created_after_epoch_s"),
                None,
            ))
            .order_by(t.c.created_at_epoch_s.desc(), t.c.id)
            .limit(50)
            .offset(filters.get("offset", 0))
        )
        compiled = query.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
        prefix = "EXPLAIN QUERY PLAN " if dialect.name == "sqlite" else "EXPLAIN "
        with store.engine.connect() as connection:
            rows = connection.exec_driver_sql(prefix + str(compiled)).all()
        lines = [str(row[-1]) for row in rows]
        print(f"    plan [{name}]: " + " | ".join(line.strip() for line in lines))


def drop_new_indexes(store: Store) -> None:
    with store.engine.begin() as connection:
        for index in NEW_INDEXES:
            connection.exec_driver_sql(f"DROP INDEX IF EXISTS {index}")
        connection.exec_driver_sql(
            "CREATE INDEX IF NOT EXISTS ix_kitaru_executions_status "
            "ON kitaru_executions (status, created_at_epoch_s)"
        )
        if store.engine.dialect.name == "postgresql":
            connection.exec_driver_sql("ANALYZE kitaru_executions")


def run_backend(label: str, url: str, artifacts: str, count: int, repeat: int) -> None:
    store = Store(url, artifacts)
    start = time.perf_counter()
    newest = fill(store, count)
    if store.engine.dialect.name == "postgresql":
        with store.engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE kitaru_executions")
    print(f"\n{label}: {count:,} executions inserted in {time.perf_counter() - start:.1f} s ({url})")
    after = measure(store, newest, repeat)
    plans(store, newest)
    drop_new_indexes(store)
    before = measure(store, newest, repeat)
    print(f"  {'query':34} {'page before':>12} {'page after':>11} {'ratio':>7}   {'count before':>12} {'count after':>11}")
    for name in after:
        page_after, count_after = after[name]
        page_before, count_before = before[name]
        verdict = "PASS" if page_after < BUDGET_MS else "OVER"
        print(
            f"  {name:34} {page_before:9.2f} ms {page_after:8.2f} ms {page_before / page_after:6.1f}x"
            f"   {count_before:9.2f} ms {count_after:8.2f} ms   page {verdict} (< {BUDGET_MS:g} ms)"
        )
    store.close()


# -- SQLite durability: synchronous=FULL against NORMAL ---------------------------------------------


def bare_commits_us(path: Path, synchronous: str, commits: int) -> float:
    """Median µs of BEGIN IMMEDIATE + one small INSERT + COMMIT (stdlib sqlite3, WAL, this synchronous)."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, key TEXT, payload BLOB)")
    samples: list[float] = []
    for i in range(-20, commits):
        start = time.perf_counter_ns()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO rows (key, payload) VALUES (?, ?)", (f"step:{i}", b"1"))
        connection.execute("COMMIT")
        if i >= 0:
            samples.append((time.perf_counter_ns() - start) / 1000)
    connection.close()
    return statistics.median(samples)


def recorded_calls_us(directory: Path, synchronous: str, calls: int) -> float:
    """Median µs of one live `@checkpoint` call in a flow on a SQLite file with this synchronous mode."""
    import kitaru_core
    from kitaru_core import checkpoint, flow

    timings: list[float] = []

    @checkpoint(name="bench_store.step")
    def step(i: int) -> int:
        return i + 1

    @flow(name="bench_store.calls")
    def calls_flow(tag: str, n: int) -> None:
        for i in range(n):
            start = time.perf_counter_ns()
            step(i)
            timings.append((time.perf_counter_ns() - start) / 1000)

    kitaru_core.configure(
        store_url=f"sqlite:///{directory / f'calls-{synchronous}.db'}",
        artifacts_url=str(directory / "artifacts"),
        sqlite_synchronous=synchronous.lower(),
    )
    calls_flow(uuid.uuid4().hex, 20)  # warm-up: first connection, adapters
    timings.clear()
    calls_flow(uuid.uuid4().hex, calls)
    kitaru_core.configure(reset=True)
    return statistics.median(timings)


def run_durability(directory: Path, commits: int, calls: int, repeat: int) -> None:
    """FULL and NORMAL measured alternately, `repeat` rounds; medians of the per-round medians."""
    figures: dict[str, list[float]] = {"bare FULL": [], "bare NORMAL": [], "call FULL": [], "call NORMAL": []}
    for round_ in range(repeat):
        for mode in ("FULL", "NORMAL"):
            figures[f"bare {mode}"].append(bare_commits_us(directory / f"bare-{mode}-{round_}.db", mode, commits))
            figures[f"call {mode}"].append(recorded_calls_us(directory / f"r{round_}", mode, calls))
    median = {name: statistics.median(values) for name, values in figures.items()}
    print(f"\nSQLite durability ({repeat} rounds alternating FULL/NORMAL; {commits} commits, {calls} calls each):")
    for name, values in figures.items():
        print(f"  {name:12} median {median[name]:8.1f} µs   rounds: " + ", ".join(f"{v:.0f}" for v in values))
    print(
        f"  NORMAL/FULL: bare commit {median['bare NORMAL'] / median['bare FULL']:.3f}x, "
        f"recorded call {median['call NORMAL'] / median['call FULL']:.3f}x; recorded call / bare commit: "
        f"FULL {median['call FULL'] / median['bare FULL']:.1f}x, NORMAL {median['call NORMAL'] / median['bare NORMAL']:.1f}x"
    )


# -- overhead of a recorded call over a bare commit, fsync made cheap ---------------------------------


def run_overhead(directory: Path, calls: int, rounds: int) -> None:
    """A recorded call against a bare commit with fsync out of the picture, in one process.

    Both sides use WAL with `synchronous=NORMAL` (no fsync per commit) on the file system holding
    `directory` (use a tmpfs such as /dev/shm to leave the disk out too), so the ratio measures
    the core's overhead. Blocks of bare commits, recorded calls and the store's own insert statement
    on its own schema through the driver (the floor of a recorded call: the same SQL work, no
    Python around it) alternate for `rounds` rounds; each figure is the median of the per-round
    medians.
    """
    import kitaru_core
    from kitaru_core import checkpoint, flow
    from kitaru_core._runtime import get_store

    timings: list[int] = []

    @checkpoint(name="bench_store.overhead_step")
    def step(i: int) -> int:
        return i + 1

    @flow(name="bench_store.overhead")
    def calls_flow(tag: str, n: int) -> None:
        clock = time.perf_counter_ns
        for i in range(n):
            start = clock()
            step(i)
            timings.append(clock() - start)

    kitaru_core.configure(
        store_url=f"sqlite:///{directory / 'overhead.db'}",
        artifacts_url=str(directory / "artifacts"),
        sqlite_synchronous="normal",
    )
    calls_flow(uuid.uuid4().hex, 50)  # warm-up: first connection, adapters
    store = get_store()
    [record] = store.list_executions(flow_name="bench_store.overhead", limit=1)
    floor_connection = sqlite3.connect(directory / "overhead.db", isolation_level=None, timeout=30)
    floor_connection.execute("PRAGMA synchronous=NORMAL")
    floor_connection.execute("PRAGMA foreign_keys=ON")
    floor_connection.execute("BEGIN IMMEDIATE")
    floor_connection.execute(
        "UPDATE kitaru_executions SET lease_owner = 'bench-floor' WHERE id = ?", (record.id,)
    )  # the finished warm-up execution, leased to the floor's inserts
    floor_connection.execute("COMMIT")
    sequence = 1000

    def floor_block(n: int) -> list[int]:
        """The insert a recorded call of `step` makes (same columns, one autocommit statement), timed alone."""
        nonlocal sequence
        samples: list[int] = []
        for i in range(n):
            sequence += 1
            now = time.time()
            values = {
                "execution_id": record.id,
                "call_key": f"floor:{sequence}",
                "name": "floor",
                "kind": "user",
                "sequence": sequence,
                "status": "completed",
                "attempts": 1,
                "run_number": 1,
                "started_at_epoch_s": now,
                "ended_at_epoch_s": now,
                "fingerprint": "0" * 64,
                "output_format": "json+typed/1",
                "output_size_bytes": len(str(i)),
                "output": str(i).encode(),
            }
            sql = store._leased_insert_of(tuple(values))  # pyright: ignore[reportPrivateUsage]
            parameters = [*values.values(), record.id, "bench-floor"]
            start = time.perf_counter_ns()
            cursor = floor_connection.execute(sql, parameters)
            samples.append(time.perf_counter_ns() - start)
            assert cursor.rowcount == 1
        return samples

    figures: dict[str, list[float]] = {"bare commit": [], "insert floor": [], "recorded call": []}
    for round_ in range(rounds):
        figures["bare commit"].append(
            bare_commits_us(directory / f"overhead-bare-{round_}.db", "NORMAL", calls)
        )
        figures["insert floor"].append(statistics.median(floor_block(calls)) / 1000)
        timings.clear()
        calls_flow(uuid.uuid4().hex, calls)
        figures["recorded call"].append(statistics.median(timings) / 1000)
    floor_connection.close()
    kitaru_core.configure(reset=True)
    median = {name: statistics.median(values) for name, values in figures.items()}
    bare = median["bare commit"]
    print(
        f"\nRecorded call over a bare commit, WAL synchronous=NORMAL on {directory} "
        f"({rounds} rounds of {calls}; medians of per-round medians):"
    )
    for name, values in figures.items():
        print(
            f"  {name:14} {median[name]:8.1f} µs = {median[name] / bare:4.2f}x bare commit   rounds: "
            + ", ".join(f"{value:.1f}" for value in values)
        )
    print(
        f"  the core's Python overhead (recorded call - insert floor): "
        f"{median['recorded call'] - median['insert floor']:.1f} µs per call"
    )


# -- restart to first served call ------------------------------------------------------------------

_RESTART_SCRIPT = """
import sys
import kitaru_core
from kitaru_core import checkpoint, flow

@checkpoint(name="restart.step")
def step(i: int) -> int:
    return i + 1

@flow(name="restart.flow")
def restart_flow(n: int, crash: bool) -> int:
    total = sum(step(i) for i in range(n))
    if crash:
        raise SystemExit(3)  # the first run stops after its calls: the next one resumes it
    return total

kitaru_core.configure(store_url=sys.argv[1], artifacts_url=sys.argv[2])
mode = sys.argv[3]
if mode == "completed":
    result = restart_flow.run(20, False, execution_id="restart-completed")
else:
    result = restart_flow.run(20, mode == "crash-first", execution_id="restart-crashed-" + sys.argv[4])
print(result)
"""

_PLAIN_SCRIPT = """
def step(i: int) -> int:
    return i + 1

def restart_flow(n: int) -> int:
    return sum(step(i) for i in range(n))

print(restart_flow(20))
"""


def run_restart(directory: Path, repeat: int) -> None:
    """Wall time from a fresh interpreter to the result of a stored run, against a plain re-run.

    Three scripts run `repeat` times each, alternating, in fresh interpreters (bytecode cached):
    a completed named run run again (served: one read), a crashed named run resumed (20 calls
    served, then it completes), and the same script without kitaru. Each figure is the median wall
    time of the whole process (`subprocess` start to exit) and its
    CPU time (user + system), which a loaded machine does not inflate the way it inflates wall time.
    """
    import subprocess

    script = directory / "restart_script.py"
    script.write_text(_RESTART_SCRIPT)
    plain = directory / "plain_script.py"
    plain.write_text(_PLAIN_SCRIPT)
    store_url = f"sqlite:///{directory / 'restart.db'}"
    artifacts = str(directory / "restart-artifacts")

    def timed(arguments: list[str], expect_code: int = 0) -> tuple[float, float]:
        """(wall ms of the process, CPU ms of the process: user + system)."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *arguments], capture_output=True, text=True, check=False)
        wall_ms = (time.perf_counter() - start) * 1000
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != expect_code:
            raise RuntimeError(f"restart script failed ({done.returncode}): {done.stderr[-2000:]}")
        cpu_ms = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
        return wall_ms, cpu_ms

    timed([str(script), store_url, artifacts, "completed"])  # the run that completes, and the .pyc files
    figures: dict[str, list[tuple[float, float]]] = {"completed named run again": [], "crashed run resumed": [], "plain re-run": []}
    for round_ in range(repeat):
        figures["completed named run again"].append(timed([str(script), store_url, artifacts, "completed"]))
        timed([str(script), store_url, artifacts, "crash-first", str(round_)], expect_code=3)
        figures["crashed run resumed"].append(timed([str(script), store_url, artifacts, "resume", str(round_)]))
        figures["plain re-run"].append(timed([str(plain)]))
    plain_wall = statistics.median(wall for wall, _ in figures["plain re-run"])
    plain_cpu = statistics.median(cpu for _, cpu in figures["plain re-run"])
    print(
        f"\nRestart to result ({repeat} fresh interpreters each, alternating; medians; CPU = user + system "
        "of the process, the figure to trust on a loaded machine):"
    )
    for name, samples in figures.items():
        wall = statistics.median(wall for wall, _ in samples)
        cpu = statistics.median(cpu for _, cpu in samples)
        print(
            f"  {name:26} {wall:7.0f} ms wall = {wall / plain_wall:5.1f}x plain;"
            f"  {cpu:6.0f} ms CPU = {cpu / plain_cpu:5.1f}x plain"
        )


# -- the dashboard's change marker ------------------------------------------------------------------


def _old_change_marker(store: Store) -> str:
    """The whole-store change marker before it used indexes: aggregates over every table (the "before")."""
    e, c, w = tables.executions, tables.checkpoint_calls, tables.waits
    func = sqlalchemy.func
    queries = [
        sqlalchemy.select(func.count(), func.max(e.c.updated_at_epoch_s), func.max(e.c.run_count)),
        sqlalchemy.select(func.count(), func.max(c.c.id), func.sum(c.c.last_served_run)),
        sqlalchemy.select(
            func.count(),
            func.max(w.c.id),
            func.max(w.c.answered_at_epoch_s),
            func.sum(sqlalchemy.case((w.c.status == "pending", 1), else_=0)),
        ),
    ]
    with store.engine.connect() as connection:
        return repr([tuple(connection.execute(query).one()) for query in queries])


def run_marker(label: str, url: str, artifacts: str, count: int, calls_each: int, repeat: int) -> None:
    """`Store.change_marker` (polled every 250 ms by the dashboard) at `count` executions."""
    store = Store(url, artifacts)
    now = time.time()
    with store.engine.begin() as connection:
        for start in range(0, count, 10_000):
            ids = range(start, min(count, start + 10_000))
            connection.execute(
                sqlalchemy.insert(tables.executions),
                [
                    {
                        "id": f"m-{i}",
                        "flow_name": FLOWS[i % len(FLOWS)],
                        "inputs_fingerprint": f"{i:064x}",
                        "status": _status(i),
                        "run_count": 1,
                        "cancel_requested": False,
                        "created_at_epoch_s": now - count + i,
                        "updated_at_epoch_s": now - count + i,
                        "queue": "default",
                    }
                    for i in ids
                ],
            )
            connection.execute(
                sqlalchemy.insert(tables.checkpoint_calls),
                [
                    {
                        "execution_id": f"m-{i}",
                        "call_key": f"step:{j}",
                        "name": "step",
                        "kind": "user",
                        "sequence": j + 1,
                        "status": "completed",
                        "attempts": 1,
                        "run_number": 1,
                        "started_at_epoch_s": now,
                        "ended_at_epoch_s": now,
                        "output_format": "json+typed/1",
                        "output": b"1",
                    }
                    for i in ids
                    for j in range(calls_each)
                ],
            )
            connection.execute(
                sqlalchemy.insert(tables.waits),
                [
                    {
                        "execution_id": f"m-{i}",
                        "name": "approve",
                        "call_key": "",
                        "question": "ok?",
                        "schema": "{}",
                        "status": "pending" if i % 3 == 0 else "answered",
                        "created_at_epoch_s": now,
                        "answered_at_epoch_s": None if i % 3 == 0 else now,
                    }
                    for i in ids
                    if i % 5 == 0
                ],
            )
    if store.engine.dialect.name == "postgresql":
        with store.engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
    whole = _median_ms(store.change_marker, repeat)
    one = _median_ms(lambda: store.change_marker(f"m-{count // 2}"), repeat)
    old = _median_ms(lambda: _old_change_marker(store), repeat)
    print(
        f"\nChange marker, {label}: {count:,} executions, {count * calls_each:,} calls, {count // 5:,} waits "
        f"(medians of {repeat}):\n  whole store: before (aggregates) {old:8.2f} ms, now {whole:6.2f} ms "
        f"({old / whole:.0f}x less); one execution: {one:.2f} ms"
    )
    store.close()


# -- resume memory per stored call ------------------------------------------------------------------


def run_memory(directory: Path, calls: int) -> None:
    """Memory a resume holds per stored call: what loading an execution's records keeps (tracemalloc)."""
    import gc
    import tracemalloc

    import kitaru_core
    from kitaru_core import _config, checkpoint, flow
    from kitaru_core._runtime import ExecutionContext, get_store

    @checkpoint(name="bench_store.memory_step")
    def step(i: int) -> int:
        return i + 1

    @flow(name="bench_store.memory")
    def memory_flow(n: int) -> None:
        for i in range(n):
            step(i)
        raise RuntimeError("stop: the next run resumes")

    kitaru_core.configure(
        store_url=f"sqlite:///{directory / 'memory.db'}",
        artifacts_url=str(directory / "artifacts"),
        sqlite_synchronous="normal",  # only the filling is faster; loading is the same
    )
    with contextlib.suppress(RuntimeError):  # the flow stops after its calls so the next run resumes
        memory_flow(calls)
    store = get_store()
    [record] = store.list_executions(flow_name="bench_store.memory", limit=1)
    settings = _config.current_settings()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    context = ExecutionContext(store, record, "bench", settings)  # what a resume loads before serving
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.reset_peak()
    values = 0
    for i in range(calls):  # serve every call, as the resume would: records are paged in
        call = context.stored_call(f"bench_store.memory_step:{i}")
        payload = call.output.payload if call is not None and call.output is not None else None
        assert payload is not None, f"call {i} was not stored"
        values += sys.getsizeof(payload)
    gc.collect()
    after_serving, peak = (value - before for value in tracemalloc.get_traced_memory())
    tracemalloc.stop()
    kitaru_core.configure(reset=True)
    print(
        f"\nResume memory ({calls:,} stored calls, tracemalloc): loaded before serving "
        f"{retained / calls:.0f} B per call ({retained / 1e6:.1f} MB); after serving every call "
        f"{after_serving / calls:.0f} B per call, peak while serving {peak / calls:.0f} B per call "
        f"({peak / 1e6:.1f} MB); the values served average {values / calls:.0f} B"
    )


# -- a budgeted resume: the spend summed by the database, not every record loaded ------------------


def _records_state(context: Any) -> Any:
    """The budget bookkeeping start before `Store.budget_totals`: every record loaded and counted."""
    from kitaru_core import _budgets

    state = context.budget_state
    if isinstance(state, _budgets._State):
        return state
    fresh = _budgets._State()
    for record in context.store.load_calls(context.execution_id, include_superseded=True):
        fresh.tally.add(record)
    context.budget_state = fresh
    return fresh


def run_budget(label: str, url: str, directory: Path, calls: int, repeat: int) -> None:
    """A budgeted resume of an execution with `calls` stored model calls: sums against loaded records.

    One execution records `calls` model calls (kind `model`, tokens and a cost, a 500-byte answer
    each) and stops. Each resume serves them all, then makes one live model call under a
    `Budget`, whose check starts the run's budget bookkeeping: from `Store.budget_totals` (one
    aggregate query, "sums") or, as before, from every record of the execution (`load_calls` and
    `spend_of`, "records"). Both are timed in the same process on the same data, alternating,
    `repeat` resumes each (medians): the bookkeeping start alone, and the whole resume (wall
    time); then the tracemalloc peak of each (one resume each, traced separately: tracing slows
    the run). The two starts give the same spend (checked).
    """
    import gc
    import tracemalloc

    import kitaru_core
    from kitaru_core import Budget, CallUsage, _budgets, _config, flow, run_checkpoint
    from kitaru_core._runtime import ExecutionContext, get_store

    answer = "x" * 500
    live = {"resume": 0}

    def usage(_output: str) -> CallUsage:
        return CallUsage(model_name="bench-model", input_tokens=1200, output_tokens=300, cost_usd=0.0021)

    def request(i: int) -> str:
        return answer

    @flow(name="bench_store.budget", budget=Budget(usd=1e9))
    def budget_flow(n: int) -> None:
        for i in range(n):
            run_checkpoint("model", request, i, kind="model", usage=usage)
        if live["resume"]:
            key = f"resume-{live['resume']}"
            run_checkpoint("model", request, -1, kind="model", usage=usage, discriminator=key)
        raise RuntimeError("stop: the next run resumes")

    kitaru_core.configure(
        store_url=url,
        artifacts_url=str(directory / "budget-artifacts"),
        sqlite_synchronous="normal",  # only the filling is faster; the resume reads the same
        reset=True,
    )
    fill_start = time.perf_counter()
    with contextlib.suppress(RuntimeError):
        budget_flow.run(calls, execution_id="bench-budget")
    fill_s = time.perf_counter() - fill_start
    store = get_store()
    new_state = _budgets._state
    starts = {"sums": new_state, "records": _records_state}

    def resume(start: Callable[[Any], Any]) -> float:
        """One budgeted resume with `start` as the bookkeeping start; its wall seconds."""
        live["resume"] += 1
        _budgets._state = start
        try:
            began = time.perf_counter()
            with contextlib.suppress(RuntimeError):
                budget_flow.run(calls, execution_id="bench-budget")
            return time.perf_counter() - began
        finally:
            _budgets._state = new_state

    record = store.get_execution("bench-budget")
    context = ExecutionContext(store, record, "bench", _config.current_settings())

    def start_only(start: Callable[[Any], Any]) -> tuple[float, Any]:
        context.budget_state = None
        began = time.perf_counter()
        state = start(context)
        return time.perf_counter() - began, state.tally.spend()

    spends = {name: start_only(start)[1] for name, start in starts.items()}  # warm-up, and the check
    assert abs(spends["sums"].usd - spends["records"].usd) < 1e-6, spends
    assert spends["sums"].model_calls == spends["records"].model_calls >= calls, spends
    start_s: dict[str, list[float]] = {name: [] for name in starts}
    resume_s: dict[str, list[float]] = {name: [] for name in starts}
    for _ in range(repeat):
        for name, start in starts.items():
            start_s[name].append(start_only(start)[0])
            resume_s[name].append(resume(start))
    peaks: dict[str, tuple[int, int]] = {}
    for name, start in starts.items():
        context.budget_state = None
        gc.collect()
        tracemalloc.start()
        start(context)
        start_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        gc.collect()
        tracemalloc.start()
        resume(start)
        resume_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        peaks[name] = (start_peak, resume_peak)
    kitaru_core.configure(reset=True)
    print(
        f"\nBudgeted resume, {label} ({calls:,} stored model calls of 500-byte answers, filled in {fill_s:.1f} s; "
        f"medians of {repeat}; peaks by tracemalloc): the spend at the bookkeeping start is "
        f"{spends['sums'].model_calls:,} calls, ${spends['sums'].usd:,.2f} from both"
    )
    for name in ("records", "sums"):
        start_peak, resume_peak = peaks[name]
        what = "before: load_calls + spend_of" if name == "records" else "after: Store.budget_totals"
        print(
            f"  {what:32} bookkeeping start {statistics.median(start_s[name]) * 1000:8.1f} ms, "
            f"peak {start_peak / 1e6:7.2f} MB;  whole resume {statistics.median(resume_s[name]) * 1000:7.0f} ms, "
            f"peak {resume_peak / 1e6:7.2f} MB"
        )


# -- throughput against process count ---------------------------------------------------------------


def _worker(kind: str, url: str, calls: int, ready: Path, go: Path) -> None:
    """One process of the scaling measurement: `calls` recorded calls (`kitaru`) or bare inserts (`bare`)."""
    tag = uuid.uuid4().hex
    if kind == "kitaru":
        import kitaru_core
        from kitaru_core import checkpoint, flow

        @checkpoint(name="bench_store.scale_step")
        def step(i: int) -> int:
            return i + 1

        @flow(name="bench_store.scale")
        def scale(tag: str, n: int) -> None:
            for i in range(n):
                step(i)

        kitaru_core.configure(store_url=url, artifacts_url=str(ready.parent / "artifacts"))
        scale(f"warm-{tag}", 3)

        def run() -> None:
            scale(tag, calls)
    elif url.startswith("sqlite"):
        connection = sqlite3.connect(url.split("///", 1)[1], isolation_level=None, timeout=60)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE IF NOT EXISTS bare_rows (id INTEGER PRIMARY KEY, tag TEXT, i INTEGER)")

        def run() -> None:
            for i in range(calls):
                connection.execute("BEGIN IMMEDIATE")
                connection.execute("INSERT INTO bare_rows (tag, i) VALUES (?, ?)", (tag, i))
                connection.execute("COMMIT")
    else:
        import psycopg

        connection = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
        with connection.transaction():
            connection.execute("CREATE TABLE IF NOT EXISTS bare_rows (id SERIAL PRIMARY KEY, tag TEXT, i INTEGER)")

        def run() -> None:
            for i in range(calls):
                with connection.transaction():
                    connection.execute("INSERT INTO bare_rows (tag, i) VALUES (%s, %s)", (tag, i))
    ready.touch()
    while not go.exists():
        time.sleep(0.005)
    run()


def _scaling_round(kind: str, url: str, processes: int, calls: int, directory: Path) -> float:
    """Calls per second of `processes` processes started together (after all have imported and warmed up)."""
    import subprocess

    go = directory / f"go-{uuid.uuid4().hex}"
    readies = [directory / f"ready-{uuid.uuid4().hex}" for _ in range(processes)]
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, url, str(calls), str(ready), str(go)],
        )
        for ready in readies
    ]
    while not all(ready.exists() for ready in readies):
        if any(child.poll() not in (None, 0) for child in children):
            raise RuntimeError("a scaling worker failed")
        time.sleep(0.01)
    start = time.perf_counter()
    go.touch()
    for child in children:
        if child.wait() != 0:
            raise RuntimeError("a scaling worker failed")
    return processes * calls / (time.perf_counter() - start)


def run_scaling(label: str, url: str, directory: Path, calls: int, counts: list[int]) -> None:
    print(f"\nThroughput against process count, {label} ({calls} calls per process; recorded / bare insert loop):")
    for processes in counts:
        kitaru = _scaling_round("kitaru", url, processes, calls, directory)
        bare = _scaling_round("bare", url, processes, calls, directory)
        print(
            f"  {processes} processes: recorded {kitaru:8.0f} calls/s, bare {bare:8.0f} inserts/s, "
            f"ratio {kitaru / bare:.2f}x"
        )


@contextlib.contextmanager
def _postgres_database(admin_url: str) -> Iterator[str | None]:
    """A fresh PostgreSQL database for the benchmark (dropped afterwards), or `None` when none answers."""
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"kitaru_bench_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sqlalchemy.exc.OperationalError as error:
        print(f"\nPostgreSQL skipped: {admin_url} does not answer ({error.orig})")
        yield None
        return
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, url, calls, ready, go = sys.argv[2:7]
        _worker(kind, url, int(calls), Path(ready), Path(go))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--backend", choices=["all", "sqlite", "postgres"], default="all")
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument(
        "--section",
        choices=["all", "list", "durability", "overhead", "memory", "scaling", "marker", "restart", "budget"],
        default="all",
        help="What to measure.",
    )
    parser.add_argument("--commits", type=int, default=1000, help="Bare commits per durability round.")
    parser.add_argument("--calls", type=int, default=500, help="Recorded calls per durability round.")
    parser.add_argument("--scaling-calls", type=int, default=200, help="Calls per process in the scaling figure.")
    parser.add_argument("--processes", default="1,2,4,8", help="Process counts of the scaling figure.")
    parser.add_argument("--memory-calls", type=int, default=20_000, help="Stored calls for the memory figure.")
    parser.add_argument("--budget-calls", type=int, default=20_000, help="Stored model calls for the budget figure.")
    parser.add_argument("--rounds", type=int, default=5, help="Alternating rounds of the overhead figure.")
    parser.add_argument(
        "--overhead-dir", default=None, help="Where the overhead figure's stores go (e.g. /dev/shm; default: --dir)."
    )
    parser.add_argument("--dir", default=None, help="Where the temporary directory goes (default $TMPDIR).")
    args = parser.parse_args()
    print(
        f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, "
        f"SQLAlchemy {sqlalchemy.__version__}; medians of {args.repeat} runs"
    )
    with tempfile.TemporaryDirectory(prefix="kitaru-bench-store-", dir=args.dir) as directory:
        if args.section in {"all", "durability"}:
            for round_ in range(3):
                Path(directory, f"r{round_}").mkdir()
            run_durability(Path(directory), args.commits, args.calls, min(args.repeat, 3))
        if args.section in {"all", "scaling"}:
            counts = [int(count) for count in args.processes.split(",")]
            if args.backend in {"all", "sqlite"}:
                url = f"sqlite:///{Path(directory, 'scaling.db')}"
                run_scaling("SQLite file (WAL, synchronous=FULL)", url, Path(directory), args.scaling_calls, counts)
            if args.backend in {"all", "postgres"}:
                with _postgres_database(args.postgres_url) as url:
                    if url is not None:
                        run_scaling("PostgreSQL", url, Path(directory), args.scaling_calls, counts)
        if args.section in {"all", "overhead"}:
            run_overhead(Path(args.overhead_dir or directory), args.calls, args.rounds)
        if args.section in {"all", "marker"}:
            if args.backend in {"all", "sqlite"}:
                url = f"sqlite:///{Path(directory, 'marker.db')}"
                run_marker("SQLite file", url, str(Path(directory, "marker-artifacts")), args.executions, 10, args.repeat)
            if args.backend in {"all", "postgres"}:
                with _postgres_database(args.postgres_url) as url:
                    if url is not None:
                        run_marker("PostgreSQL", url, str(Path(directory, "marker-artifacts")), args.executions, 10, args.repeat)
        if args.section in {"all", "restart"}:
            run_restart(Path(directory), min(args.repeat, 7))
        if args.section in {"all", "memory"}:
            run_memory(Path(directory), args.memory_calls)
        if args.section in {"all", "budget"}:
            repeat = min(args.repeat, 5)
            if args.backend in {"all", "sqlite"}:
                url = f"sqlite:///{Path(directory, 'budget.db')}"
                run_budget("SQLite file", url, Path(directory), args.budget_calls, repeat)
            if args.backend in {"all", "postgres"}:
                with _postgres_database(args.postgres_url) as url:
                    if url is not None:
                        run_budget("PostgreSQL", url, Path(directory), args.budget_calls, repeat)
        if args.section not in {"all", "list"}:
            return 0
        if args.backend in {"all", "sqlite"}:
            url = f"sqlite:///{Path(directory, 'kitaru.db')}"
            run_backend("SQLite file (WAL)", url, str(Path(directory, "artifacts")), args.executions, args.repeat)
        if args.backend in {"all", "postgres"}:
            admin = sqlalchemy.create_engine(args.postgres_url, isolation_level="AUTOCOMMIT")
            name = f"kitaru_bench_{uuid.uuid4().hex[:10]}"
            try:
                with admin.connect() as connection:
                    connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
            except sqlalchemy.exc.OperationalError as error:
                print(f"\nPostgreSQL skipped: {args.postgres_url} does not answer ({error.orig})")
                return 0
            url = args.postgres_url.rsplit("/", 1)[0] + f"/{name}"
            try:
                run_backend("PostgreSQL", url, str(Path(directory, "artifacts-pg")), args.executions, args.repeat)
            finally:
                with admin.connect() as connection:
                    connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                admin.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
