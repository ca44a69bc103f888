"""Workers: processes that take queued, crashed and answered executions and run them on their own.

A `Worker` loops: it claims executions with a lease (`claim_executions`), runs each one in a child
process (`python -m kitaru_core._worker_child`, at most `concurrency` at once), renews the leases of
claims its children have not taken over yet, and keeps a row in the workers table with a heartbeat.
It keeps one child started ahead (imports done, store open) that waits for its execution on a
pipe, and between looks for work it waits on a wakeup (`_Wakeup`: PostgreSQL `LISTEN`, SQLite's
`data_version`), so an answered wait is taken within a fraction of a second, not a poll interval
and a process start.

What a worker takes, from its queues (executions not submitted are in the `default` queue):

1. `queued` executions (`Flow.submit`, `Client.submit`, `kitaru-adapters executions submit`);
2. `running` executions whose runner is gone: its lease expired, or it is on this host and its
   process is dead or replaced (`_leases.lease_is_live`, the rule every takeover follows);
3. `waiting` executions whose waits are all answered;
4. `failed` executions whose flow asked for retries (`@flow(retry=ExecutionRetryPolicy(...))`),
   once the retry the failed run scheduled is due (`schedule_retry`).

Only executions with an importable entry point (a module-level `@flow`) are taken. Claiming is one
write transaction: on PostgreSQL the candidate rows are read `FOR UPDATE SKIP LOCKED` (workers skip
the rows another worker is claiming instead of waiting for them); on SQLite the transaction starts
with `BEGIN IMMEDIATE`, so claims on one host are serialised by the database's write lock. Each
claim is also a compare-and-set on the lease owner, as every lease change is.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import select as select_module
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import func, or_, select, update
from sqlalchemy.engine import Connection, RowMapping

from kitaru_core import _checkpoint_calls, _config, _leases
from kitaru_core import _tables as tables
from kitaru_core._ids import check_queue_name
from kitaru_core._records import ExecutionRecord
from kitaru_core._store import Store
from kitaru_core._store import _execution as execution_from_row  # pyright: ignore[reportPrivateUsage]
from kitaru_core._worker_child import EXIT_NOT_STARTED, EXIT_STORE_UNAVAILABLE
from kitaru_core.errors import ConfigurationError, KitaruError, StoreError

__all__ = ["Claim", "Worker", "WorkerRecord", "claim_executions", "list_workers", "notify_workers"]

logger = logging.getLogger(__name__)

ClaimReason = Literal["queued", "runner gone", "answered", "retry"]
WORKER_HEARTBEAT_S = 5.0
"""Seconds between two heartbeats of a worker's row; a row silent for three of them is `gone`."""


@dataclass(frozen=True)
class Claim:
    """An execution a worker claimed: its id, the claim's lease owner token, and why it was taken."""

    execution_id: str
    owner: str
    reason: ClaimReason


def _runner_gone(record: ExecutionRecord, now: float, lease_duration_s: float) -> bool:
    """Whether a `running` execution has no live runner (a lease that never was: created long ago)."""
    if record.lease_owner is None:
        return record.updated_at_epoch_s < now - lease_duration_s
    return not _leases.lease_is_live(record, now)


