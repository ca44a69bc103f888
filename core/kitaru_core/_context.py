"""The execution context: the run's state in this process, its context variables, scopes and keys."""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
import traceback
from collections.abc import Callable, Generator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from kitaru_core import _config
from kitaru_core._call_index import StoredCalls
from kitaru_core._ids import check_wait_name, fit_name
from kitaru_core._leases import _active_owners, acquire, lease_clock_s
from kitaru_core._records import CallRecord, ExecutionRecord, StoredValue, WaitRecord
from kitaru_core._signals import CancelExecution, LeaseLost, StopRun, _stop_requested
from kitaru_core.errors import ConfigurationError, StoreError

if TYPE_CHECKING:
    from kitaru_core._checkpoint_calls import CallUsage
    from kitaru_core._store import Store

logger = logging.getLogger(__name__)

# -- the execution context -------------------------------------------------------------------------

_current: contextvars.ContextVar[ExecutionContext | None] = contextvars.ContextVar(
    "kitaru_execution", default=None
)
_scope: contextvars.ContextVar[str] = contextvars.ContextVar("kitaru_scope", default="")
_call: contextvars.ContextVar[str | None] = contextvars.ContextVar("kitaru_call", default=None)


class ExecutionContext:
    """State of one run of an execution in this process."""

    def __init__(
        self,
        store: Store,
        record: ExecutionRecord,
        owner: str,
        settings: _config.Settings,
        *,
        lease_confirmed_at_s: float | None = None,
    ) -> None:
        self.store = store
        self.execution_id = record.id
        self.flow_name = record.flow_name
        self.entry_point = record.entry_point
        self._owner = owner
        self.lease_deferred = False
        """A served re-run of a completed execution: no lease yet; the first write takes it (`owner`)."""
        self.settings = settings
        self.run_number = record.run_count
        self.served_completed = False
        """Whether this run entered an execution that had completed: every call should be served."""
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str], int] = {}
        # The stored calls: an index in memory, full records paged in when served (bounded memory).
        self._calls = StoredCalls(store, record.id)
        self._sequence = self._calls.max_sequence
        self._served: list[int] = []
        self._waits: dict[str, WaitRecord] = {wait.name: wait for wait in store.list_waits(record.id)}
        self._wait_names: dict[str, int] = {}
        self.call_metadata: dict[str, dict[str, Any]] = {}
        """What `log()` attached to calls running now, by call key; written with each call's record."""
        self.save_counts: dict[tuple[str, str], int] = {}
        """How many `save(name)` ran under each scope in this run, by `(scope, name)` (see `_artifacts`)."""
        self.budget_state: Any = None
        """The budget bookkeeping of this run (`kitaru_core._budgets`), made at the first model call."""
        self.cancel_requested = record.cancel_requested
        self.lease_lost = False
        # `lease_clock_s()` read just before the last write that confirmed the lease was sent: the
        # lease lasts at least until this + lease_duration_s (see `ensure_lease`).
        self.lease_confirmed_at_s = lease_clock_s() if lease_confirmed_at_s is None else lease_confirmed_at_s
        self.lease_confirmations = 0  # renewals made by `ensure_lease` (the heartbeat's are not counted)
        self._confirm_lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(
            target=self._beat, name=f"kitaru-heartbeat-{record.id}", daemon=True
        )

    # lease ------------------------------------------------------------------------------------------

    @property
    def owner(self) -> str:
        """This run's lease token; a run whose lease was deferred takes the lease here, before any write."""
        if self.lease_deferred:
            self.take_deferred_lease()
        return self._owner

    def take_deferred_lease(self) -> None:
        """Take the lease of a served re-run of a completed execution, before its first write or body.

        Raises:
            ExecutionLockedError: A live runner holds the execution now.
            ExecutionCancelledError: The execution was cancelled meanwhile.
        """
        with self._confirm_lock:
            if not self.lease_deferred:
                return
            sent_at_s = lease_clock_s()
            record, owner = acquire(self.store, self.execution_id, self.settings)
            self._owner, self.run_number = owner, record.run_count
            self.lease_confirmed_at_s = sent_at_s
            self.lease_deferred = False
        _active_owners.add(owner)
        self.start_heartbeat()

    def start_heartbeat(self) -> None:
        """Start renewing the lease every third of its duration."""
        self._heartbeat.start()

    def stop_heartbeat(self) -> None:
        """Stop renewing the lease."""
        self._stop.set()
        if self._heartbeat.is_alive():
            self._heartbeat.join(timeout=5)

    def _note_confirmed(self, sent_at_s: float) -> None:
        with self._confirm_lock:
            self.lease_confirmed_at_s = max(self.lease_confirmed_at_s, sent_at_s)

    def _beat(self) -> None:
        """Renew the lease every third of its duration; stop the runner if it cannot for a whole duration.

        A failed renewal (the store unreachable) is retried within what is left of the lease; when
        a whole lease duration has passed since the last confirmed renewal, another runner may take
        the execution over, so this runner is stopped (`lease_lost`) before its next checkpoint call.
        """
        duration_s = self.settings.lease_duration_s
        interval_s = max(0.05, duration_s / 3)
        pause_s = interval_s
        while not self._stop.wait(pause_s):
            pause_s = interval_s
            sent_at_s = lease_clock_s()
            remaining_s = duration_s - (sent_at_s - self.lease_confirmed_at_s)
            try:
                if remaining_s <= 0:
                    raise StoreError(f"no renewal confirmed for {duration_s:g} s (the lease duration)")
                still_owner, cancel = self.store.renew_lease(
                    self.execution_id,
                    self.owner,
                    duration_s,
                    retry_budget_s=min(remaining_s, self.store.retry_budget_s),
                )
            except Exception as error:
                if lease_clock_s() - self.lease_confirmed_at_s >= duration_s:
                    logger.error(
                        "kitaru: could not renew the lease of execution %s within its %g s duration; "
                        "this runner stops before its next checkpoint call: %s",
                        self.execution_id,
                        duration_s,
                        error,
                    )
                    self.lease_lost = True
                    return
                logger.warning("kitaru: heartbeat of %s failed, retrying: %s", self.execution_id, error)
                pause_s = min(interval_s, 0.05)
                continue
            if not still_owner:
                self.lease_lost = True
                return
            self._note_confirmed(sent_at_s)
            self.cancel_requested = self.cancel_requested or cancel

    def ensure_lease(self) -> None:
        """Fencing: make sure this runner holds the lease before a checkpoint body starts.

        The rule: the lease was last confirmed by a write sent at clock reading `c`
        (`lease_confirmed_at_s`, CLOCK_BOOTTIME, which keeps counting while the process is stopped),
        so it lasts at least until `c + D` (D = `lease_duration_s`). While less than `D / 2` has
        passed since `c`, at least half a lease remains and the body starts without asking the store;
        the heartbeat (every `D / 3`) keeps this the normal case. Otherwise (the process was paused,
        the heartbeat stalled or failed) the lease is confirmed first by a compare-and-set renewal;
        if another runner owns the execution now, `LeaseLost` is raised and the body does not start.
        A body therefore starts only with at least `D / 2` of lease ahead of it, by the holder.

        Raises:
            LeaseLost: Another runner holds the execution (not an `Exception`).
            CancelExecution: The execution was cancelled (not an `Exception`).
            StoreError: The store stayed unreachable for the retry budget (the run fails; it resumes later).
        """
        self.check_alive()
        if self.lease_deferred:
            self.take_deferred_lease()
        self.body_starts(_call.get())
        duration_s = self.settings.lease_duration_s
        if lease_clock_s() - self.lease_confirmed_at_s < duration_s / 2:
            return
        for _ in range(3):
            sent_at_s = lease_clock_s()
            still_owner, cancel = self.store.renew_lease(self.execution_id, self.owner, duration_s)
            self.lease_confirmations += 1
            if not still_owner:
                self.lease_lost = True
                raise LeaseLost(self.execution_id)
            self._note_confirmed(sent_at_s)
            self.cancel_requested = self.cancel_requested or cancel
            if lease_clock_s() - sent_at_s < duration_s / 2:  # the renewal itself was quick enough
                break
        else:
            self.lease_lost = True  # the store answers too slowly to keep half a lease ahead
        self.check_alive()

    def body_starts(self, call_key: str | None) -> None:
        """A checkpoint body (first attempt or a retry) starts: its `save`s count from the first again.

        So the saves of a retried attempt land on the versions of the attempt before it instead of
        adding versions (`_artifacts.save`), as they do when a call runs again after a crash.
        """
        if call_key is None or not self.save_counts:  # the usual case: nothing saved in this run
            return
        with self._lock:
            for counter in [c for c in self.save_counts if c[0] == call_key or c[0].startswith(call_key + "/")]:
                del self.save_counts[counter]

    def merge_call_metadata(self, call_key: str, metadata: dict[str, Any], check: Callable[[str], None]) -> None:
        """Merge `metadata` into what `log()` attached to a running call (later keys win).

        `check` gets the merged JSON text first and may refuse it (raise); nothing changes then.
        """
        with self._lock:
            merged = {**self.call_metadata.get(call_key, {}), **metadata}
            check(json.dumps(merged))
            self.call_metadata[call_key] = merged

    def next_save(self, scope: str, name: str) -> int:
        """The occurrence (0, 1, ...) of this `save(name)` under `scope` in this run or attempt."""
        with self._lock:
            occurrence = self.save_counts.get((scope, name), 0)
            self.save_counts[(scope, name)] = occurrence + 1
        return occurrence

    def take_call_metadata(self, call_key: str) -> str | None:
        """The JSON text of what `log()` attached to a call so far (then forgotten), or `None`."""
        with self._lock:
            metadata = self.call_metadata.pop(call_key, None)
        return json.dumps(metadata) if metadata else None

    def check_alive(self) -> None:
        """Raise the runtime signal if the execution was cancelled or its lease was lost."""
        if self.lease_lost:
            raise LeaseLost(self.execution_id)
        if self.cancel_requested:
            raise CancelExecution(self.execution_id)
        if _stop_requested.is_set():
            raise StopRun(self.execution_id)

    # keys -------------------------------------------------------------------------------------------

    def next_key(self, name: str, discriminator: str | None) -> str:
        """The stable key of the next call of `name` under the current scope.

        Without a discriminator it is the occurrence count of `name` here (`name:0`, `name:1`...).
        A caller-supplied discriminator is used as given; if it repeats under the same scope and
        name (a model re-sending a tool call id after a retry), the repeat gets `#2`, `#3`...
        """
        parent = _scope.get()
        counter = (parent, name) if discriminator is None else (parent, f"{name}:{discriminator}")
        with self._lock:
            occurrence = self._counters.get(counter, 0)
            self._counters[counter] = occurrence + 1
        if discriminator is None:
            discriminator = str(occurrence)
        elif occurrence:
            discriminator = f"{discriminator}#{occurrence + 1}"
        return f"{parent}/{name}:{discriminator}" if parent else f"{name}:{discriminator}"

    def stored_call(self, key: str) -> CallRecord | None:
        """The live (not superseded) record of `key`, if any."""
        return self._calls.get(key)

    def note_served(self, record: CallRecord) -> None:
        """Remember that `record` was served from the store in this run."""
        with self._lock:
            self._served.append(record.id)

    def take_served(self) -> list[int]:
        """The ids of the calls this run served from the store and has not written yet (then forgotten)."""
        with self._lock:
            served, self._served = self._served, []
        return served

    def flush_served(self) -> None:
        """Write which calls this run served from the store."""
        served = self.take_served()
        try:
            self.store.mark_served(served, self.run_number)
        except StoreError as error:
            logger.warning("kitaru: could not record served calls of %s: %s", self.execution_id, error)

    def record(
        self,
        *,
        key: str,
        name: str,
        kind: str,
        status: str,
        fingerprint_: str | None,
        value: StoredValue | None,
        error: BaseException | None,
        attempts: int,
        started_at_epoch_s: float,
        usage: CallUsage | None,
        details: dict[str, Any] | None,
        supersede: CallRecord | None,
        replace: int | None = None,
    ) -> int:
        """Commit one checkpoint call and return its record's id; raises `LeaseLost` if another runner owns the execution now.

        `replace` is the id of this run's `started` record of the call (`on_interrupted="ask"/"fail"`):
        it is updated in place to the outcome instead of a new record being inserted.
        """
        lease = (self.execution_id, self.owner)  # first: a deferred lease is taken here (sets `run_number`)
        with self._lock:
            self._sequence += 1
            sequence = self._sequence
        ended_at_epoch_s = time.time()
        # Only the columns that have a value: the others are NULL (the store's insert binds fewer).
        values: dict[str, Any] = {
            "execution_id": self.execution_id,
            "call_key": key,
            "name": name,
            "kind": kind,
            "sequence": sequence,
            "status": status,
            "attempts": attempts,
            "run_number": self.run_number,
            "started_at_epoch_s": started_at_epoch_s,
            "ended_at_epoch_s": ended_at_epoch_s,
        }
        if fingerprint_ is not None:
            values["fingerprint"] = fingerprint_
        if value is not None:
            values["output_format"] = value.format
            values["output_size_bytes"] = value.size_bytes
            if value.payload is not None:
                values["output"] = value.payload
            if value.reference is not None:
                values["output_ref"] = value.reference
        if error is not None:
            values["error_type"] = _qualified_name(type(error))
            values["error_message"] = str(error)
            values["error_traceback"] = "".join(traceback.format_exception(error))
        if usage is not None:
            values.update(
                model_name=usage.model_name,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost_usd=usage.cost_usd,
            )
        if details:
            values["details"] = json.dumps(details, default=str)
        metadata = self.take_call_metadata(key) if status != "started" and self.call_metadata else None
        if metadata is not None:
            values["metadata"] = metadata
        if replace is not None:
            row_id = replace if self.store.finish_started_call(replace, values, lease=lease) else -1
        else:
            previous = self._calls.get(key)
            supersede_ids = [supersede.id] if supersede is not None else []
            if (
                previous is not None
                and previous.status in ("failed", "started")
                and previous.id not in supersede_ids
            ):  # a failed call, or an attempt interrupted in an earlier run
                supersede_ids.append(previous.id)
            row_id = self.store.record_call(values, supersede_ids=supersede_ids, lease=lease)
        if row_id < 0:
            self.lease_lost = True
            raise LeaseLost(self.execution_id)
        self._calls.put(key, row_id, sequence)
        return row_id

    def discard_started(self, call_key: str, row_id: int) -> None:
        """Forget this run's `started` record of a call whose body stopped at a wait (it runs again on resume)."""
        if self.store.discard_started_call(row_id, lease=(self.execution_id, self.owner)):
            self._calls.discard(call_key, row_id)

    # waits ------------------------------------------------------------------------------------------

    def wait_name(self, requested: str | None) -> str:
        """A unique, run-stable wait name: `requested` (suffixed `-2`, `-3` on repeats) or `wait-N`."""
        if requested is not None:
            check_wait_name(requested)
        base = requested or "wait"
        with self._lock:
            count = self._wait_names.get(base, 0) + 1
            self._wait_names[base] = count
        if requested is None:
            return f"wait-{count}"
        return requested if count == 1 else fit_name(f"{requested}-{count}")

    def cached_wait(self, name: str) -> WaitRecord | None:
        """The wait as loaded at the start of this run (or created since)."""
        return self._waits.get(name)

    def remember_wait(self, record: WaitRecord) -> None:
        """Keep a fresh copy of a wait record."""
        self._waits[record.name] = record


