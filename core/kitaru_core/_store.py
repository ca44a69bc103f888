"""The metadata store (SQLAlchemy 2 Core, SQLite WAL or PostgreSQL) and the fsspec artifact store."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from sqlalchemy import (
    JSON,
    Engine,
    and_,
    bindparam,
    case,
    cast,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.pool import StaticPool

from kitaru_core import _tables as tables
from kitaru_core._records import (
    UNFINISHED_STATUSES,
    ArtifactRecord,
    AuditRecord,
    CallRecord,
    ExecutionRecord,
    ExecutionStatus,
    StoredValue,
    TokenRecord,
    WaitRecord,
    call_from_columns,
    json_or_report,
    stored_value,
)
from kitaru_core.errors import (
    ExecutionNotFoundError,
    MigrationError,
    StoreError,
    WaitAlreadyAnsweredError,
    WaitNotFoundError,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")


def _execution(row: RowMapping) -> ExecutionRecord:
    return ExecutionRecord(
        id=row["id"],
        flow_name=row["flow_name"],
        entry_point=row["entry_point"],
        inputs_fingerprint=row["inputs_fingerprint"],
        inputs_format=row["inputs_format"],
        inputs=row["inputs"],
        status=row["status"],
        output=stored_value(row, "output"),
        error_type=row["error_type"],
        error_message=row["error_message"],
        error_traceback=row["error_traceback"],
        run_count=row["run_count"],
        replay_of=row["replay_of"],
        cancel_requested=bool(row["cancel_requested"]),
        lease_owner=row["lease_owner"],
        lease_host=row["lease_host"],
        lease_pid=row["lease_pid"],
        lease_expires_at_epoch_s=row["lease_expires_at_epoch_s"],
        created_at_epoch_s=row["created_at_epoch_s"],
        updated_at_epoch_s=row["updated_at_epoch_s"],
        ended_at_epoch_s=row["ended_at_epoch_s"],
        lease_host_id=row["lease_host_id"],
        lease_process_start_ticks=row["lease_process_start_ticks"],
        metadata=json_or_report(row.get("metadata"), f"metadata of execution {row['id']!r}") or {},
    )


def _wait(row: RowMapping) -> WaitRecord:
    where = f"wait {row['name']!r} of execution {row['execution_id']!r}"
    return WaitRecord(
        id=row["id"],
        execution_id=row["execution_id"],
        name=row["name"],
        call_key=row["call_key"],
        question=row["question"],
        schema=json_or_report(row["schema"], f"schema of {where}") or {},
        details=json_or_report(row["details"], f"details of {where}") or {},
        status=row["status"],
        answer=json_or_report(row["answer"], f"answer of {where}"),
        has_answer=row["answer"] is not None,
        refused_answers=json_or_report(row["refused_answers"], f"refused answers of {where}") or [],
        created_at_epoch_s=row["created_at_epoch_s"],
        answered_at_epoch_s=row["answered_at_epoch_s"],
        answered_by=row["answered_by"],
    )


def _protocols(filesystem: Any) -> tuple[str, ...]:
    protocol = filesystem.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def make_private_directory(path: Path) -> None:
    """Create `path` and its missing parents readable by this user only (mode 0700).

    Folders that already exist are left as they are. Values and the database can hold customer
    data and secrets that tools returned, so nothing kitaru creates is readable by other users.
    """
    missing: list[Path] = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue


def _create_private_file(path: Path) -> None:
    """Create an empty file with mode 0600 unless it exists (SQLite gives its WAL the same mode)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(descriptor)


# The PostgreSQL advisory lock that serialises migrations ("kitaru" in ASCII, then 1).
_MIGRATION_LOCK_KEY = 0x6B6974617275_0001


# fsspec protocols of object stores whose writes appear whole or not at all (S3, Google Cloud Storage).
_ATOMIC_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs"})