def claim_executions(
    store: Store,
    queues: Sequence[str],
    limit: int,
    *,
    lease_duration_s: float,
    queue_limits: Mapping[str, int] | None = None,
) -> list[Claim]:
    """Claim up to `limit` executions of `queues` for this process, each with a lease of its own.

    The lease names this process (host, host id, pid, start time), so a worker that dies before
    its child takes a claim over is detected like any other dead runner. The runner-gone
    executions come first (they waited longest), then answered waits, then the queue in order of
    submission.

    Args:
        store: The store.
        queues: Queue names to take from.
        limit: The most executions to claim.
        lease_duration_s: Seconds each claim's lease lasts without renewal.
        queue_limits: The most `running` executions a queue may have across all workers; a claim
            that would pass it is not made (taking over an execution whose runner is gone adds no
            running execution, so it is always allowed). On PostgreSQL the claims of workers with
            limits are serialised by a transaction-level advisory lock per limited queue, so two
            workers never both take the last free place.

    Returns:
        The claims, in the order they were made.

    Raises:
        StoreError: The database stayed unreachable for the retry budget.
    """
    if limit <= 0:
        return []
    t, w = tables.executions, tables.waits
    batch = uuid.uuid4().hex
    pid = os.getpid()
    start_ticks = _leases.process_start_ticks(pid)
    in_queues = t.c.queue.in_(list(queues))
    importable = t.c.entry_point.is_not(None)
    not_cancelled = t.c.cancel_requested.is_(False)

    def candidates(now: float) -> list[tuple[ClaimReason, Any]]:
        gone = (
            select(t)
            .where(
                t.c.status == "running",
                in_queues,
                importable,
                not_cancelled,
                or_(
                    t.c.lease_owner.is_(None),
                    t.c.lease_expires_at_epoch_s < now,
                    t.c.lease_host_id == _leases.HOST_ID,
                ),
            )
            .order_by(t.c.updated_at_epoch_s, t.c.id)
            .limit(limit + 100)  # the live runners of this host are read and skipped
            .with_for_update(skip_locked=True)
        )
        pending = select(w.c.id).where(w.c.execution_id == t.c.id, w.c.status == "pending")
        answered = (
            select(t)
            .where(t.c.status == "waiting", in_queues, importable, not_cancelled, ~pending.exists())
            .order_by(t.c.updated_at_epoch_s, t.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=t)
        )
        queued = (
            select(t)
            .where(t.c.status == "queued", in_queues, importable, not_cancelled)
            .order_by(t.c.created_at_epoch_s, t.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        retry = (
            select(t)
            .where(
                t.c.status == "failed",
                in_queues,
                importable,
                not_cancelled,
                t.c.retry_at_epoch_s.is_not(None),
                t.c.retry_at_epoch_s <= now,
            )
            .order_by(t.c.retry_at_epoch_s, t.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [("runner gone", gone), ("answered", answered), ("retry", retry), ("queued", queued)]

    def change(connection: Connection, retry: bool) -> list[Claim]:
        if retry:  # an earlier attempt may have committed: its claims carry this batch's tokens
            earlier = connection.execute(
                select(t.c.id, t.c.lease_owner).where(
                    t.c.lease_owner.startswith(f"{batch}-", autoescape=True)
                )
            ).all()
            if earlier:
                return [Claim(row.id, row.lease_owner, "queued") for row in earlier]
        now = time.time()
        claims: list[Claim] = []
        places = _free_places(connection, queue_limits or {})
        for reason, query in candidates(now):
            if len(claims) >= limit:
                break
            rows: list[RowMapping] = list(connection.execute(query).mappings())
            for row in rows:
                if len(claims) >= limit:
                    break
                record = execution_from_row(row)
                if reason == "runner gone" and not _runner_gone(record, now, lease_duration_s):
                    continue
                queue = row["queue"]
                if reason != "runner gone" and queue in places and places[queue] <= 0:
                    continue
                owner = f"{batch}-{len(claims)}"
                seen_owner = (
                    t.c.lease_owner.is_(None)
                    if record.lease_owner is None
                    else t.c.lease_owner == record.lease_owner
                )
                result = connection.execute(
                    update(t)
                    .where(t.c.id == record.id, t.c.status == record.status, seen_owner)
                    .values(
                        lease_owner=owner,
                        lease_host=_leases.HOST,
                        lease_pid=pid,
                        lease_host_id=_leases.HOST_ID,
                        lease_process_start_ticks=start_ticks,
                        lease_expires_at_epoch_s=now + lease_duration_s,
                        status="running",
                        retry_at_epoch_s=None,
                        updated_at_epoch_s=now,
                    )
                )
                if result.rowcount == 1:
                    claims.append(Claim(record.id, owner, reason))
                    if reason != "runner gone" and queue in places:
                        places[queue] -= 1
        return claims

    return store._write("claim executions for a worker", change)  # pyright: ignore[reportPrivateUsage]


def _free_places(connection: Connection, queue_limits: Mapping[str, int]) -> dict[str, int]:
    """How many more executions each limited queue may run now (its limit minus its `running` ones)."""
    if not queue_limits:
        return {}
    t = tables.executions
    if connection.dialect.name == "postgresql":
        for name in sorted(queue_limits):  # one order, so two workers never wait on each other crosswise
            connection.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"kitaru-queue:{name}"))))
    running = dict(
        connection.execute(
            select(t.c.queue, func.count())
            .where(t.c.status == "running", t.c.queue.in_(list(queue_limits)))
            .group_by(t.c.queue)
        ).all()
    )
    return {name: limit - int(running.get(name, 0)) for name, limit in queue_limits.items()}


def parse_queue(text: str) -> tuple[str, int | None]:
    """`NAME` or `NAME:LIMIT` (a trailing `:` and whole number is a limit), checked.

    Raises:
        InvalidIdError: The name is not a valid queue name.
        ConfigurationError: The limit is below 1.
    """
    name, separator, limit = text.rpartition(":")
    if not separator or not limit.isdigit():
        return check_queue_name(text), None
    if int(limit) < 1:
        raise ConfigurationError(f"The limit of queue {name!r} must be at least 1, got {limit}.")
    return check_queue_name(name), int(limit)


