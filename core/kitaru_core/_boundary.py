"""The execution boundary: finding or creating an execution, and one run of it (lease, outcome)."""

from __future__ import annotations

import contextvars
import functools
import logging
import traceback
import uuid
from collections.abc import Callable
from dataclasses import replace as replace_fields
from typing import TYPE_CHECKING, Any, TypeVar

from kitaru_core import _config, _leases
from kitaru_core._context import ExecutionContext, _call, _current, _qualified_name, _scope
from kitaru_core._ids import check_execution_id
from kitaru_core._leases import _active_owners, acquire, lease_clock_s, lease_is_live
from kitaru_core._records import ExecutionRecord, StoredValue
from kitaru_core._serialization import Codec, fingerprint
from kitaru_core._signals import CancelExecution, LeaseLost, StopRun, SuspendExecution, find_signal
from kitaru_core.errors import (
    ConfigurationError,
    ExecutionCancelledError,
    ExecutionWaitingError,
    LeaseLostError,
    PendingWait,
    StoreError,
)

if TYPE_CHECKING:
    from kitaru_core._store import Store

T = TypeVar("T")
logger = logging.getLogger(__name__)


# -- the execution boundary ------------------------------------------------------------------------


def _new_execution_id() -> str:
    return uuid.uuid4().hex[:16]


def get_store() -> Store:
    """The store the current settings point at (opened once per process and settings)."""
    from kitaru_core._store import open_store

    settings = _config.current_settings()
    return open_store(
        settings.resolved_store_url(),
        settings.resolved_artifacts_url(),
        settings.inline_limit_bytes,
        retry_budget_s=settings.store_retry_budget_s,
        sqlite_busy_timeout_s=settings.sqlite_busy_timeout_s,
        sqlite_synchronous=settings.sqlite_synchronous,
    )


def open_or_find(
    execution_id: str | None,
    *,
    flow_name: str,
    entry_point: str | None,
    inputs: Any,
    inputs_value: StoredValue | None,
    fresh: bool,
    replay_of: str | None = None,
    queue: str | None = None,
    store: Store | None = None,
) -> tuple[Store, ExecutionRecord]:
    """Find the execution to run (explicit id, or the unfinished one with the same inputs), or create it.

    With `queue` a new execution is created `queued` in that worker queue (`Flow.submit`).
    """
    if fresh and execution_id is not None:
        raise ConfigurationError(
            f"fresh=True starts a new execution with a generated id; it cannot be combined with "
            f"execution_id={execution_id!r}. Pass a new id instead."
        )
    if execution_id is not None:
        check_execution_id(execution_id)
    store = store or get_store()
    inputs_fingerprint = fingerprint(inputs) if inputs is not None else None
    if execution_id is not None:
        record = store.find_execution(execution_id)
        if record is not None:
            if record.flow_name != flow_name:
                raise ConfigurationError(
                    f"Execution id {execution_id!r} belongs to {record.flow_name!r}, not {flow_name!r}. "
                    "Execution ids are idempotency keys: use another id for another flow."
                )
            return store, record
    elif not fresh and inputs_fingerprint is not None:
        record = store.find_resumable(flow_name, inputs_fingerprint)
        if record is not None:
            return store, record
    record = store.create_execution(
        execution_id or _new_execution_id(),
        flow_name=flow_name,
        entry_point=entry_point,
        inputs_fingerprint=inputs_fingerprint,
        inputs=inputs_value,
        replay_of=replay_of,
        status="running" if queue is None else "queued",
        queue=queue,
    )
    return store, record