class ArtifactStore:
    """Content-addressed blobs (SHA-256) in any fsspec file system.

    `put` returns only once the blob is complete in the store (closed, and on file systems
    without atomic writes moved into place from a temporary name), and callers write the row that
    references it afterwards: a crash mid-upload leaves at most an unreferenced object or
    temporary file, never a reference to a missing blob.

    Args:
        url: A folder path or an fsspec URL (`memory://x`, `s3://bucket/prefix`, `gs://...`).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._filesystem: Any = None
        self._root = ""

    def _fs(self) -> Any:
        if self._filesystem is None:
            import fsspec

            filesystem, root = fsspec.core.url_to_fs(self.url)
            if "file" in _protocols(filesystem):
                make_private_directory(Path(root))
            self._filesystem, self._root = filesystem, root.rstrip("/")
        return self._filesystem

    def _path(self, digest: str) -> str:
        return f"{self._root}/{digest[:2]}/{digest}"

    def put(self, payload: bytes) -> str:
        """Store `payload`; return its SHA-256 hex digest (the reference)."""
        digest = hashlib.sha256(payload).hexdigest()
        filesystem = self._fs()
        path = self._path(digest)
        try:
            if not filesystem.exists(path):
                if _ATOMIC_OBJECT_STORES.intersection(_protocols(filesystem)):
                    # An object store publishes an object whole when its upload completes (the
                    # close below); an upload cut off leaves no object. No temporary name then:
                    # a move there is a copy of every byte plus a delete.
                    with filesystem.open(path, "wb") as handle:
                        handle.write(payload)
                    return digest
                filesystem.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
                temporary = f"{path}.{threading.get_ident()}.tmp"
                with filesystem.open(temporary, "wb") as handle:
                    handle.write(payload)
                filesystem.mv(temporary, path)
        except OSError as error:
            raise StoreError(f"Cannot write artifact {digest} to {self.url}: {error}") from error
        return digest

    def get(self, digest: str) -> bytes:
        """Read the blob stored under `digest`.

        Raises:
            StoreError: The blob is missing or its content does not match its digest.
        """
        try:
            with self._fs().open(self._path(digest), "rb") as handle:
                payload: bytes = handle.read()
        except (OSError, FileNotFoundError) as error:
            raise StoreError(f"Artifact {digest} is missing from {self.url}: {error}") from error
        if hashlib.sha256(payload).hexdigest() != digest:
            raise StoreError(f"Corrupt artifact {digest} in {self.url}: its content does not match its hash.")
        return payload


# Built once: constructing these per call costs more than the SQLite commit itself (measured by
# tests/benchmarks/bench_core.py: about 0.5 ms of SQLAlchemy statement construction per call).
_INSERT_CALL = insert(tables.checkpoint_calls).returning(tables.checkpoint_calls.c.id)
_CALL_COLUMNS = [
    column for column in tables.checkpoint_calls.c if column.name not in {"id", "last_served_run"}
]
_CALL_DEFAULTS: dict[str, Any] = {
    column.name: column.default.arg if column.default is not None else None  # pyright: ignore[reportAttributeAccessIssue]
    for column in _CALL_COLUMNS
}
# The same insert, written only while the runner still holds the execution's lease (one statement).
_INSERT_CALL_IF_LEASED_NO_ID = insert(tables.checkpoint_calls).from_select(
    [column.name for column in _CALL_COLUMNS],
    select(*[bindparam(column.name, type_=column.type) for column in _CALL_COLUMNS]).where(
        exists()
        .where(tables.executions.c.id == bindparam("lease_execution_id"))
        .where(tables.executions.c.lease_owner == bindparam("lease_owner"))
    ),
)
_INSERT_CALL_IF_LEASED = _INSERT_CALL_IF_LEASED_NO_ID.returning(tables.checkpoint_calls.c.id)


# The whole store's change marker: index and primary-key lookups only (see `Store.change_marker`).
# Per status, the newest `updated_at` (index `ix_kitaru_executions_status_updated`, one seek each);
# the newest call and wait ids; for waits, the newest answer time and how many are pending (the
# waits table is small next to the calls table; a refused answer makes its wait pending again).
_STORE_CHANGE_MARKER = select(
    *[
        select(func.max(tables.executions.c.updated_at_epoch_s))
        .where(tables.executions.c.status == status)
        .scalar_subquery()
        for status in get_args(ExecutionStatus)
    ],
    select(func.max(tables.checkpoint_calls.c.id)).scalar_subquery(),
    select(func.max(tables.waits.c.id)).scalar_subquery(),
    select(func.max(tables.waits.c.answered_at_epoch_s)).scalar_subquery(),
    select(func.count()).select_from(tables.waits).where(tables.waits.c.status == "pending").scalar_subquery(),
)

_SQLITE_SUPERSEDE = "UPDATE kitaru_checkpoint_calls SET status = 'superseded' WHERE id = ?"
_POSTGRES_SUPERSEDE = "UPDATE kitaru_checkpoint_calls SET status = 'superseded' WHERE id = ANY(%(ids)s)"

# A `started` record (on_interrupted="ask"/"fail") becomes its outcome in place, only while the
# runner still holds the lease; built once, like the insert above.
_FINISHED_COLUMNS = [column for column in _CALL_COLUMNS if column.name not in {"execution_id", "call_key"}]
_FINISH_STARTED_CALL = (
    update(tables.checkpoint_calls)
    .where(
        tables.checkpoint_calls.c.id == bindparam("row_id"),
        tables.checkpoint_calls.c.status == bindparam("started_status"),
        exists()
        .where(tables.executions.c.id == bindparam("lease_execution_id"))
        .where(tables.executions.c.lease_owner == bindparam("lease_owner")),
    )
    .values({column.name: bindparam(f"new_{column.name}", type_=column.type) for column in _FINISHED_COLUMNS})
)


FaultKind = Literal["transient", "locked"]

# Words of driver messages that mean the connection or the server went away (psycopg, psycopg2,
# asyncpg, SQLAlchemy's own "connection is closed"); checked only for non-SQLite databases.
_DISCONNECT_WORDS = (
    "connection is closed",
    "terminating connection",
    "server closed the connection",
    "connection refused",
    "could not connect",
    "connection reset",
    "connection timed out",
    "connection not open",
    "consuming input failed",
    "ssl connection has been closed",
    "the database system is starting up",
    "the database system is shutting down",
    "adminshutdown",
    "could not serialize access",
    "deadlock detected",
)


def classify_fault(error: BaseException) -> FaultKind | None:
    """How a database error should be handled: retried (`transient`), reported as a locked SQLite file, or raised.

    Transient: a connection SQLAlchemy invalidated (disconnect), and on server databases an
    `OperationalError`/`InterfaceError` (server restarted, connection terminated or refused, psycopg's
    `AdminShutdown`, `SerializationFailure`, `DeadlockDetected`). On SQLite only "database is locked"
    or "busy" is special (`locked`); SQLite has no connection to lose.
    """
    original = error.orig if isinstance(error, DBAPIError) else error
    message = str(original).lower()
    if isinstance(original, sqlite3.OperationalError) or "sqlite" in type(original).__module__:
        return "locked" if "locked" in message or "busy" in message else None
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return "transient"
    if isinstance(error, OperationalError | InterfaceError):
        return "transient"
    if any(word in message for word in _DISCONNECT_WORDS) or type(original).__name__ in {
        "AdminShutdown",
        "SerializationFailure",
        "DeadlockDetected",
        "OperationalError",
    }:
        return "transient"
    return None


def _first_line(error: BaseException) -> str:
    text_ = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text_[0] if text_ else ''}"


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _is_in_memory(url: str) -> bool:
    return url in {"sqlite://", "sqlite:///:memory:", "sqlite+pysqlite://"}


PING_AFTER_IDLE_S = 1.0
"""A pooled PostgreSQL connection idle for longer is pinged when checked out (a dead one is replaced)."""


def _ping_idle_connections(engine: Engine) -> None:
    """Ping a pooled connection at checkout only when it sat idle for `PING_AFTER_IDLE_S` or more.

    SQLAlchemy's `pool_pre_ping` pings at every checkout: one extra round trip per recorded call.
    A connection used within the last second is not pinged; if it died anyway (the server restarted
    just now) the statement fails, SQLAlchemy invalidates the pool, and the store's retry runs it
    again on a new connection.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:  # pyright: ignore[reportUnusedFunction]
        record.info["kitaru_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:  # pyright: ignore[reportUnusedFunction]
        idle_since = record.info.get("kitaru_idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise DisconnectionError(f"the pooled connection is gone: {error}") from error
        if not alive:
            raise DisconnectionError("the pooled connection did not answer a ping")


def _make_engine(
    url: str, busy_timeout_s: Callable[[], float], synchronous: Callable[[], str] = lambda: "full"
) -> Engine:
    """The engine: PostgreSQL with a pre-pinged pool; SQLite in WAL mode, reads deferred, writes immediate.

    On SQLite a transaction begun on a connection with the execution option `kitaru_read` starts
    with a plain (deferred) `BEGIN`, which in WAL mode reads a snapshot without taking any lock a
    writer could wait on; every other transaction starts with `BEGIN IMMEDIATE` (takes the write
    lock at once, so two writers never fail on a read-to-write upgrade). A SQLite file runs
    `PRAGMA synchronous=` `synchronous()` on each new connection (`"full"` or `"normal"`).
    """
    if not _is_sqlite(url):
        connect_args = {"connect_timeout": 10} if "psycopg" in url.split("://", 1)[0] else {}
        engine = create_engine(url, pool_size=5, max_overflow=5, connect_args=connect_args)
        _ping_idle_connections(engine)
        return engine
    in_memory = _is_in_memory(url)
    if not in_memory:
        database = url.split("///", 1)[1].split("?", 1)[0] if "///" in url else ""
        if database and not database.startswith("file:"):
            make_private_directory(Path(database).parent)
            _create_private_file(Path(database))
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": busy_timeout_s()},
        poolclass=StaticPool if in_memory else None,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:  # pyright: ignore[reportUnusedFunction]
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s() * 1000)}")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL is SQLite's default; NORMAL in WAL skips the fsync of each commit (process-crash durable).
            cursor.execute("PRAGMA synchronous=NORMAL" if synchronous() == "normal" else "PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:  # pyright: ignore[reportUnusedFunction]
        # Straight to the driver: SQLAlchemy's statement machinery costs more than the BEGIN itself.
        read_only = connection.get_execution_options().get("kitaru_read", False)
        driver: Any = connection.connection.driver_connection
        driver.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


class Store:
    """Executions, checkpoint calls and waits in one SQL database, large values in an artifact store.

    Args:
        url: SQLAlchemy URL. `sqlite://` is an in-memory database (one per Store).
        artifacts_url: fsspec URL of the artifact store.
        inline_limit_bytes: Larger serialized values go to the artifact store.
        retry_budget_s: Seconds an operation retries a lost connection or a serialization failure
            (exponential backoff, 0.05 s doubling up to 2 s) before it raises `StoreError`.
        sqlite_busy_timeout_s: Seconds a SQLite write waits for another process's write lock.
        sqlite_synchronous: `"full"` (a commit survives a power loss) or `"normal"` (SQLite WAL
            `synchronous=NORMAL`: a commit survives a process crash, not a power loss).

    Every operation is safe to retry: one whose commit succeeded but whose acknowledgement was lost
    recognises its own write on the next attempt (a checkpoint call is never recorded twice).

    Raises:
        StoreError: The database cannot be reached, or (SQLite) stays locked by another process.
        MigrationError: The schema is newer than this code, or a migration failed.
    """

    def __init__(
        self,
        url: str,
        artifacts_url: str,
        *,
        inline_limit_bytes: int = 64 * 1024,
        retry_budget_s: float = 30.0,
        sqlite_busy_timeout_s: float = 30.0,
        sqlite_synchronous: str = "full",
    ) -> None:
        self.url = url
        self.sqlite_synchronous = sqlite_synchronous
        self.inline_limit_bytes = inline_limit_bytes
        self.retry_budget_s = retry_budget_s
        self.sqlite_busy_timeout_s = sqlite_busy_timeout_s
        self.retries = 0  # transient faults retried so far (read by tests and benchmarks)
        self.artifacts = ArtifactStore(artifacts_url)
        self.engine = _make_engine(url, lambda: self.sqlite_busy_timeout_s, lambda: self.sqlite_synchronous)
        self._writer = self.engine  # SQLite: BEGIN IMMEDIATE
        self._reader = self.engine.execution_options(kitaru_read=True)  # SQLite: deferred BEGIN, no lock
        # PostgreSQL: a single-statement write in autocommit is its own transaction: one round trip
        # instead of BEGIN, the statement and COMMIT (it is durable when the statement returns).
        self._autocommit = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT")
            if self.engine.dialect.name == "postgresql"
            else None
        )
        self._write_lock = threading.RLock()
        self._hot_connection: Any = None  # the pooled connection `_record_call_on_driver` keeps
        self._leased_inserts: dict[tuple[str, ...], str] = {}  # see `_leased_insert_of`
        # What the driver raises where SQLAlchemy does not wrap it (the calls recorded on the driver)
        driver_error = getattr(self.engine.dialect.dbapi, "Error", None)
        self._faults: tuple[type[BaseException], ...] = (SQLAlchemyError, sqlite3.Error) + (
            (driver_error,) if isinstance(driver_error, type) and issubclass(driver_error, BaseException) else ()
        )
        self._migrate()

    def _compiled_for_sqlite(self, statement: Any) -> tuple[str, list[str]] | None:
        """SQLite: `statement`'s SQL and the order of its parameters (run on the driver); else `None`."""
        if self.engine.dialect.name != "sqlite":
            return None
        compiled = statement.compile(dialect=self.engine.dialect)
        return str(compiled), list(compiled.positiontup or [])

    @functools.cached_property
    def _sqlite_finish(self) -> tuple[str, list[str]] | None:
        """The started-call outcome update compiled for the driver, at its first use."""
        return self._compiled_for_sqlite(_FINISH_STARTED_CALL)

    @functools.cached_property
    def _driver_inserts(self) -> bool:
        """Whether live calls are recorded through the driver (`_record_call_on_driver`): SQLite, psycopg 3."""
        dialect = self.engine.dialect
        return dialect.name == "sqlite" or (dialect.name == "postgresql" and dialect.driver == "psycopg")

    def _leased_insert_of(self, columns: tuple[str, ...]) -> str:
        """The leased insert writing only `columns` (the others take their NULL), as the driver runs it.

        Compiled by SQLAlchemy for this database once per column set (a handful: completed, failed,
        started, model calls...); binding only the given values instead of every column's NULL is
        2 µs of a 10 µs insert on SQLite. SQLite gets no `RETURNING` (the driver's row count and
        last row id say the same for less); PostgreSQL returns the new row's id.
        """
        sql = self._leased_inserts.get(columns)
        if sql is None:
            t = tables.checkpoint_calls
            statement: Any = insert(t).from_select(
                list(columns),
                select(*[bindparam(name, type_=t.c[name].type) for name in columns]).where(
                    exists()
                    .where(tables.executions.c.id == bindparam("lease_execution_id"))
                    .where(tables.executions.c.lease_owner == bindparam("lease_owner"))
                ),
            )
            if self.engine.dialect.name != "sqlite":
                statement = statement.returning(t.c.id)
            compiled = statement.compile(dialect=self.engine.dialect)
            # every column that has a Python-side default (`attempts`) is among `columns`: nothing added
            assert list(compiled.binds) == [*columns, "lease_execution_id", "lease_owner"]
            sql = self._leased_inserts[columns] = str(compiled)
        return sql

    # -- faults ---------------------------------------------------------------------------------

    def _retrying(
        self, what: str | Callable[[], str], operation: Callable[[bool], T], *, budget_s: float | None = None
    ) -> T:
        """Run `operation(retry)` and retry it on transient faults with bounded exponential backoff.

        `retry` is `False` on the first attempt and `True` afterwards: an attempt that follows a fault
        first looks for its own earlier write (its commit may have succeeded before the connection
        dropped). A locked SQLite database raises the `StoreError` of `_locked_error` at once (the
        driver already waited `sqlite_busy_timeout_s`).

        Args:
            what: What the operation does, for messages (or a function that says it, called only
                for a message: the hot path need not format it).
            operation: One attempt, in its own transaction.
            budget_s: Seconds to keep retrying (default: `retry_budget_s`).

        Returns:
            What `operation` returned.

        Raises:
            StoreError: The fault persisted past the budget, or the SQLite database stayed locked.
        """
        budget = self.retry_budget_s if budget_s is None else budget_s
        deadline = time.monotonic() + budget
        delay_s = 0.05
        attempt = 0
        while True:
            try:
                return operation(attempt > 0)
            except self._faults as error:
                if not isinstance(what, str):
                    what = what()
                kind = classify_fault(error)
                if kind == "locked":
                    raise self._locked_error(what, error) from error
                if kind is None:
                    raise
                attempt += 1
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    raise StoreError(
                        f"Cannot {what}: the database at {self._safe_url()} stayed unreachable for "
                        f"{budget:.1f} s ({attempt} attempts; last error: {_first_line(error)}). "
                        "Nothing after the last committed checkpoint call is lost: once the database is "
                        "back, run the flow again (or `kitaru-adapters executions resume <id>`) and it "
                        "resumes. Raise the budget with configure(store_retry_budget_s=...)."
                    ) from error
                self.retries += 1
                logger.warning(
                    "kitaru: %s failed (%s); retrying in %.2f s (attempt %d)",
                    what,
                    _first_line(error),
                    min(delay_s, remaining_s),
                    attempt + 1,
                )
                time.sleep(min(delay_s, remaining_s))
                delay_s = min(delay_s * 2, 2.0)

    def _safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def _locked_error(self, what: str, error: BaseException) -> StoreError:
        """The `StoreError` for a SQLite database whose write lock another process keeps holding."""
        holders = ""
        try:  # a plain read: it takes no lock, so it answers while the writer holds the lock
            t = tables.executions
            with self._reader.connect() as connection:
                rows = connection.execute(
                    select(t.c.id, t.c.lease_host, t.c.lease_pid).where(
                        t.c.status == "running", t.c.lease_owner.is_not(None)
                    )
                ).all()
            if rows:
                holders = " Runners holding leases now: " + ", ".join(
                    f"execution {row.id!r} (host {row.lease_host}, pid {row.lease_pid})" for row in rows
                ) + "; one of them may be paused or hung inside a write."
        except Exception:  # the diagnosis is best effort
            holders = ""
        return StoreError(
            f"Cannot {what}: the SQLite database {self.url} is locked: another process has held its "
            f"write lock for more than {self.sqlite_busy_timeout_s:g} s.{holders} Wait for that process "
            "to finish, or stop it (its executions resume later); raise the wait with "
            "configure(sqlite_busy_timeout_s=...), or use PostgreSQL for many concurrent writers. "
            f"({_first_line(error)})"
        )

    def _read(self, what: str, query: Callable[[Connection], T]) -> T:
        """Run `query` in a read transaction (SQLite: deferred, no write lock), retrying transient faults."""

        def attempt(_retry: bool) -> T:
            with self._reader.connect() as connection:
                return query(connection)

        return self._retrying(what, attempt)

    def _write(
        self, what: str, change: Callable[[Connection, bool], T], *, budget_s: float | None = None
    ) -> T:
        """Run `change(connection, retry)` in one write transaction, retrying transient faults.

        `retry` tells `change` that an earlier attempt may have committed (see `_retrying`).
        """

        def attempt(retry: bool) -> T:
            with self._write_lock, self._writer.begin() as connection:
                return change(connection, retry)

        return self._retrying(what, attempt, budget_s=budget_s)

    # -- schema ---------------------------------------------------------------------------------

    @staticmethod
    def _current_revision(connection: Connection) -> str | None:
        from kitaru_core.migrations import current_revision

        return current_revision(connection)

    def _migrate(self) -> None:
        try:
            with self._reader.connect() as connection:
                revision = self._current_revision(connection)
                connection.rollback()
            if revision == tables.SCHEMA_REVISION:
                return
            if revision is not None and revision > tables.SCHEMA_REVISION:
                raise MigrationError(
                    f"The store at {self.url} has schema revision {revision}, newer than this version of "
                    f"kitaru-adapters understands ({tables.SCHEMA_REVISION}). Upgrade kitaru-adapters."
                )
            from alembic import command
            from alembic.config import Config

            config = Config()
            config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
            with self._writer.begin() as connection:
                if connection.dialect.name == "postgresql":
                    # Processes that open a fresh store at once (N workers deployed together)
                    # migrate one at a time; the others then find the schema current.
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})")
                if self._current_revision(connection) == tables.SCHEMA_REVISION:
                    return
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except MigrationError:
            raise
        except Exception as error:  # alembic reports failures with its own exception types
            cause: BaseException | None = error
            while cause is not None:  # a locked or unreachable database is not a failed migration
                kind = classify_fault(cause)
                if kind == "locked":
                    raise self._locked_error("open the store", cause) from error
                if kind == "transient" or isinstance(cause, SQLAlchemyError | sqlite3.Error):
                    raise StoreError(f"Cannot open the store at {self._safe_url()}: {error}") from error
                cause = cause.__cause__ or cause.__context__
            raise MigrationError(f"Migrating the store at {self.url} failed: {error}") from error

    def close(self) -> None:
        """Release the database connections."""
        self._release_hot_connection()
        self.engine.dispose()

    # -- values ---------------------------------------------------------------------------------

    def prepare_value(self, format_: str, payload: bytes) -> StoredValue:
        """Put large payloads into the artifact store; keep small ones inline."""
        if len(payload) > self.inline_limit_bytes:
            return StoredValue(format_, None, self.artifacts.put(payload), len(payload))
        return StoredValue(format_, payload, None, len(payload))

    def load_value(self, value: StoredValue) -> bytes:
        """The payload bytes of a stored value, reading the artifact store if needed."""
        if value.payload is not None:
            return value.payload
        if value.reference is None:
            raise StoreError(
                "Corrupt record: a stored value has neither inline bytes nor an artifact reference."
            )
        return self.artifacts.get(value.reference)

    # -- executions -----------------------------------------------------------------------------

    def create_execution(
        self,
        execution_id: str,
        *,
        flow_name: str,
        entry_point: str | None,
        inputs_fingerprint: str | None,
        inputs: StoredValue | None,
        replay_of: str | None = None,
        status: ExecutionStatus = "running",
        queue: str | None = None,
    ) -> ExecutionRecord:
        """Insert a new execution with status `running` (or `queued`, for workers) and no lease.

        `queue` names the worker queue it belongs to (default: the column's default, `default`).

        Raises:
            StoreError: An execution with this id exists already.
        """
        now = time.time()
        values: dict[str, Any] = {
            "id": execution_id,
            "flow_name": flow_name,
            "entry_point": entry_point,
            "inputs_fingerprint": inputs_fingerprint,
            "inputs_format": inputs.format if inputs else None,
            "inputs": inputs.payload if inputs else None,
            "status": status,
            "run_count": 0,
            "replay_of": replay_of,
            "cancel_requested": False,
            "created_at_epoch_s": now,
            "updated_at_epoch_s": now,
        }
        if queue is not None:
            values["queue"] = queue
        t = tables.executions

        def change(connection: Connection, retry: bool) -> None:
            if retry:  # the first attempt may have committed: is the row there ours?
                mine = connection.execute(
                    select(t.c.id).where(
                        t.c.id == execution_id, t.c.flow_name == flow_name, t.c.created_at_epoch_s == now
                    )
                ).first()
                if mine is not None:
                    return
            connection.execute(insert(t).values(values))

        try:
            self._write(f"create execution {execution_id!r}", change)
        except IntegrityError as error:
            raise StoreError(f"An execution with id {execution_id!r} exists already.") from error
        record = self.get_execution(execution_id)
        return record

    def find_execution(self, execution_id: str) -> ExecutionRecord | None:
        """The execution with this id, or `None`."""
        query = select(tables.executions).where(tables.executions.c.id == execution_id)
        row = self._read("read an execution", lambda connection: connection.execute(query).mappings().first())
        return _execution(row) if row else None

    def get_execution(self, execution_id: str) -> ExecutionRecord:
        """The execution with this id.

        Raises:
            ExecutionNotFoundError: There is none.
        """
        record = self.find_execution(execution_id)
        if record is None:
            raise ExecutionNotFoundError(execution_id)
        return record

    def find_resumable(self, flow_name: str, inputs_fingerprint: str) -> ExecutionRecord | None:
        """The newest unfinished (running, waiting, failed) or cancelled execution of a flow with these inputs.

        A cancelled one is returned so the caller can refuse to run it again without `fresh=True`.
        """
        t = tables.executions
        query = (
            select(t)
            .where(
                t.c.flow_name == flow_name,
                t.c.inputs_fingerprint == inputs_fingerprint,
                t.c.status.in_([*UNFINISHED_STATUSES, "cancelled"]),
            )
            .order_by(t.c.created_at_epoch_s.desc())
            .limit(1)
        )
        row = self._read("find a resumable execution", lambda connection: connection.execute(query).mappings().first())
        return _execution(row) if row else None

    @staticmethod
    def _execution_filters(
        statuses: Sequence[str],
        flow_name: str | None,
        created_after_epoch_s: float | None,
        created_before_epoch_s: float | None,
    ) -> list[Any]:
        t = tables.executions
        conditions: list[Any] = []
        if statuses:
            conditions.append(t.c.status.in_(list(statuses)))
        if flow_name:
            conditions.append(t.c.flow_name == flow_name)
        if created_after_epoch_s is not None:
            conditions.append(t.c.created_at_epoch_s >= created_after_epoch_s)
        if created_before_epoch_s is not None:
            conditions.append(t.c.created_at_epoch_s < created_before_epoch_s)
        return conditions

    def list_executions(
        self,
        *,
        statuses: Sequence[str] = (),
        flow_name: str | None = None,
        created_after_epoch_s: float | None = None,
        created_before_epoch_s: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[ExecutionRecord]:
        """Executions, newest first, filtered by status, flow name and creation time."""
        t = tables.executions
        query = (
            select(t)
            .where(
                *self._execution_filters(statuses, flow_name, created_after_epoch_s, created_before_epoch_s)
            )
            .order_by(t.c.created_at_epoch_s.desc(), t.c.id)
            .limit(limit)
            .offset(offset)
        )
        return self._read(
            "list executions",
            lambda connection: [_execution(row) for row in connection.execute(query).mappings()],
        )

    def count_executions(
        self,
        *,
        statuses: Sequence[str] = (),
        flow_name: str | None = None,
        created_after_epoch_s: float | None = None,
        created_before_epoch_s: float | None = None,
    ) -> int:
        """How many executions `list_executions` would page through with these filters."""
        t = tables.executions
        query = (
            select(func.count())
            .select_from(t)
            .where(
                *self._execution_filters(statuses, flow_name, created_after_epoch_s, created_before_epoch_s)
            )
        )
        return self._read("count executions", lambda connection: int(connection.execute(query).scalar() or 0))

    def change_marker(self, execution_id: str | None = None) -> str:
        """A short string that changes whenever an execution, a checkpoint call or a wait changes.

        Cheap enough to poll (the dashboard asks every 250 ms): every part is an index or primary-key
        lookup, not an aggregate over a table. Every write the runtime and the client make moves one
        of the numbers: a new or updated execution (the newest `updated_at` among executions of each
        status, read from the `(status, updated_at)` index), a new checkpoint call (ids only grow;
        superseding one inserts its successor), a new wait, an answer, a refused answer. Calls served
        from the store on resume are marked within a run whose end (or served-run record) updates
        its execution. For one execution the same facts are read with its own aggregates (its calls
        and waits, by index), served marks included.

        Args:
            execution_id: Watch only this execution; default: the whole store.
        """
        e, c, w = tables.executions, tables.checkpoint_calls, tables.waits
        if execution_id is None:
            queries = [_STORE_CHANGE_MARKER]
        else:
            queries = [
                select(func.count(), func.max(e.c.updated_at_epoch_s), func.max(e.c.run_count)).where(
                    e.c.id == execution_id
                ),
                select(func.count(), func.max(c.c.id), func.sum(c.c.last_served_run)).where(
                    c.c.execution_id == execution_id
                ),
                select(
                    func.count(),
                    func.max(w.c.id),
                    func.max(w.c.answered_at_epoch_s),
                    func.sum(case((w.c.status == "pending", 1), else_=0)),
                ).where(w.c.execution_id == execution_id),
            ]
        parts = self._read(
            "read the change marker",
            lambda connection: [tuple(connection.execute(query).one()) for query in queries],
        )
        return "/".join(",".join("" if value is None else repr(value) for value in part) for part in parts)

    def try_acquire_lease(
        self,
        execution_id: str,
        *,
        expected_owner: str | None,
        owner: str,
        host: str,
        pid: int,
        lease_duration_s: float,
        host_id: str | None = None,
        process_start_ticks: int | None = None,
    ) -> bool:
        """Compare-and-set the lease: succeeds only if the lease owner is still `expected_owner`.

        On success the execution becomes `running`, its run count grows by one and its cancel flag,
        error and end time are cleared.

        Args:
            execution_id: The execution.
            expected_owner: The lease owner seen when the lease was judged free (`None`: no owner).
            owner: The new owner's token (unique per run).
            host: The new holder's host name (shown to people).
            pid: The new holder's process id.
            lease_duration_s: Seconds until the lease expires without a renewal.
            host_id: The new holder's host id (boot id and pid namespace; see `_leases.HOST_ID`).
            process_start_ticks: The new holder's process start time (clock ticks since boot).

        Returns:
            Whether the lease is now `owner`'s.
        """
        t = tables.executions
        owner_matches = (
            t.c.lease_owner.is_(None) if expected_owner is None else t.c.lease_owner == expected_owner
        )

        def change(connection: Connection, retry: bool) -> bool:
            if retry:  # an earlier attempt may have committed: the lease is ours already
                current = connection.execute(select(t.c.lease_owner).where(t.c.id == execution_id)).scalar()
                if current == owner:
                    return True
            now = time.time()
            result = connection.execute(
                update(t)
                .where(t.c.id == execution_id, owner_matches)
                .values(
                    lease_owner=owner,
                    lease_host=host,
                    lease_pid=pid,
                    lease_host_id=host_id,
                    lease_process_start_ticks=process_start_ticks,
                    lease_expires_at_epoch_s=now + lease_duration_s,
                    status="running",
                    run_count=t.c.run_count + 1,
                    error_type=None,
                    error_message=None,
                    error_traceback=None,
                    ended_at_epoch_s=None,
                    updated_at_epoch_s=now,
                )
            )
            return result.rowcount == 1

        return self._write(f"take the lease of execution {execution_id!r}", change)

    def renew_lease(
        self, execution_id: str, owner: str, lease_duration_s: float, *, retry_budget_s: float | None = None
    ) -> tuple[bool, bool]:
        """Extend a lease held by `owner` (compare-and-set on the owner: a lost lease stays lost).

        Args:
            execution_id: The execution.
            owner: The owner token given to `try_acquire_lease`.
            lease_duration_s: Seconds from now until the lease expires.
            retry_budget_s: Seconds to retry transient faults (default: the store's budget).

        Returns:
            `(still_owner, cancel_requested)`.

        Raises:
            StoreError: The database stayed unreachable for the retry budget.
        """
        t = tables.executions

        def change(connection: Connection, _retry: bool) -> tuple[bool, bool]:
            result = connection.execute(
                update(t)
                .where(t.c.id == execution_id, t.c.lease_owner == owner)
                .values(lease_expires_at_epoch_s=time.time() + lease_duration_s)
            )
            cancel = connection.execute(select(t.c.cancel_requested).where(t.c.id == execution_id)).scalar()
            return result.rowcount == 1, bool(cancel)

        return self._write(f"renew the lease of execution {execution_id!r}", change, budget_s=retry_budget_s)

    def finish_execution(
        self,
        execution_id: str,
        owner: str,
        *,
        status: ExecutionStatus,
        output: StoredValue | None = None,
        error: tuple[str, str, str] | None = None,
    ) -> bool:
        """Record the outcome of a run and release the lease, if `owner` still holds it."""
        t = tables.executions
        now = time.time()
        values: dict[str, Any] = {
            "status": status,
            "lease_owner": None,
            "lease_expires_at_epoch_s": None,
            "updated_at_epoch_s": now,
            "ended_at_epoch_s": now if status in ("completed", "failed", "cancelled") else None,
        }
        if output is not None:
            values.update(output_format=output.format, output=output.payload, output_ref=output.reference)
        if error is not None:
            values.update(error_type=error[0], error_message=error[1], error_traceback=error[2])

        def change(connection: Connection, retry: bool) -> bool:
            result = connection.execute(
                update(t).where(t.c.id == execution_id, t.c.lease_owner == owner).values(values)
            )
            if result.rowcount == 1:
                return True
            if retry:  # an earlier attempt may have committed: our outcome is there
                row = connection.execute(
                    select(t.c.status, t.c.lease_owner, t.c.updated_at_epoch_s).where(t.c.id == execution_id)
                ).first()
                return row is not None and tuple(row) == (status, None, now)
            return False

        return self._write(f"record the outcome of execution {execution_id!r}", change)

    def request_cancel(self, execution_id: str) -> ExecutionRecord:
        """Flag an execution as cancelled; a live runner stops at its next checkpoint call.

        An execution without a live runner becomes `cancelled` at once.

        Raises:
            ExecutionNotFoundError: No such execution.
        """
        t = tables.executions

        def change(connection: Connection, _retry: bool) -> None:
            now = time.time()
            result = connection.execute(
                update(t).where(t.c.id == execution_id).values(cancel_requested=True, updated_at_epoch_s=now)
            )
            if result.rowcount == 0:
                raise ExecutionNotFoundError(execution_id)
            connection.execute(
                update(t)
                .where(
                    t.c.id == execution_id,
                    t.c.status.in_(UNFINISHED_STATUSES),
                    or_(t.c.lease_owner.is_(None), t.c.lease_expires_at_epoch_s < now),
                )
                .values(status="cancelled", lease_owner=None, ended_at_epoch_s=now)
            )

        self._write(f"cancel execution {execution_id!r}", change)
        return self.get_execution(execution_id)

    def mark_crashed(self, crashed: Iterable[tuple[str, str | None]], *, message: str) -> list[str]:
        """Set `running` executions whose runner is gone to `failed`, recording why.

        Args:
            crashed: `(execution id, lease owner seen when the runner was judged gone)`; an execution
                whose lease changed hands since is left alone (compare-and-set).
            message: The error message to record.

        Returns:
            The ids actually marked.
        """
        t = tables.executions
        now = time.time()
        candidates = list(crashed)

        def change(connection: Connection, retry: bool) -> list[str]:
            marked: list[str] = []
            for execution_id, owner in candidates:
                owner_matches = t.c.lease_owner.is_(None) if owner is None else t.c.lease_owner == owner
                result = connection.execute(
                    update(t)
                    .where(t.c.id == execution_id, t.c.status == "running", owner_matches)
                    .values(
                        status="failed",
                        lease_owner=None,
                        lease_expires_at_epoch_s=None,
                        error_type="ProcessLost",
                        error_message=message,
                        updated_at_epoch_s=now,
                        ended_at_epoch_s=now,
                    )
                )
                if result.rowcount == 1:
                    marked.append(execution_id)
                elif retry:  # marked by an earlier attempt whose commit went through
                    row = connection.execute(
                        select(t.c.status, t.c.updated_at_epoch_s).where(t.c.id == execution_id)
                    ).first()
                    if row is not None and tuple(row) == ("failed", now):
                        marked.append(execution_id)
            return marked

        return self._write("mark crashed executions", change)

    # -- checkpoint calls -----------------------------------------------------------------------

    def find_call(self, execution_id: str, sequence: int) -> CallRecord | None:
        """The checkpoint call recorded at `sequence` in an execution (superseded ones included), or `None`."""
        t = tables.checkpoint_calls
        query = select(t).where(t.c.execution_id == execution_id, t.c.sequence == sequence).order_by(t.c.id)
        row = self._read("read a checkpoint call", lambda connection: connection.execute(query).mappings().first())
        return call_from_columns(row) if row else None

    def load_calls(self, execution_id: str, *, include_superseded: bool = False) -> list[CallRecord]:
        """All checkpoint calls of an execution in recording order (one query)."""
        t = tables.checkpoint_calls
        query = select(t).where(t.c.execution_id == execution_id).order_by(t.c.sequence, t.c.id)
        if not include_superseded:
            query = query.where(t.c.status != "superseded")
        return self._read(
            "load checkpoint calls",
            lambda connection: [call_from_columns(row) for row in connection.execute(query).mappings()],
        )

    def load_call_index(self, execution_id: str) -> list[tuple[int, str, int, bool]]:
        """Every checkpoint call record of an execution as `(id, call key, sequence, live)`, in recording order.

        `live` is `False` for superseded records. A resume keeps only this in memory and reads the
        full records in pages (`load_calls_by_id`) when it serves them (`_call_index.StoredCalls`).
        """
        t = tables.checkpoint_calls
        query = (
            select(t.c.id, t.c.call_key, t.c.sequence, t.c.status != "superseded")
            .where(t.c.execution_id == execution_id)
            .order_by(t.c.sequence, t.c.id)
        )
        return self._read(
            "load the checkpoint call index",
            lambda connection: [
                (row[0], row[1], row[2], bool(row[3])) for row in connection.execute(query)
            ],
        )

    def load_calls_by_id(self, ids: Sequence[int]) -> list[CallRecord]:
        """The checkpoint call records with these ids (those that exist), in id order (one query)."""
        if not ids:
            return []
        t = tables.checkpoint_calls
        query = select(t).where(t.c.id.in_(list(ids))).order_by(t.c.id)
        return self._read(
            "load checkpoint calls",
            lambda connection: [call_from_columns(row) for row in connection.execute(query).mappings()],
        )

    def record_call(
        self,
        values: dict[str, Any],
        *,
        supersede_ids: Sequence[int] = (),
        lease: tuple[str, str] | None = None,
    ) -> int:
        """Insert a checkpoint call (and mark older records superseded) in one transaction.

        Args:
            values: Column values of the new row; a column left out takes its default (NULL, or 1
                for `attempts`). `execution_id`, `call_key`, `sequence` and `ended_at_epoch_s` are
                required.
            supersede_ids: Ids of older records of the same key to mark `superseded`.
            lease: `(execution_id, owner)`: refuse to write unless `owner` still holds the lease.

        Returns:
            The new row's id, or -1 when the lease check failed (nothing was written).

        Raises:
            StoreError: The database stayed unreachable for the retry budget.

        A retry after a fault first looks for the row an earlier attempt may have committed (same
        execution, sequence, key and end time: written by this runner) and returns its id instead of
        inserting a second record.
        """
        leased = None
        if lease is not None and not self._driver_inserts:  # the driver path binds `values` as they are
            leased = {**_CALL_DEFAULTS, **values, "lease_execution_id": lease[0], "lease_owner": lease[1]}
        t = tables.checkpoint_calls

        def attempt(retry: bool) -> int:
            if retry:  # built only here: statement construction costs more than the commit
                mine = select(t.c.id).where(
                    t.c.execution_id == values["execution_id"],
                    t.c.sequence == values["sequence"],
                    t.c.call_key == values["call_key"],
                    t.c.ended_at_epoch_s == values["ended_at_epoch_s"],
                )
                with self._reader.connect() as connection:
                    earlier = connection.execute(mine).scalar()
                if earlier is not None:
                    return int(earlier)
            if lease is not None and self._driver_inserts:
                return self._record_call_on_driver(values, lease, supersede_ids)
            if leased is not None and self._autocommit is not None and not supersede_ids:
                with self._write_lock, self._autocommit.connect() as connection:
                    row_id = connection.execute(_INSERT_CALL_IF_LEASED, leased).scalar()
                return int(row_id) if row_id is not None else -1  # None: another runner holds the lease
            with self._write_lock, self._writer.begin() as connection:
                if leased is None:
                    row_id = connection.execute(_INSERT_CALL, {**_CALL_DEFAULTS, **values}).scalar()
                else:
                    row_id = connection.execute(_INSERT_CALL_IF_LEASED, leased).scalar()
                    if row_id is None:  # another runner holds the lease now: nothing written
                        connection.rollback()
                        return -1
                if supersede_ids:
                    connection.execute(
                        update(t).where(t.c.id.in_(list(supersede_ids))).values(status="superseded")
                    )
            return int(row_id) if row_id is not None else -1

        return self._retrying(lambda: f"record checkpoint call {values['call_key']!r}", attempt)

    def _record_call_on_driver(
        self, values: dict[str, Any], lease: tuple[str, str], supersede_ids: Sequence[int]
    ) -> int:
        """`record_call` straight on the driver: the hot path of every live checkpoint call.

        The insert of exactly the columns in `values` (`_leased_insert_of`), compiled by SQLAlchemy,
        runs on the raw `sqlite3` or psycopg connection: SQLAlchemy's per-execution overhead was
        larger than the SQLite commit itself, and on PostgreSQL it limited how far recorded calls
        scale with processes (`bench_store.py --section scaling`). Without records to supersede the insert is one statement in autocommit, its own
        transaction (PostgreSQL: one round trip); with them, one transaction.
        """
        sql = self._leased_insert_of(tuple(values))
        sqlite = self.engine.dialect.name == "sqlite"
        with self._write_lock:
            # One pooled connection kept for this path (under the write lock): a pool checkout and
            # return per call cost about as much as the rest of the call.
            if self._hot_connection is None:
                hot = self.engine.raw_connection()
                if not sqlite:  # out of any transaction a checkout's ping may have left open, then autocommit
                    hot.driver_connection.rollback()  # pyright: ignore[reportOptionalMemberAccess]
                    hot.driver_connection.autocommit = True  # pyright: ignore[reportOptionalMemberAccess]
                self._hot_connection = hot
            driver: Any = self._hot_connection.driver_connection
            try:
                if sqlite:
                    return self._insert_on_sqlite(driver, sql, [*values.values(), *lease], supersede_ids)
                parameters = {**values, "lease_execution_id": lease[0], "lease_owner": lease[1]}
                if not supersede_ids:
                    row = driver.execute(sql, parameters).fetchone()
                    return int(row[0]) if row is not None else -1  # no row: another runner holds the lease
                with driver.transaction():
                    row = driver.execute(sql, parameters).fetchone()
                    if row is None:
                        return -1
                    driver.execute(_POSTGRES_SUPERSEDE, {"ids": list(supersede_ids)})
                return int(row[0])
            except BaseException:
                self._release_hot_connection()  # rolled back; the next call checks out a fresh one
                raise

    @staticmethod
    def _insert_on_sqlite(driver: Any, sql: str, parameters: list[Any], supersede_ids: Sequence[int]) -> int:
        """Run the leased insert on a `sqlite3` connection (autocommit mode); the new row's id or -1."""
        if not supersede_ids:
            # One statement is its own transaction: SQLite takes the write lock when a write
            # statement starts (waiting on the busy timeout, as BEGIN IMMEDIATE does) and commits
            # when it ends. Two driver calls fewer than BEGIN ... COMMIT.
            cursor = driver.execute(sql, parameters)
            return int(cursor.lastrowid) if cursor.rowcount == 1 else -1  # 0: the lease was lost
        driver.execute("BEGIN IMMEDIATE")
        cursor = driver.execute(sql, parameters)
        if cursor.rowcount != 1:  # another runner holds the lease now: nothing written
            driver.execute("ROLLBACK")
            return -1
        row_id = cursor.lastrowid  # the row just inserted (one row, on this connection)
        for superseded in supersede_ids:
            driver.execute(_SQLITE_SUPERSEDE, (superseded,))
        driver.execute("COMMIT")
        return int(row_id)

    def _release_hot_connection(self) -> None:
        with self._write_lock:
            hot, self._hot_connection = self._hot_connection, None
            if hot is not None:
                driver: Any = hot.driver_connection
                with contextlib.suppress(Exception):  # a broken connection is dropped all the same
                    if self.engine.dialect.name == "sqlite":
                        if driver.in_transaction:
                            driver.execute("ROLLBACK")
                    else:
                        driver.autocommit = False  # back to the pool as it came
                hot.close()

    def finish_started_call(self, row_id: int, values: dict[str, Any], *, lease: tuple[str, str]) -> bool:
        """Turn a `started` checkpoint call record into its outcome (completed or failed), in place.

        Used by calls with `on_interrupted="ask"` or `"fail"`, whose `started` record is committed
        before their body runs: the same row then holds the outcome. A retry after a fault first
        checks whether an earlier attempt already wrote this outcome (same status and end time).

        Args:
            row_id: Id of the `started` row.
            values: Column values of the outcome (status, output, error, timing...).
            lease: `(execution_id, owner)`: write only while `owner` still holds the lease.

        Returns:
            Whether the row holds the outcome (`False`: the lease was lost or the row is no longer
            `started`; nothing was written).

        Raises:
            StoreError: The database stayed unreachable for the retry budget.
        """
        complete = {**_CALL_DEFAULTS, **values}
        parameters = {f"new_{column.name}": complete[column.name] for column in _FINISHED_COLUMNS}
        parameters.update(
            row_id=row_id, started_status="started", lease_execution_id=lease[0], lease_owner=lease[1]
        )
        t = tables.checkpoint_calls

        def attempt(retry: bool) -> bool:
            if retry:  # the earlier attempt's commit may have gone through before the fault
                mine = select(t.c.status, t.c.ended_at_epoch_s).where(t.c.id == row_id)
                with self._reader.connect() as connection:
                    row = connection.execute(mine).first()
                if row is not None and (row.status, row.ended_at_epoch_s) == (
                    complete["status"],
                    complete["ended_at_epoch_s"],
                ):
                    return True
            if self._sqlite_finish is not None:  # straight to the driver, as `_record_call_on_driver`
                sql, order = self._sqlite_finish
                with self._write_lock, self._writer.connect() as connection:
                    driver: Any = connection.connection.driver_connection
                    driver.execute("BEGIN IMMEDIATE")
                    try:
                        updated = driver.execute(sql, [parameters[name] for name in order]).rowcount
                        driver.execute("COMMIT")
                    except BaseException:
                        if driver.in_transaction:
                            driver.execute("ROLLBACK")
                        raise
                return updated == 1
            with self._write_lock, self._writer.begin() as connection:
                return connection.execute(_FINISH_STARTED_CALL, parameters).rowcount == 1

        return self._retrying(f"record the outcome of checkpoint call {values['call_key']!r}", attempt)

    def discard_started_call(self, row_id: int, *, lease: tuple[str, str]) -> bool:
        """Delete a `started` record whose body stopped in an orderly way (at a wait): it runs again on resume.

        Returns:
            Whether this call deleted the row (`False`: the lease was lost, the row is no longer
            `started`, or an earlier attempt interrupted by a fault already deleted it).

        Raises:
            StoreError: The database stayed unreachable for the retry budget.
        """
        t = tables.checkpoint_calls
        leased = exists().where(tables.executions.c.id == lease[0], tables.executions.c.lease_owner == lease[1])
        statement = delete(t).where(t.c.id == row_id, t.c.status == "started", leased)
        return self._write(
            "discard a started checkpoint call",
            lambda connection, _retry: connection.execute(statement).rowcount == 1,
        )

    def mark_served(self, served: Sequence[int], run_number: int) -> None:
        """Note which run last served these calls from the store (for the timeline)."""
        if not served:
            return
        t = tables.checkpoint_calls
        statement = update(t).where(t.c.id.in_(list(served))).values(last_served_run=run_number)
        self._write("note served checkpoint calls", lambda connection, _retry: connection.execute(statement))

    def record_served_run(self, execution_id: str, served: Sequence[int]) -> int | None:
        """Record a run of a completed execution that served every call from the store, in one commit.

        The run took no lease (nothing ran): its run count grows by one and the served calls are
        marked with it, as `try_acquire_lease`, `mark_served` and `finish_execution` would do in three.
        Nothing changes when the execution is no longer completed or a live runner holds its lease.

        Args:
            execution_id: The execution.
            served: Ids of the calls the run served.

        Returns:
            The run's number, or `None` when nothing was recorded.

        Raises:
            StoreError: The database stayed unreachable for the retry budget.
        """
        e, c = tables.executions, tables.checkpoint_calls

        def change(connection: Connection, retry: bool) -> int | None:
            if retry and served:  # an earlier attempt may have committed: its marks are there
                marked = connection.execute(
                    select(e.c.run_count).where(
                        e.c.id == execution_id,
                        exists().where(c.c.id == served[0], c.c.last_served_run == e.c.run_count),
                    )
                ).scalar()
                if marked is not None:
                    return int(marked)
            now = time.time()
            run_number = connection.execute(
                update(e)
                .where(
                    e.c.id == execution_id,
                    e.c.status == "completed",
                    or_(e.c.lease_owner.is_(None), e.c.lease_expires_at_epoch_s < now),
                )
                .values(run_count=e.c.run_count + 1, updated_at_epoch_s=now)
                .returning(e.c.run_count)
            ).scalar()
            if run_number is not None and served:
                connection.execute(update(c).where(c.c.id.in_(list(served))).values(last_served_run=run_number))
            return run_number

        return self._write(f"record a served run of execution {execution_id!r}", change)

    def copy_calls(self, source_id: str, target_id: str, calls: Sequence[CallRecord]) -> None:
        """Copy call records into another execution (replay)."""
        t = tables.checkpoint_calls
        rows = [_copied_call_row(source_id, target_id, call) for call in calls]
        if rows:

            def change(connection: Connection, retry: bool) -> None:
                # One transaction: after a fault, either every row is there (done) or none is.
                if retry and connection.execute(select(t.c.id).where(t.c.execution_id == target_id)).first():
                    return
                connection.execute(insert(t), rows)

            self._write(f"copy checkpoint calls into {target_id!r}", change)

    def copy_answered_waits(self, source_id: str, target_id: str, *, created_before_epoch_s: float) -> None:
        """Copy answered waits reached before a point in time into another execution (replay)."""
        t = tables.waits
        rows = [
            _copied_wait_row(source_id, target_id, wait)
            for wait in self.list_waits(source_id, status="answered")
            if wait.created_at_epoch_s < created_before_epoch_s
        ]
        if rows:

            def change(connection: Connection, retry: bool) -> None:
                if retry and connection.execute(select(t.c.id).where(t.c.execution_id == target_id)).first():
                    return
                connection.execute(insert(t), rows)

            self._write(f"copy answered waits into {target_id!r}", change)

    def create_replay(
        self,
        execution_id: str,
        *,
        source: ExecutionRecord,
        inputs: StoredValue | None,
        calls: Sequence[CallRecord],
        waits: Sequence[WaitRecord],
        status: ExecutionStatus,
        queue: str | None = None,
    ) -> ExecutionRecord:
        """Create a replay of `source` with its copied calls and answered waits, in one transaction.

        No runner or worker ever sees the new execution without its copies (a `queued` one is
        claimable at once).

        Raises:
            StoreError: An execution with this id exists already.
        """
        now = time.time()
        values: dict[str, Any] = {
            "id": execution_id,
            "flow_name": source.flow_name,
            "entry_point": source.entry_point,
            "inputs_fingerprint": None,
            "inputs_format": inputs.format if inputs else None,
            "inputs": inputs.payload if inputs else None,
            "status": status,
            "run_count": 0,
            "replay_of": source.id,
            "cancel_requested": False,
            "created_at_epoch_s": now,
            "updated_at_epoch_s": now,
        }
        if queue is not None:
            values["queue"] = queue
        call_rows = [_copied_call_row(source.id, execution_id, call) for call in calls]
        wait_rows = [_copied_wait_row(source.id, execution_id, wait) for wait in waits]
        t = tables.executions

        def change(connection: Connection, retry: bool) -> None:
            if retry:  # the first attempt may have committed: is the row there ours?
                mine = connection.execute(
                    select(t.c.id).where(t.c.id == execution_id, t.c.created_at_epoch_s == now)
                ).first()
                if mine is not None:
                    return
            connection.execute(insert(t).values(values))
            if call_rows:
                connection.execute(insert(tables.checkpoint_calls), call_rows)
            if wait_rows:
                connection.execute(insert(tables.waits), wait_rows)

        try:
            self._write(f"create replay {execution_id!r}", change)
        except IntegrityError as error:
            raise StoreError(f"An execution with id {execution_id!r} exists already.") from error
        return self.get_execution(execution_id)

    # -- waits ----------------------------------------------------------------------------------

    def find_wait(self, execution_id: str, name: str) -> WaitRecord | None:
        """The wait of that name, or `None`."""
        t = tables.waits
        query = select(t).where(t.c.execution_id == execution_id, t.c.name == name)
        row = self._read("read a wait", lambda connection: connection.execute(query).mappings().first())
        return _wait(row) if row else None

    def list_waits(self, execution_id: str | None = None, *, status: str | None = None) -> list[WaitRecord]:
        """Waits of one execution (or all), oldest first."""
        t = tables.waits
        query = select(t).order_by(t.c.created_at_epoch_s, t.c.id)
        if execution_id is not None:
            query = query.where(t.c.execution_id == execution_id)
        if status is not None:
            query = query.where(t.c.status == status)
        return self._read(
            "list waits", lambda connection: [_wait(row) for row in connection.execute(query).mappings()]
        )

    def create_wait(
        self,
        execution_id: str,
        name: str,
        *,
        call_key: str,
        question: str,
        schema: dict[str, Any],
        details: dict[str, Any] | None,
    ) -> WaitRecord:
        """Insert a pending wait, or return the existing one of that name."""
        t = tables.waits
        statement = insert(t).values(
            execution_id=execution_id,
            name=name,
            call_key=call_key,
            question=question,
            schema=json.dumps(schema),
            details=json.dumps(details) if details else None,
            status="pending",
            created_at_epoch_s=time.time(),
        )
        with contextlib.suppress(IntegrityError):  # exists already (maybe written by an earlier attempt)
            self._write(f"record wait {name!r}", lambda connection, _retry: connection.execute(statement))
        record = self.find_wait(execution_id, name)
        if record is None:  # pragma: no cover - the row was just written
            raise StoreError(f"Wait {name!r} of execution {execution_id!r} vanished after it was written.")
        return record

    def answer_wait(
        self, execution_id: str, name: str, answer_json: str, *, actor: tuple[str, str] | None = None
    ) -> WaitRecord:
        """Store an answer for a pending wait (validation is the caller's job).

        Args:
            execution_id: The execution.
            name: The wait's name.
            answer_json: The answer as JSON text.
            actor: `(name, kind)` of who answered (`kind`: `token` or `os user`), recorded on the wait
                and in the audit trail in the same transaction.

        Raises:
            WaitNotFoundError: No such wait.
            WaitAlreadyAnsweredError: It already has an answer.
        """
        t = tables.waits
        answered_at_epoch_s = time.time()

        def change(connection: Connection, retry: bool) -> int:
            result = connection.execute(
                update(t)
                .where(t.c.execution_id == execution_id, t.c.name == name, t.c.status == "pending")
                .values(
                    status="answered",
                    answer=answer_json,
                    answered_at_epoch_s=answered_at_epoch_s,
                    answered_by=_actor_text(actor) if actor else None,
                )
            )
            if result.rowcount == 0 and retry:  # this answer was stored by an earlier attempt
                earlier = connection.execute(
                    select(t.c.id).where(
                        t.c.execution_id == execution_id,
                        t.c.name == name,
                        t.c.answered_at_epoch_s == answered_at_epoch_s,
                    )
                ).first()
                return 1 if earlier is not None else 0
            if result.rowcount == 1 and actor is not None:
                self._insert_audit(
                    connection, execution_id, "answer", actor, wait_name=name, at_epoch_s=answered_at_epoch_s
                )
            return result.rowcount

        if self._write(f"answer wait {name!r}", change) == 0:
            existing = self.find_wait(execution_id, name)
            if existing is None:
                known = [wait.name for wait in self.list_waits(execution_id)]
                raise WaitNotFoundError(execution_id, name, known)
            raise WaitAlreadyAnsweredError(execution_id, name)
        record = self.find_wait(execution_id, name)
        assert record is not None
        return record

    def refuse_answer(self, execution_id: str, name: str, problems: Sequence[str]) -> None:
        """Move a stored answer that failed validation into the refused list; the wait is pending again."""
        t = tables.waits

        def change(connection: Connection, _retry: bool) -> None:
            row = (
                connection.execute(
                    select(t.c.answer, t.c.refused_answers).where(
                        t.c.execution_id == execution_id, t.c.name == name
                    )
                )
                .mappings()
                .first()
            )
            if row is None or row["answer"] is None:  # gone, or refused already by an earlier attempt
                return
            refused = json.loads(row["refused_answers"] or "[]")
            refused.append({"answer": json.loads(row["answer"] or "null"), "problems": list(problems)})
            connection.execute(
                update(t)
                .where(and_(t.c.execution_id == execution_id, t.c.name == name))
                .values(
                    status="pending",
                    answer=None,
                    answered_at_epoch_s=None,
                    refused_answers=json.dumps(refused),
                )
            )

        self._write(f"refuse the answer of wait {name!r}", change)

    # -- audit trail ----------------------------------------------------------------------------

    @staticmethod
    def _insert_audit(
        connection: Connection,
        execution_id: str,
        action: str,
        actor: tuple[str, str],
        *,
        wait_name: str | None = None,
        details: dict[str, Any] | None = None,
        at_epoch_s: float | None = None,
    ) -> None:
        connection.execute(
            insert(tables.audit_events).values(
                execution_id=execution_id,
                action=action,
                wait_name=wait_name,
                actor=actor[0][:300],
                actor_kind=actor[1],
                details=json.dumps(details) if details else None,
                at_epoch_s=at_epoch_s if at_epoch_s is not None else time.time(),
            )
        )

    def record_audit(
        self,
        execution_id: str,
        action: str,
        actor: tuple[str, str],
        *,
        wait_name: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Add `(who, kind)` did `action` (`answer`, `resume`, `cancel`, `replay`) to an execution's trail."""
        at_epoch_s = time.time()

        def change(connection: Connection, retry: bool) -> None:
            if retry:  # an earlier attempt may have committed this event
                t = tables.audit_events
                earlier = connection.execute(
                    select(t.c.id).where(
                        t.c.execution_id == execution_id, t.c.action == action, t.c.at_epoch_s == at_epoch_s
                    )
                ).first()
                if earlier is not None:
                    return
            self._insert_audit(
                connection, execution_id, action, actor, wait_name=wait_name, details=details, at_epoch_s=at_epoch_s
            )

        self._write(f"record {action} in the audit trail", change)

    def list_audit(self, execution_id: str) -> list[AuditRecord]:
        """An execution's audit trail, oldest first."""
        t = tables.audit_events
        query = select(t).where(t.c.execution_id == execution_id).order_by(t.c.at_epoch_s, t.c.id)
        def read(connection: Connection) -> list[AuditRecord]:
            return [
                AuditRecord(
                    execution_id=row["execution_id"],
                    action=row["action"],
                    wait_name=row["wait_name"],
                    actor=row["actor"],
                    actor_kind=row["actor_kind"],
                    details=json_or_report(row["details"], "details of an audit event") or {},
                    at_epoch_s=row["at_epoch_s"],
                )
                for row in connection.execute(query).mappings()
            ]

        return self._read("read the audit trail", read)

    # -- API tokens -----------------------------------------------------------------------------

    def create_token(self, name: str, secret_sha256: str, *, created_by: str | None) -> TokenRecord:
        """Store a named token's digest.

        Raises:
            StoreError: A token of that name exists (revoked ones too: names stay in the audit trail).
        """
        now = time.time()

        def change(connection: Connection, retry: bool) -> None:
            if retry:  # an earlier attempt may have committed this token
                t = tables.api_tokens
                earlier = connection.execute(
                    select(t.c.id).where(t.c.name == name, t.c.secret_sha256 == secret_sha256)
                ).first()
                if earlier is not None:
                    return
            connection.execute(
                insert(tables.api_tokens).values(
                    name=name, secret_sha256=secret_sha256, created_at_epoch_s=now, created_by=created_by
                )
            )

        try:
            self._write(f"create token {name!r}", change)
        except IntegrityError as error:
            raise StoreError(
                f"A token named {name!r} exists already (revoked names are kept for the audit trail): "
                "choose another name."
            ) from error
        return TokenRecord(name=name, created_at_epoch_s=now, created_by=created_by, revoked_at_epoch_s=None)

    def list_tokens(self) -> list[TokenRecord]:
        """Every named token, revoked ones included, by name."""
        t = tables.api_tokens

        def read(connection: Connection) -> list[TokenRecord]:
            return [
                TokenRecord(
                    name=row["name"],
                    created_at_epoch_s=row["created_at_epoch_s"],
                    created_by=row["created_by"],
                    revoked_at_epoch_s=row["revoked_at_epoch_s"],
                )
                for row in connection.execute(select(t).order_by(t.c.name)).mappings()
            ]

        return self._read("list tokens", read)

    def revoke_token(self, name: str) -> bool:
        """Revoke a named token; `False` when no unrevoked token has that name."""
        t = tables.api_tokens

        def change(connection: Connection, _retry: bool) -> int:
            return connection.execute(
                update(t)
                .where(t.c.name == name, t.c.revoked_at_epoch_s.is_(None))
                .values(revoked_at_epoch_s=time.time())
            ).rowcount

        return self._write(f"revoke token {name!r}", change) == 1

    def token_name(self, secret_sha256: str) -> str | None:
        """The name of the unrevoked token whose secret has this SHA-256 digest."""
        t = tables.api_tokens
        query = select(t.c.name, t.c.secret_sha256).where(
            t.c.secret_sha256 == secret_sha256, t.c.revoked_at_epoch_s.is_(None)
        )
        row = self._read("look up a token", lambda connection: connection.execute(query).first())
        return row[0] if row is not None else None

    # -- metadata and artifacts (`log`, `save`, `load`) -----------------------------------------

    def merge_execution_metadata(self, execution_id: str, owner: str, metadata: dict[str, Any]) -> bool:
        """Merge `metadata` into the execution's own metadata (later keys win), if `owner` holds the lease.

        Merging by key makes the write idempotent: flow code that logs the same keys again on every
        resume (or a retry after a lost acknowledgement) leaves one value per key.

        Returns:
            Whether it was written (`False`: another runner holds the execution now).

        Raises:
            StoreError: The database stayed unreachable for the retry budget.
        """
        t = tables.executions

        def change(connection: Connection, _retry: bool) -> bool:
            row = connection.execute(
                select(t.c.metadata).where(t.c.id == execution_id, t.c.lease_owner == owner).with_for_update()
            ).first()
            if row is None:
                return False
            merged = {**(json_or_report(row[0], f"metadata of execution {execution_id!r}") or {}), **metadata}
            connection.execute(
                update(t)
                .where(t.c.id == execution_id, t.c.lease_owner == owner)
                .values(metadata=json.dumps(merged), updated_at_epoch_s=time.time())
            )
            return True

        return self._write(f"log metadata of execution {execution_id!r}", change)

    def save_artifact(
        self,
        execution_id: str,
        owner: str,
        *,
        name: str,
        save_key: str,
        call_key: str | None,
        media_type: str,
        value: StoredValue,
        run_number: int,
    ) -> int:
        """Store one version of a named artifact, idempotently per `save_key`; returns its version.

        A new `save_key` gets the next version of `name` (1, 2, ...). A `save_key` that exists already
        (the same `save` ran again: a call re-run after a crash, flow code on resume, a retry after a
        lost acknowledgement) keeps its version and gets the new value, so no version is added.

        Args:
            execution_id: The execution.
            owner: The runner's lease token: nothing is written unless it still holds the lease.
            name: The artifact's name (checked by the caller).
            save_key: SHA-256 hex of where the `save` happened in the execution.
            call_key: The checkpoint call (or scope) it was saved in; `None` at the top of the flow.
            media_type: What the value is, for previews (`text/markdown`, `image/png`...).
            value: The encoded value (inline or in the artifact store).
            run_number: The run of the execution that saved it.

        Returns:
            The version, or -1 when another runner holds the execution now (nothing written).

        Raises:
            StoreError: The database stayed unreachable for the retry budget.
        """
        a, e = tables.artifacts, tables.executions
        columns = {
            "call_key": call_key,
            "media_type": media_type,
            "value_format": value.format,
            "value": value.payload,
            "value_ref": value.reference,
            "value_size_bytes": value.size_bytes,
            "run_number": run_number,
            "created_at_epoch_s": time.time(),
        }

        def change(connection: Connection, _retry: bool) -> int:
            # FOR UPDATE (PostgreSQL) also serializes the saves of one execution: versions never collide
            leased = connection.execute(
                select(e.c.id).where(e.c.id == execution_id, e.c.lease_owner == owner).with_for_update()
            ).first()
            if leased is None:
                return -1
            existing = connection.execute(
                select(a.c.version, a.c.value_format, a.c.value, a.c.value_ref).where(
                    a.c.execution_id == execution_id, a.c.save_key == save_key
                )
            ).first()
            if existing is not None and tuple(existing[1:]) == (value.format, value.payload, value.reference):
                return int(existing[0])  # the same value saved again at the same place: nothing changes
            # a new or rewritten artifact is a change of the execution (its change marker moves)
            connection.execute(update(e).where(e.c.id == execution_id).values(updated_at_epoch_s=time.time()))
            if existing is not None:
                connection.execute(
                    update(a).where(a.c.execution_id == execution_id, a.c.save_key == save_key).values(columns)
                )
                return int(existing[0])
            latest = connection.execute(
                select(func.max(a.c.version)).where(a.c.execution_id == execution_id, a.c.name == name)
            ).scalar()
            version = int(latest or 0) + 1
            connection.execute(
                insert(a).values(
                    execution_id=execution_id, name=name, version=version, save_key=save_key, **columns
                )
            )
            return version

        return self._write(f"save artifact {name!r}", change)

    @staticmethod
    def _artifact(row: RowMapping) -> ArtifactRecord:
        if "value" in row:
            value = stored_value(row, "value")  # `value_format` is NOT NULL: always a value
            assert value is not None
        else:  # listed without the inline bytes
            value = StoredValue(row["value_format"], None, row["value_ref"], row["value_size_bytes"])
        return ArtifactRecord(
            execution_id=row["execution_id"],
            name=row["name"],
            version=row["version"],
            call_key=row["call_key"],
            media_type=row["media_type"],
            value=value,
            run_number=row["run_number"],
            created_at_epoch_s=row["created_at_epoch_s"],
        )

    def list_artifacts(self, execution_id: str, name: str | None = None) -> list[ArtifactRecord]:
        """An execution's artifacts (or one name's versions), by name, then version.

        The records carry no inline bytes (`value.payload` is `None`): read a value with `find_artifact`.
        """
        a = tables.artifacts
        columns = [column for column in a.c if column.name != "value"]
        query = select(*columns).where(a.c.execution_id == execution_id).order_by(a.c.name, a.c.version)
        if name is not None:
            query = query.where(a.c.name == name)
        return self._read(
            "list artifacts",
            lambda connection: [self._artifact(row) for row in connection.execute(query).mappings()],
        )

    def find_artifact(self, execution_id: str, name: str, version: int | None = None) -> ArtifactRecord | None:
        """One version of an artifact (default: the latest), or `None`."""
        a = tables.artifacts
        query = select(a).where(a.c.execution_id == execution_id, a.c.name == name)
        query = (
            query.where(a.c.version == version) if version is not None else query.order_by(a.c.version.desc())
        )
        row = self._read("read an artifact", lambda connection: connection.execute(query.limit(1)).mappings().first())
        return self._artifact(row) if row else None

    # -- budgets --------------------------------------------------------------------------------

    def budget_totals(self, execution_id: str) -> dict[str, Any]:
        """What an execution's model calls spent when they ran live, summed by the database (one query).

        The records summed are exactly those `kitaru_core._budgets.counts_toward_budget` counts:
        kind `model`, any status but `started` (superseded records included: they were paid once),
        neither copied into a replay (`copied_from` in their details) nor given by a person
        (`given_by`). A resume starts its budget bookkeeping from these sums instead of reading
        every record of the execution. Tokens and counts are exact; `usd` is the database's sum of
        the known costs, which may differ from adding the same floats one by one in Python in the
        last bits (the order of additions differs).

        Args:
            execution_id: The execution.

        Returns:
            `usd` (float), `input_tokens`, `output_tokens`, `model_calls` and `cost_unknown_calls`
            (ints; a call with tokens but no cost is "cost unknown"), all 0 when nothing counts; and
            `cost_unknown_models`: the model names of the cost-unknown calls as stored (`None` or
            `""` for a call without one), in the order of their first call in recording order.
        """
        t = tables.checkpoint_calls
        if self.engine.dialect.name == "sqlite":
            details = type_coerce(t.c.details, JSON)  # JSON_EXTRACT(details, '$."key"')
        else:
            details = cast(t.c.details, JSON)  # CAST(details AS JSON) ->> 'key'
        unknown_cost = and_(
            t.c.cost_usd.is_(None), or_(t.c.input_tokens.is_not(None), t.c.output_tokens.is_not(None))
        )
        # One row per model name (a handful): the sums, and where the model's first cost-unknown
        # call is in recording order (sequence, then id, as `load_calls` orders records).
        query = (
            select(
                t.c.model_name,
                func.count(),
                func.sum(t.c.input_tokens),
                func.sum(t.c.output_tokens),
                func.sum(t.c.cost_usd),
                func.sum(case((unknown_cost, 1), else_=0)),
                func.min(case((unknown_cost, t.c.sequence), else_=None)),
                func.min(case((unknown_cost, t.c.id), else_=None)),
            )
            .where(
                t.c.execution_id == execution_id,
                t.c.kind == "model",
                t.c.status != "started",
                details["copied_from"].as_string().is_(None),
                details["given_by"].as_string().is_(None),
            )
            .group_by(t.c.model_name)
        )
        rows = self._read("sum the budget spend", lambda connection: connection.execute(query).all())
        unknown_first: list[tuple[int, int, str | None]] = []
        usd = 0.0
        input_tokens = output_tokens = model_calls = cost_unknown_calls = 0
        for name, calls, inputs, outputs, cost, unknown, first_sequence, first_id in rows:
            model_calls += int(calls)
            input_tokens += int(inputs or 0)
            output_tokens += int(outputs or 0)
            usd += float(cost or 0.0)
            cost_unknown_calls += int(unknown or 0)
            if unknown:
                unknown_first.append((int(first_sequence), int(first_id), name))
        return {
            "usd": usd,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "model_calls": model_calls,
            "cost_unknown_calls": cost_unknown_calls,
            "cost_unknown_models": [name for _sequence, _id, name in sorted(unknown_first, key=lambda row: row[:2])],
        }

    # -- calls under a key prefix ---------------------------------------------------------------

    def load_calls_by_key_prefix(self, execution_id: str, key_prefix: str) -> list[CallRecord]:
        """The checkpoint calls of an execution whose key starts with `key_prefix`, in recording order.

        One query, superseded records included. The prefix becomes a key range, `key_prefix <=
        call_key < upper` with `upper` the least string above every key that starts with the
        prefix, compared by code point (SQLite's binary collation; on PostgreSQL `COLLATE "C"`,
        because a linguistic collation does not keep the keys that share a prefix together). On
        SQLite the range is read from the index `(execution_id, call_key)`, so the query costs the
        matching records, not the execution's; on PostgreSQL the index narrows it to the execution.

        Args:
            execution_id: The execution.
            key_prefix: The start of the keys to read; `""` reads every call.

        Returns:
            The matching records, ordered by sequence (then record id), as `load_calls` orders them.
        """
        t = tables.checkpoint_calls
        query = select(t).where(t.c.execution_id == execution_id).order_by(t.c.sequence, t.c.id)
        if key_prefix:
            key = t.c.call_key if self.engine.dialect.name == "sqlite" else t.c.call_key.collate("C")
            query = query.where(key >= key_prefix)
            # The least string above the prefix's keys: drop trailing U+10FFFF (no code point above
            # it), then raise the last code point by one, stepping over the surrogates (not text).
            stem = key_prefix.rstrip(chr(0x10FFFF))
            if stem:
                following = ord(stem[-1]) + 1
                following = 0xE000 if 0xD800 <= following <= 0xDFFF else following
                query = query.where(key < stem[:-1] + chr(following))
        return self._read(
            "load checkpoint calls by key prefix",
            lambda connection: [call_from_columns(row) for row in connection.execute(query).mappings()],
        )


def _actor_text(actor: tuple[str, str]) -> str:
    """`ana (token)`, `bob (os user)`: how a wait records who answered it."""
    return f"{actor[0]} ({actor[1]})"[:300]


_stores: dict[tuple[str, str, int], Store] = {}
_stores_lock = threading.Lock()


def open_store(
    url: str,
    artifacts_url: str,
    inline_limit_bytes: int,
    *,
    retry_budget_s: float = 30.0,
    sqlite_busy_timeout_s: float = 30.0,
    sqlite_synchronous: str = "full",
) -> Store:
    """A process-wide cached `Store` for these settings (in-memory SQLite is one shared database).

    The retry budget, the SQLite busy timeout and the SQLite synchronous mode of a cached store follow
    the latest call (a new busy timeout or synchronous mode applies to connections opened from then on).
    """
    key = (url, artifacts_url, inline_limit_bytes)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = Store(
                url,
                artifacts_url,
                inline_limit_bytes=inline_limit_bytes,
                retry_budget_s=retry_budget_s,
                sqlite_busy_timeout_s=sqlite_busy_timeout_s,
                sqlite_synchronous=sqlite_synchronous,
            )
            _stores[key] = store
        else:
            store.retry_budget_s = retry_budget_s
            if (store.sqlite_busy_timeout_s, store.sqlite_synchronous) != (sqlite_busy_timeout_s, sqlite_synchronous):
                store.sqlite_busy_timeout_s = sqlite_busy_timeout_s
                store.sqlite_synchronous = sqlite_synchronous
                if not _is_in_memory(url):
                    store.close()  # pooled connections carry the old busy timeout and mode
        return store


def close_stores(url: str) -> None:
    """Close and forget this process's cached stores of `url` (`open_store` opens a new one next time).

    Each holds connections (one kept for recording calls): a process that is done with a database
    (a test that drops it, a benchmark round) releases them here.
    """
    with _stores_lock:
        stores = [_stores.pop(key) for key in [key for key in _stores if key[0] == url]]
    for store in stores:
        store.close()


def _copied_call_row(source_id: str, target_id: str, call: CallRecord) -> dict[str, Any]:
    """The row of `call` copied into execution `target_id` (replay)."""
    return {
        "execution_id": target_id,
        "call_key": call.call_key,
        "name": call.name,
        "kind": call.kind,
        "sequence": call.sequence,
        "status": call.status,
        "fingerprint": call.fingerprint,
        "output_format": call.output.format if call.output else None,
        "output": call.output.payload if call.output else None,
        "output_ref": call.output.reference if call.output else None,
        "output_size_bytes": call.output.size_bytes if call.output else None,
        "error_type": call.error_type,
        "error_message": call.error_message,
        "error_traceback": call.error_traceback,
        "attempts": call.attempts,
        "run_number": 0,
        "started_at_epoch_s": call.started_at_epoch_s,
        "ended_at_epoch_s": call.ended_at_epoch_s,
        "model_name": call.model_name,
        "input_tokens": call.input_tokens,
        "output_tokens": call.output_tokens,
        "cost_usd": call.cost_usd,
        "details": json.dumps({**call.details, "copied_from": source_id}),
        "metadata": json.dumps(call.metadata) if call.metadata else None,
    }


def _copied_wait_row(source_id: str, target_id: str, wait: WaitRecord) -> dict[str, Any]:
    """The row of the answered `wait` copied into execution `target_id` (replay)."""
    return {
        "execution_id": target_id,
        "name": wait.name,
        "call_key": wait.call_key,
        "question": wait.question,
        "schema": json.dumps(wait.schema),
        "details": json.dumps({**wait.details, "copied_from": source_id}),
        "status": "answered",
        "answer": json.dumps(wait.answer),
        "created_at_epoch_s": wait.created_at_epoch_s,
        "answered_at_epoch_s": wait.answered_at_epoch_s,
        "answered_by": wait.answered_by,
    }