# -- the workers table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerRecord:
    """One worker process as the workers table records it."""

    id: str
    host: str
    host_id: str
    pid: int
    queues: list[str]
    concurrency: int
    running: list[str]
    started_at_epoch_s: float
    heartbeat_at_epoch_s: float
    stopped_at_epoch_s: float | None

    def state(self, now: float | None = None) -> Literal["alive", "stopped", "gone"]:
        """`stopped` (shut down in order), `gone` (silent for three heartbeats, or its process ended), else `alive`."""
        if self.stopped_at_epoch_s is not None:
            return "stopped"
        if self.heartbeat_at_epoch_s < (time.time() if now is None else now) - 3 * WORKER_HEARTBEAT_S:
            return "gone"
        if self.host_id == _leases.HOST_ID and not _leases.process_alive(self.pid):
            return "gone"
        return "alive"


def _json_list(text: str | None) -> list[str]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return [str(item) for item in value] if isinstance(value, list) else []  # pyright: ignore[reportUnknownVariableType]


def list_workers(store: Store) -> list[WorkerRecord]:
    """Every worker the store has seen, the most recently started first."""
    t = tables.workers
    query = select(t).order_by(t.c.started_at_epoch_s.desc(), t.c.id)

    def read(connection: Connection) -> list[WorkerRecord]:
        return [
            WorkerRecord(
                id=row["id"],
                host=row["host"],
                host_id=row["host_id"],
                pid=row["pid"],
                queues=_json_list(row["queues"]),
                concurrency=row["concurrency"],
                running=_json_list(row["running"]),
                started_at_epoch_s=row["started_at_epoch_s"],
                heartbeat_at_epoch_s=row["heartbeat_at_epoch_s"],
                stopped_at_epoch_s=row["stopped_at_epoch_s"],
            )
            for row in connection.execute(query).mappings()
        ]

    return store._read("list workers", read)  # pyright: ignore[reportPrivateUsage]


def _save_worker(store: Store, worker_id: str, values: dict[str, Any], *, create: bool) -> None:
    t = tables.workers

    def change(connection: Connection, retry: bool) -> None:
        exists = retry and connection.execute(select(t.c.id).where(t.c.id == worker_id)).first() is not None
        if create and not exists:
            connection.execute(t.insert().values(id=worker_id, **values))
        else:
            connection.execute(update(t).where(t.c.id == worker_id).values(values))

    store._write("record a worker", change)  # pyright: ignore[reportPrivateUsage]


# -- the worker ----------------------------------------------------------------------------------


WORKERS_CHANNEL = "kitaru_workers"
"""The PostgreSQL notification channel that tells workers there may be work (payload: the queue)."""


def notify_workers(store: Store, queue: str = "") -> None:
    """Tell listening workers that there may be work (PostgreSQL `NOTIFY`; nothing on SQLite).

    Best effort: a notification that cannot be sent only costs the workers' poll interval.
    """
    if store.engine.dialect.name != "postgresql":
        return
    try:
        with store.engine.connect() as connection:
            connection.execute(select(func.pg_notify(WORKERS_CHANNEL, queue)))
            connection.commit()
    except Exception as error:  # the change it announces is committed; the workers poll anyway
        logger.debug("kitaru: could not notify the workers: %s", error)


class _Wakeup:
    """Tells a waiting worker that something changed: PostgreSQL `LISTEN`, or SQLite's `data_version`.

    Any failure turns it off for a while (the worker then only polls); it reconnects later.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._connection: Any = None
        self._version: int | None = None
        self._notified: list[bool] = []
        self._retry_at_s = 0.0

    def _open(self) -> Any:
        if self._connection is not None or time.monotonic() < self._retry_at_s:
            return self._connection
        url = self.store.engine.url
        try:
            if url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg":
                import psycopg

                conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
                connection = psycopg.connect(conninfo, autocommit=True, connect_timeout=5)
                connection.add_notify_handler(lambda _notify: self._notified.append(True))
                connection.execute(f"LISTEN {WORKERS_CHANNEL}")
                self._connection = connection
            elif url.get_backend_name() == "sqlite" and url.database:
                import sqlite3

                connection = sqlite3.connect(url.database, timeout=1.0, check_same_thread=False)
                self._version = int(connection.execute("PRAGMA data_version").fetchone()[0])
                self._connection = connection
            else:
                self._retry_at_s = float("inf")  # another driver: poll only
        except Exception as error:
            logger.debug("kitaru worker: no wakeups for now (%s); polling", error)
            self._retry_at_s = time.monotonic() + 5.0
        return self._connection

    def wait(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s`; `True` when told there may be work (return at once then)."""
        connection = self._open()
        if connection is None:
            time.sleep(timeout_s)
            return False
        try:
            if self.store.engine.dialect.name == "postgresql":
                readable, _, _ = select_module.select([connection.fileno()], [], [], timeout_s)
                if readable:  # a notification (or a closed connection): a statement reads it
                    connection.execute("SELECT 1")
                notified = bool(self._notified)
                self._notified.clear()
                return notified
            time.sleep(timeout_s)
            version = int(connection.execute("PRAGMA data_version").fetchone()[0])
            changed, self._version = version != self._version, version
            return changed
        except Exception as error:  # the database restarted or the file went: poll, reconnect later
            logger.debug("kitaru worker: wakeups lost (%s); polling", error)
            self.close()
            self._retry_at_s = time.monotonic() + 1.0
            return False

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()