class ExecutionRun:
    """One run of an execution in this process: lease, context variables, and outcome recording."""

    def __init__(self, store: Store, execution_id: str, *, resumable_by_cli: bool) -> None:
        self.store = store
        self.execution_id = execution_id
        self.resumable_by_cli = resumable_by_cli
        self.context: ExecutionContext | None = None
        self._tokens: tuple[contextvars.Token[Any], ...] = ()
        self.output: StoredValue | None = None

    def __enter__(self) -> ExecutionContext:
        context = self.start()
        self.bind()
        return context

    def __exit__(self, error_type: Any, error: BaseException | None, _traceback: Any) -> None:
        self.unbind()
        self.finish(error)

    async def __aenter__(self) -> ExecutionContext:
        """`__enter__` for async code: the lease and the loading run on the execution's I/O lane."""
        from kitaru_core._async_io import Lane, adopt_lane

        lane = Lane(self.execution_id)
        try:
            context = await lane.run(self.start)
        except BaseException:
            lane.close()
            raise
        adopt_lane(context, lane)
        self.bind()
        return context

    async def __aexit__(self, error_type: Any, error: BaseException | None, _traceback: Any) -> None:
        """`__exit__` for async code: the outcome is recorded on the execution's I/O lane."""
        from kitaru_core._async_io import off_loop, release_lane

        context = self.context
        assert context is not None
        self.unbind()
        try:
            await off_loop(context, self.finish, error)
        finally:
            release_lane(context)

    def start(self) -> ExecutionContext:
        """Take the lease, load the execution's calls and waits, start the heartbeat (blocking I/O)."""
        settings = _config.current_settings()
        before = self.store.get_execution(self.execution_id)
        completed_before = before.status == "completed"
        if (
            completed_before
            and not before.cancel_requested
            and not lease_is_live(before)
            and _leases.lease_handoff is None
        ):
            # Served again: every call is expected from the store, so no lease (and no commit) is
            # taken now. The first write or checkpoint body takes it (fencing holds); the served
            # run is recorded with one commit at the end (`Store.record_served_run`).
            context = ExecutionContext(
                self.store, replace_fields(before, run_count=before.run_count + 1), "", settings
            )
            context.lease_deferred = True
        else:
            sent_at_s = lease_clock_s()  # before the lease is written: the lease lasts at least D from here
            record, owner = acquire(self.store, self.execution_id, settings)
            context = ExecutionContext(self.store, record, owner, settings, lease_confirmed_at_s=sent_at_s)
            _active_owners.add(owner)
            context.start_heartbeat()
        context.served_completed = completed_before
        self.context = context
        return context

    def bind(self) -> None:
        """Make the started run the current execution of this context (at the top scope)."""
        self._tokens = (_current.set(self.context), _scope.set(""), _call.set(None))

    def unbind(self) -> None:
        """Undo `bind`."""
        _current.reset(self._tokens[0])
        _scope.reset(self._tokens[1])
        _call.reset(self._tokens[2])

    def finish(self, error: BaseException | None) -> None:
        """Stop the heartbeat and record the run's outcome (blocking I/O); raises the caller's error.

        Raises:
            ExecutionWaitingError: The run stopped at a wait.
            ExecutionCancelledError: The execution was cancelled.
            LeaseLostError: Another runner took the execution over.
        """
        context = self.context
        assert context is not None
        if context.lease_deferred:
            if error is None:  # nothing was written: one commit records the served run
                try:
                    self.store.record_served_run(self.execution_id, context.take_served())
                except StoreError as store_error:
                    logger.warning("kitaru: could not record the served run of %s: %s", self.execution_id, store_error)
                return
            try:  # the run ends otherwise than completed: record that as any run does, under the lease
                context.take_deferred_lease()
            except Exception as lease_error:
                logger.warning("kitaru: could not record the outcome of %s: %s", self.execution_id, lease_error)
                return
        context.stop_heartbeat()
        _active_owners.discard(context.owner)
        context.flush_served()
        signal = find_signal(error) if error is not None else None
        owner = context.owner
        if error is None:
            self.store.finish_execution(self.execution_id, owner, status="completed", output=self.output)
            return
        if isinstance(signal, SuspendExecution):
            self.store.finish_execution(self.execution_id, owner, status="waiting")
            pending = [
                PendingWait(name=wait.name, question=wait.question, schema=wait.schema)
                for wait in self.store.list_waits(self.execution_id, status="pending")
            ]
            raise ExecutionWaitingError(self.execution_id, pending, self.resumable_by_cli) from None
        if isinstance(signal, CancelExecution):
            reason: str | None = getattr(signal, "reason", None)  # a budget wait answered `stop`
            self.store.finish_execution(
                self.execution_id,
                owner,
                status="cancelled",
                error=(_qualified_name(type(signal)), reason, "") if reason else None,
            )
            raise ExecutionCancelledError(self.execution_id, reason) from None
        if isinstance(signal, LeaseLost):
            raise LeaseLostError(self.execution_id) from None
        if isinstance(signal, StopRun):  # a worker is shutting down: another one continues at once
            self.store.finish_execution(self.execution_id, owner, status="queued")
            return
        self.store.finish_execution(
            self.execution_id,
            owner,
            status="failed",
            error=(
                _qualified_name(type(error)),
                str(error),
                "".join(traceback.format_exception(error)),
            ),
        )


def decode_stored(store: Store, value: StoredValue | None, codec: Codec) -> Any:
    """Load a stored value (inline or artifact) through `codec`; `None` stays `None`."""
    if value is None:
        return None
    return codec.decode(value.format, store.load_value(value))


def copy_context_run(function: Callable[..., T]) -> Callable[..., T]:
    """Wrap `function` so a worker thread runs it in a copy of the caller's context (execution, scope)."""
    context = contextvars.copy_context()

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> T:
        return context.copy().run(function, *args, **kwargs)

    return run