def enter_scope(key: str) -> contextvars.Token[str]:
    """Make `key` the current scope (waits asked now are shown with it); undo with `leave_scope`."""
    return _scope.set(key)


def leave_scope(token: contextvars.Token[str]) -> None:
    """Undo `enter_scope`."""
    _scope.reset(token)


def current_execution() -> ExecutionContext | None:
    """The execution running in this context, or `None` outside any execution."""
    return _current.get()


def current_call_key() -> str | None:
    """The key of the checkpoint call whose body runs in this context, or `None` outside any call."""
    return _call.get()


def current_scope() -> str:
    """The key the next checkpoint call is nested under here (`""` at the top of an execution)."""
    return _scope.get()


def idempotency_key() -> str:
    """A stable idempotency key for the checkpoint call running now: `execution id/call key`.

    Pass it to external APIs (payments, emails, tickets) so a call that runs again after a crash
    does not act twice. In the execution id `%` becomes `%25` and `/` becomes `%2F`, so the first
    `/` always ends it and no two (execution, call) pairs share a key (`urllib.parse.unquote` of
    the part before the first `/` gives the id back): `ticket-42/charge:0` for an ordinary id,
    `a%2Fb/c:0` for the id `a/b`. Call keys can be long (nested scopes, tool-call ids); an API
    that limits its key length can be given a SHA-256 of it.

    Raises:
        ConfigurationError: Called outside a checkpoint call of an execution.
    """
    context = _current.get()
    key = _call.get()
    if context is None or key is None:
        raise ConfigurationError("idempotency_key() works only inside a checkpoint call of an execution.")
    encoded_id = context.execution_id.replace("%", "%25").replace("/", "%2F")
    return f"{encoded_id}/{key}"


@contextmanager
def scope(name: str, discriminator: str | None = None) -> Generator[str | None]:
    """Group the checkpoint calls made inside under a named, stable sub-key.

    Outside an execution it does nothing and yields `None`. Adapters use it to keep one agent
    run's calls apart from another's inside the same flow.

    Args:
        name: The scope's name, e.g. `agent:support`.
        discriminator: A stable discriminator; default: the occurrence count of `name` here.

    Yields:
        The scope's key, or `None` outside an execution.
    """
    context = _current.get()
    if context is None:
        yield None
        return
    key = context.next_key(name, discriminator)
    token = _scope.set(key)
    try:
        yield key
    finally:
        _scope.reset(token)


def _qualified_name(cls: type[BaseException]) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