class ProcessLost(Exception):  # noqa: N818  # the error type the execution records, as the docs name it
    """A worker's child process running an execution was killed by a signal (out of memory, a segfault)."""


@dataclass
class _Child:
    claim: Claim
    process: subprocess.Popen[bytes]
    handed_over: bool = False
    killed: bool = False


class Worker:
    """Take executions from queues and run each in a child process, until stopped.

    Args:
        queues: Queue names to take from (default: `default`; executions not submitted are in it).
            `NAME:LIMIT` also limits how many executions of that queue run at once across all
            workers (each worker enforces the limits it was given: give every worker the same).
        concurrency: Executions this worker runs at once (each in its own process).
        imports: Modules the children import before running an execution (where flows register
            things, or to check at start that the flows import).
        poll_interval_s: Seconds between two looks for work when there was none. A worker also
            looks at once when told there is work: on PostgreSQL it listens for the notifications
            a submit, an answer or a handed resume sends (`LISTEN kitaru_workers`); on SQLite it
            watches the database file's change counter (`PRAGMA data_version`) every 50 ms.
        prestart: Keep one child process started ahead (interpreter up, `imports` imported, store
            open), waiting for its execution, so that taking work costs no process start. Each
            execution still runs in a process of its own, used once.
        shutdown_timeout_s: Seconds a stopping worker waits for its children to reach a checkpoint
            boundary before it kills them (their executions are then released as `queued` too).
        lost_process_retries: How often an execution whose child process was killed by a signal
            on its own is resumed automatically (after 1 s, doubling up to 30 s; counted with the
            retries of the flow's own `retry=` policy, in the execution's `retry_attempts`).
            0: it stays `failed` at once. Default 2 (an execution that kills its process every
            time, e.g. out of memory, stops after three attempts).
        store_url: SQLAlchemy URL of the store; default: the configured one.
        artifacts_url: fsspec URL of the artifact store; default: the configured one.

    `run()` blocks; SIGTERM and SIGINT (and `stop()` from another thread) stop it: it takes no more
    work, asks each child to stop before its next checkpoint body (the call running now finishes
    and is committed), and each child releases its lease with its execution `queued`, so another
    worker continues it at once. A child that has not stopped after `shutdown_timeout_s` is killed
    and its execution released the same way.

    A child killed by a signal on its own (a crash, the kernel's out-of-memory killer) costs only
    its execution: the worker records it `failed` (error `ProcessLost`) and resumes it after 1 s,
    then 2 s... up to `lost_process_retries` times (a worker serving its queue takes it then;
    completed calls are served); after that it stays `failed`, resumable with
    `kitaru-adapters executions resume ID`. A child whose flow does not import fails at once. A child
    that cannot reach the store gives its execution back `queued`. A worker that dies with its children (SIGKILL of the
    process group, a lost machine) leaves its executions `running`: another worker takes them over
    at once on the same host, after the lease duration elsewhere.

    Raises:
        ConfigurationError: No queue, a concurrency below 1, a module that does not import, or an
            in-memory store (children cannot share it).
        InvalidIdError: A queue name is not valid.
    """

    def __init__(
        self,
        queues: Sequence[str] = ("default",),
        *,
        concurrency: int = 1,
        imports: Sequence[str] = (),
        poll_interval_s: float = 0.5,
        shutdown_timeout_s: float = 30.0,
        store_url: str | None = None,
        artifacts_url: str | None = None,
        prestart: bool = True,
        lost_process_retries: int = 2,
    ) -> None:
        from kitaru_core._client import Client

        if isinstance(queues, str):
            queues = [queues]
        parsed = [parse_queue(queue) for queue in queues]
        self.queues = [name for name, _limit in parsed]
        self.queue_limits = {name: limit for name, limit in parsed if limit is not None}
        if not self.queues:
            raise ConfigurationError(
                "A worker needs at least one queue to take executions from, e.g. 'default'."
            )
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, got {concurrency}.")
        if lost_process_retries < 0:
            raise ConfigurationError(f"lost_process_retries must be 0 or more, got {lost_process_retries}.")
        self.concurrency = concurrency
        self.lost_process_retry = _checkpoint_calls.RetryPolicy(
            max_attempts=lost_process_retries + 1,
            initial_delay_s=1.0,
            backoff_factor=2.0,
            max_delay_s=30.0,
            retry_on=(ProcessLost,),
        )
        self.imports = list(imports)
        for module in self.imports:
            try:
                importlib.import_module(module)
            except Exception as error:
                raise ConfigurationError(
                    f"The worker cannot import module {module!r}: {type(error).__name__}: {error}. "
                    "Check --import and that the worker runs where the module is on the import path."
                ) from error
        self.poll_interval_s = poll_interval_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.client = Client(store_url, artifacts_url)
        self.store = self.client.store
        if self.store.url in {"sqlite://", "sqlite:///:memory:", "sqlite+pysqlite://"} or (
            self.store.artifacts.url.startswith("memory://")
        ):
            raise ConfigurationError(
                "A worker's children cannot reach a store that lives in this process's memory: use a SQLite "
                "file or PostgreSQL and a shared artifact store."
            )
        self.lease_duration_s = _config.current_settings().lease_duration_s
        self.id = uuid.uuid4().hex[:16]
        self.started_executions = 0
        self._children: dict[str, _Child] = {}
        self._stop_flag = False  # a plain flag: set from signal handlers, read by the loop
        self.prestart = prestart
        self._warm: subprocess.Popen[bytes] | None = None
        self._warm_failed_at_s = -float("inf")
        self._wakeup = _Wakeup(self.store)

    def stop(self) -> None:
        """Ask the worker to shut down (safe from a signal handler or another thread)."""
        self._stop_flag = True

    def _sleep(self, seconds: float) -> None:
        """Wait up to `seconds`, less when stopped or told that there may be work."""
        deadline = time.monotonic() + seconds
        while not self._stop_flag and time.monotonic() < deadline:
            if self._wakeup.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
                return

    def run(self, *, handle_signals: bool = True) -> None:
        """Take and run executions until `stop()`, SIGTERM or SIGINT; then shut down in order and return.

        Args:
            handle_signals: Install SIGTERM and SIGINT handlers that call `stop()` (done only when
                called in the main thread; elsewhere call `stop()` yourself).
        """
        previous: dict[int, Any] = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                previous[number] = signal.signal(number, lambda _number, _frame: self.stop())
        now = time.time()
        _save_worker(
            self.store,
            self.id,
            {
                "host": _leases.HOST,
                "host_id": _leases.HOST_ID,
                "pid": os.getpid(),
                "queues": json.dumps(
                    [f"{name}:{self.queue_limits[name]}" if name in self.queue_limits else name for name in self.queues]
                ),
                "concurrency": self.concurrency,
                "running": "[]",
                "started_at_epoch_s": now,
                "heartbeat_at_epoch_s": now,
            },
            create=True,
        )
        logger.info(
            "kitaru worker %s: taking executions from %s, %d at a time (pid %d)",
            self.id,
            ", ".join(self.queues),
            self.concurrency,
            os.getpid(),
        )
        try:
            self._loop()
        finally:
            self._shutdown()
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _loop(self) -> None:
        beat_interval_s = min(WORKER_HEARTBEAT_S, self.lease_duration_s / 3)
        last_beat_s = -float("inf")
        while not self._stop_flag:
            claimed = 0
            free = 0
            try:
                self._reap()
                if _leases.lease_clock_s() - last_beat_s >= beat_interval_s:
                    last_beat_s = _leases.lease_clock_s()
                    self._beat()
                free = self.concurrency - len(self._children)
                if free > 0 and not self._stop_flag:
                    claims = claim_executions(
                        self.store,
                        self.queues,
                        free,
                        lease_duration_s=self.lease_duration_s,
                        queue_limits=self.queue_limits,
                    )
                    for claim in claims:
                        self._start(claim)
                    claimed = len(claims)
            except (KitaruError, OSError) as error:  # the store is down or locked: keep trying
                logger.warning("kitaru worker %s: %s; trying again", self.id, error)
            self._prestart()
            if claimed == 0 or claimed < free:
                self._sleep(self.poll_interval_s)

    def _child_environment(self) -> dict[str, str]:
        environment = self.client.child_environment()
        environment["KITARU_LEASE_DURATION_S"] = repr(self.lease_duration_s)
        return environment

    def _prestart(self) -> None:
        """Keep one child started ahead (imports done, store open) that waits for an execution on its stdin."""
        if not self.prestart or self._stop_flag:
            return
        if self._warm is not None:
            if self._warm.poll() is None:
                return
            code = self._warm.returncode
            self._warm = None
            self._warm_failed_at_s = time.monotonic()  # it ended before it had work: no start loop
            logger.warning(
                "kitaru worker %s: the prestarted process ended before it had work (exit code %s); "
                "starting executions in fresh processes for a while",
                self.id,
                code,
            )
            return
        if time.monotonic() - self._warm_failed_at_s < max(5.0, self.poll_interval_s):
            return
        try:
            self._warm = subprocess.Popen(
                [sys.executable, "-m", "kitaru_core._worker_child", "--warm", *self.imports],
                stdin=subprocess.PIPE,
                env=self._child_environment(),
            )
        except OSError as error:
            self._warm_failed_at_s = time.monotonic()
            logger.warning("kitaru worker %s: could not prestart a process: %s", self.id, error)

    def _take_warm(self, claim: Claim) -> subprocess.Popen[bytes] | None:
        """Hand `claim` to the prestarted child; `None` when there is none alive (or it would not take it)."""
        warm, self._warm = self._warm, None
        if warm is None or warm.stdin is None:
            return None
        try:
            if warm.poll() is not None:
                raise OSError(f"it ended (exit code {warm.returncode})")
            warm.stdin.write(json.dumps([claim.execution_id, claim.owner]).encode() + b"\n")
            warm.stdin.close()
        except OSError as error:
            logger.warning("kitaru worker %s: the prestarted process could not take work: %s", self.id, error)
            with contextlib.suppress(OSError):
                warm.kill()
            warm.wait()
            return None
        return warm

    def _start(self, claim: Claim) -> None:
        _leases.active_owners.add(claim.owner)  # this process holds the claim: its lease is live
        process = self._take_warm(claim)
        try:
            if process is None:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "kitaru_core._worker_child",
                        claim.execution_id,
                        claim.owner,
                        *self.imports,
                    ],
                    stdin=subprocess.DEVNULL,
                    env=self._child_environment(),
                )
        except OSError as error:
            _leases.active_owners.discard(claim.owner)
            self._release(
                claim.execution_id, claim.owner, failure=f"the worker could not start a process: {error}"
            )
            return
        self.started_executions += 1
        self._children[claim.execution_id] = _Child(claim, process)
        logger.info(
            "kitaru worker %s: took execution %r (%s) into %s process %d",
            self.id,
            claim.execution_id,
            claim.reason,
            "a new" if process.stdin is None else "the prestarted",
            process.pid,
        )

    def _release(self, execution_id: str, owner: str, *, failure: str | None) -> None:
        """Give an execution back: `queued` (failure `None`), else `failed` with the reason; only if `owner` holds it."""
        if failure is None:
            self.store.finish_execution(execution_id, owner, status="queued")
        else:
            self.store.finish_execution(
                execution_id, owner, status="failed", error=("ProcessLost", failure, "")
            )

    def _beat(self) -> None:
        """Renew the leases of claims no child has taken over yet; write this worker's heartbeat."""
        for child in list(self._children.values()):
            if child.handed_over:
                continue
            still_owner, _cancel = self.store.renew_lease(
                child.claim.execution_id, child.claim.owner, self.lease_duration_s
            )
            child.handed_over = not still_owner
        _save_worker(
            self.store,
            self.id,
            {"heartbeat_at_epoch_s": time.time(), "running": json.dumps(sorted(self._children))},
            create=False,
        )

    def _reap(self) -> None:
        """Deal with the children that ended: release what they left behind."""
        for execution_id, child in list(self._children.items()):
            code = child.process.poll()
            if code is None:
                continue
            del self._children[execution_id]
            _leases.active_owners.discard(child.claim.owner)
            record = self.store.find_execution(execution_id)
            if record is None:
                continue
            ended = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
            stopping = self._stop_flag or child.killed
            if record.lease_owner == child.claim.owner:  # the child never took the execution over
                retry = stopping or code in (EXIT_NOT_STARTED, EXIT_STORE_UNAVAILABLE)
                failure = (
                    f"The worker's process for it ended ({ended}) before running it; see the worker's log."
                )
                self._release(execution_id, child.claim.owner, failure=None if retry else failure)
            elif (
                record.status == "running"
                and record.lease_owner is not None
                and record.lease_pid == child.process.pid
                and record.lease_host_id == _leases.HOST_ID
            ):  # it died holding the lease: killed or crashed (a signal), or it could not record its outcome
                failure = f"The worker's process {child.process.pid} running it ended ({ended})."
                retry = stopping or code >= 0
                self._release(execution_id, record.lease_owner, failure=None if retry else failure)
                if not retry:  # killed on its own: resumed after a backoff, a few times
                    schedule_retry(self.store, execution_id, ProcessLost(failure), self.lost_process_retry)
            logger.info("kitaru worker %s: execution %r: process ended (%s)", self.id, execution_id, ended)

    def _shutdown(self) -> None:
        """Stop the children at their next checkpoint boundary (kill them after the timeout), release, record."""
        self._wakeup.close()
        for child in self._children.values():
            with contextlib.suppress(OSError):
                child.process.send_signal(signal.SIGTERM)
        warm, self._warm = self._warm, None
        if warm is not None:  # it has no work: the end of its input (or SIGTERM, while it starts) ends it
            with contextlib.suppress(OSError):
                if warm.stdin is not None:
                    warm.stdin.close()
                warm.send_signal(signal.SIGTERM)
        deadline_s = time.monotonic() + self.shutdown_timeout_s
        last_beat_s = time.monotonic()
        while self._children and time.monotonic() < deadline_s:
            time.sleep(0.05)
            with contextlib.suppress(StoreError):
                self._reap()
                if time.monotonic() - last_beat_s >= self.lease_duration_s / 3:
                    last_beat_s = time.monotonic()
                    self._beat()
        for child in self._children.values():
            child.killed = True
            with contextlib.suppress(OSError):
                child.process.kill()
            child.process.wait()
        if warm is not None:
            try:
                warm.wait(timeout=max(0.1, deadline_s - time.monotonic()))
            except subprocess.TimeoutExpired:
                warm.kill()
                warm.wait()
        with contextlib.suppress(StoreError):
            self._reap()
            _save_worker(
                self.store,
                self.id,
                {"stopped_at_epoch_s": time.time(), "heartbeat_at_epoch_s": time.time(), "running": "[]"},
                create=False,
            )
        logger.info(
            "kitaru worker %s: stopped after starting %d execution(s)", self.id, self.started_executions
        )


# -- handing executions to workers (the server's "resume") ---------------------------------------


def queue_name_of(entry: str) -> str:
    """The queue name of a worker's queue entry as the workers table holds it (`NAME` or `NAME:LIMIT`)."""
    name, separator, limit = entry.rpartition(":")
    return name if separator and limit.isdigit() else entry


def live_workers_for(store: Store, queue: str, *, now: float | None = None) -> list[WorkerRecord]:
    """The `alive` workers (a heartbeat within three heartbeat intervals) that take from `queue`."""
    moment = time.time() if now is None else now
    return [
        record
        for record in list_workers(store)
        if record.state(moment) == "alive" and queue in {queue_name_of(entry) for entry in record.queues}
    ]


def execution_queue(store: Store, execution_id: str) -> str:
    """The worker queue of an execution (`default` for executions not submitted).

    Raises:
        ExecutionNotFoundError: No such execution.
    """
    from kitaru_core.errors import ExecutionNotFoundError

    t = tables.executions
    queue = store._read(  # pyright: ignore[reportPrivateUsage]
        f"read the queue of execution {execution_id!r}",
        lambda connection: connection.execute(select(t.c.queue).where(t.c.id == execution_id)).scalar(),
    )
    if queue is None:
        raise ExecutionNotFoundError(execution_id)
    return str(queue)


def hand_to_worker(store: Store, execution_id: str) -> ExecutionRecord:
    """Mark an unfinished execution for a worker to resume: it becomes `queued` (nothing runs here).

    The checks are those of `Client.resume_in_background`; the change is a compare-and-set on the
    status and lease owner seen, so an execution a runner took meanwhile is not touched. A worker
    serving the execution's queue then claims it like a submitted one; completed calls are served
    from the store and answered waits return their answers. A retry scheduled for a failed
    execution is replaced by this resume.

    Args:
        store: The store.
        execution_id: The execution.

    Returns:
        The execution as it was before it was queued.

    Raises:
        ExecutionNotFoundError: No such execution.
        ExecutionError: It has completed already.
        ExecutionCancelledError: It was cancelled.
        ExecutionLockedError: A live runner holds it (or it changed hands while it was queued).
        ConfigurationError: It has no importable `@flow` entry point, so no worker could run it.
    """
    from kitaru_core._client import _not_resumable_message  # pyright: ignore[reportPrivateUsage]
    from kitaru_core.errors import ExecutionCancelledError, ExecutionError, ExecutionLockedError

    record = store.get_execution(execution_id)
    if record.status == "completed":
        raise ExecutionError(
            execution_id,
            f"Execution {execution_id!r} has completed; there is nothing to resume. "
            f"Start a new one, or replay it with: kitaru-adapters executions replay {execution_id}",
        )
    if record.status == "cancelled" or record.cancel_requested:
        raise ExecutionCancelledError(execution_id)
    if record.status == "queued":
        return record  # a worker takes it already
    if record.status == "running" and not _runner_gone(record, time.time(), _config.current_settings().lease_duration_s):
        expires_in_s = max(0.0, (record.lease_expires_at_epoch_s or 0.0) - time.time())
        raise ExecutionLockedError(execution_id, f"{record.lease_host}:{record.lease_pid}", expires_in_s)
    if not record.entry_point:
        raise ConfigurationError(_not_resumable_message(execution_id, record.flow_name))
    t = tables.executions
    seen_owner = t.c.lease_owner.is_(None) if record.lease_owner is None else t.c.lease_owner == record.lease_owner

    def change(connection: Connection, retry: bool) -> bool:
        if connection.dialect.name == "postgresql":  # sent at commit: listening workers look at once
            connection.execute(select(func.pg_notify(WORKERS_CHANNEL, "")))
        result = connection.execute(
            update(t)
            .where(t.c.id == execution_id, t.c.status == record.status, seen_owner)
            .values(
                status="queued",
                lease_owner=None,
                lease_expires_at_epoch_s=None,
                retry_at_epoch_s=None,
                updated_at_epoch_s=time.time(),
            )
        )
        if result.rowcount == 1:
            return True
        return retry and connection.execute(select(t.c.status).where(t.c.id == execution_id)).scalar() == "queued"

    if not store._write(f"queue execution {execution_id!r} for a worker", change):  # pyright: ignore[reportPrivateUsage]
        current = store.get_execution(execution_id)
        raise ExecutionLockedError(execution_id, f"{current.lease_host}:{current.lease_pid}", 0.0)
    return record


# -- retries of failed executions ----------------------------------------------------------------


@dataclass(frozen=True)
class RetryState:
    """How often a worker retried an execution, and when it retries next (`None`: not scheduled)."""

    retries: int
    retry_at_epoch_s: float | None


def retry_state(store: Store, execution_id: str) -> RetryState:
    """The retries of an execution so far and the next one's due time.

    Raises:
        ExecutionNotFoundError: No such execution.
    """
    from kitaru_core.errors import ExecutionNotFoundError

    t = tables.executions
    row = store._read(  # pyright: ignore[reportPrivateUsage]
        f"read the retries of execution {execution_id!r}",
        lambda connection: connection.execute(
            select(t.c.retry_attempts, t.c.retry_at_epoch_s).where(t.c.id == execution_id)
        ).first(),
    )
    if row is None:
        raise ExecutionNotFoundError(execution_id)
    return RetryState(int(row[0] or 0), row[1])


def schedule_retry(
    store: Store, execution_id: str, error: BaseException, policy: _checkpoint_calls.RetryPolicy | None
) -> float | None:
    """After an execution failed with `error`, schedule its retry as `policy` says (a worker takes it then).

    The attempt that failed is the execution's retries so far plus one. Nothing is scheduled when
    the policy does not retry the error, its attempts are used up, or the execution is no longer
    `failed` without a runner (someone resumed or cancelled it meanwhile). A scheduled retry is
    recorded in the audit trail (`retry scheduled`: attempt, delay, error class).

    Args:
        store: The store.
        execution_id: The execution that failed.
        error: What the run raised.
        policy: The flow's `retry` policy; `None`: never retried.

    Returns:
        Seconds until the retry, or `None` when none was scheduled.

    Raises:
        StoreError: The database stayed unreachable for the retry budget.
    """
    if policy is None:
        return None
    record = store.find_execution(execution_id)
    if record is None or record.status != "failed" or record.lease_owner is not None or record.cancel_requested:
        return None
    state = retry_state(store, execution_id)
    failed_attempt = state.retries + 1
    now = time.time()
    delay_s = policy.next_delay_s(error, failed_attempt, now - record.created_at_epoch_s)
    if delay_s is None:
        return None
    t = tables.executions

    def change(connection: Connection, retry: bool) -> bool:
        result = connection.execute(
            update(t)
            .where(
                t.c.id == execution_id,
                t.c.status == "failed",
                t.c.lease_owner.is_(None),
                t.c.retry_attempts == state.retries,
                t.c.updated_at_epoch_s == record.updated_at_epoch_s,
            )
            .values(retry_attempts=failed_attempt, retry_at_epoch_s=now + delay_s)
        )
        if result.rowcount == 1:
            return True
        return retry and connection.execute(
            select(t.c.retry_attempts).where(t.c.id == execution_id)
        ).scalar() == failed_attempt

    if not store._write(f"schedule a retry of execution {execution_id!r}", change):  # pyright: ignore[reportPrivateUsage]
        return None
    store.record_audit(
        execution_id,
        "retry scheduled",
        (f"worker on {_leases.HOST}", "worker"),
        details={
            "attempt": failed_attempt + 1,
            "delay_s": round(delay_s, 3),
            "error": policy.describe(error) or type(error).__name__,
        },
    )
    logger.info(
        "kitaru: execution %r failed (attempt %d): retrying in %.1f s", execution_id, failed_attempt, delay_s
    )
    return delay_s
