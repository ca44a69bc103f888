"""The running side of an execution: lease and heartbeat, checkpoint calls, waits, and its boundary."""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import random
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from dataclasses import replace as replace_fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from kitaru_core import _config
from kitaru_core._call_index import StoredCalls
from kitaru_core._ids import check_execution_id, check_wait_name, fit_name
from kitaru_core._records import CallRecord, ExecutionRecord, StoredValue, WaitRecord
from kitaru_core._serialization import Codec, JsonCodec, fingerprint
from kitaru_core.errors import (
    ConfigurationError,
    DivergenceError,
    ExecutionCancelledError,
    ExecutionLockedError,
    ExecutionWaitingError,
    InterruptedCallError,
    LeaseLostError,
    PendingWait,
    SerializationError,
    StoreError,
)

if TYPE_CHECKING:
    from kitaru_core._store import Store

T = TypeVar("T")
Kind = Literal["model", "tool", "user", "mcp"]
OnDivergence = Literal["rerun", "error"]
OnInterrupted = Literal["retry", "ask", "fail"]
"""What a later run does with a checkpoint call whose runner stopped inside its body: `"retry"` runs it
again (the default), `"ask"` stops at a durable wait for a person, `"fail"` fails the execution until
somebody answers that wait (see `run_checkpoint`)."""

logger = logging.getLogger(__name__)
_UNSET: Any = object()


def _read_first_line(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.readline().strip() or None
    except OSError:
        return None


def _host_id() -> str:
    """This host's identity for leases: Linux boot id + pid namespace, else `host:<host name>`.

    The boot id changes at every boot and differs between machines; the pid namespace tells apart
    containers that share a kernel (and perhaps a host name). Pids are only comparable within one
    host id.
    """
    boot_id = _read_first_line("/proc/sys/kernel/random/boot_id")
    if boot_id is None:
        return f"host:{socket.gethostname()}"
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # e.g. "pid:[4026531836]"
    except OSError:
        namespace = "pid:?"
    return f"boot:{boot_id}/{namespace}"


def process_start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (`/proc/<pid>/stat` field 22), or `None`.

    Together with the pid it names one process for the life of a boot: a reused pid has another
    start time. `None` where `/proc` is unavailable (macOS) or the process is gone.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return int(fields[19])  # fields[0] is field 3 (state), so field 22 is fields[19]
    except (OSError, IndexError, ValueError):
        return None


_HOST = socket.gethostname()
HOST_ID = _host_id()
# Lease bookkeeping uses a clock that never jumps and keeps counting while the process is stopped
# (SIGSTOP) or the machine sleeps: CLOCK_BOOTTIME on Linux, the monotonic clock elsewhere.
_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def lease_clock_s() -> float:
    """Seconds on the clock used for local lease bookkeeping (CLOCK_BOOTTIME, else monotonic)."""
    if _BOOTTIME is not None:
        return time.clock_gettime(_BOOTTIME)
    return time.monotonic()


# -- control-flow signals: BaseException so `except Exception` in agent code cannot swallow them ----


class _Signal(BaseException):
    def __init__(self, execution_id: str) -> None:
        super().__init__(execution_id)
        self.execution_id = execution_id


class SuspendExecution(_Signal):
    """Raised by `wait()` to stop the execution until an answer arrives (not an `Exception`)."""


class CancelExecution(_Signal):
    """Raised at the next checkpoint call of an execution that was cancelled (not an `Exception`)."""


class LeaseLost(_Signal):
    """Raised when another runner took the execution over (not an `Exception`)."""


class StopRun(_Signal):
    """Raised at the next checkpoint call after `request_stop()` (a worker shutting down; not an `Exception`).

    The run releases its lease and the execution becomes `queued` again, so a worker continues it.
    """


_stop_requested = threading.Event()
lease_handoff: str | None = None
"""The lease owner token a worker claimed an execution with; its child process takes that lease over."""


def request_stop() -> None:
    """Make runs in this process stop before their next checkpoint body (safe in a signal handler).

    The call running now finishes and is committed; the next one raises `StopRun` instead of
    starting, and the run releases its lease with the execution `queued` (see `ExecutionRun`).
    """
    _stop_requested.set()


def stop_requested() -> bool:
    """Whether `request_stop()` was called in this process."""
    return _stop_requested.is_set()


def find_signal(error: BaseException) -> _Signal | None:
    """The runtime signal in `error`, looking inside exception groups and causes."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, _Signal):
            return current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)  # pyright: ignore[reportUnknownMemberType]
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
    return None


# -- policies and usage ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """When a failing checkpoint call runs again, within one run of the execution.

    The delay after failed attempt `n` is `initial_delay_s * backoff_factor ** (n - 1)`, capped at
    `max_delay_s`; with `jitter` it is then drawn uniformly from `[delay * (1 - jitter), delay]`, so
    many clients failing together do not retry in step. A server-given delay (an HTTP `Retry-After`,
    read by `retry_after_s`) replaces that delay as it is, without jitter; when it is longer than
    `max_delay_s` the call is not retried (retrying sooner than the server asks would fail again).

    Attributes:
        max_attempts: Total attempts including the first (1 = no retry).
        initial_delay_s: Seconds before the second attempt.
        backoff_factor: Each further delay is the previous one times this.
        max_delay_s: Upper bound of one delay, in seconds.
        retry_on: Exception types that are retried; others fail at once.
        jitter: Fraction of each backoff delay that is random, from 0.0 (none, the default) to 1.0
            (anywhere between 0 and the delay).
        retry_after_s: Reads a server-given delay in seconds from an error, or `None` when it has
            none. Default: the error's `retry_after_s` attribute when it is a number >= 0.
        max_elapsed_s: Give up once the attempts and delays so far plus the next delay would take
            longer than this many seconds since the first attempt; `None`: no time budget.
    """

    max_attempts: int = 1
    initial_delay_s: float = 1.0
    backoff_factor: float = 2.0
    max_delay_s: float = 60.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    jitter: float = 0.0
    retry_after_s: Callable[[BaseException], float | None] | None = None
    max_elapsed_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}.")
        if self.initial_delay_s < 0 or self.max_delay_s < 0 or self.backoff_factor < 1:
            raise ConfigurationError("RetryPolicy delays must be >= 0 seconds and backoff_factor >= 1.")
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigurationError(f"RetryPolicy.jitter must be between 0.0 and 1.0, got {self.jitter}.")
        if self.max_elapsed_s is not None and self.max_elapsed_s < 0:
            raise ConfigurationError(
                f"RetryPolicy.max_elapsed_s must be >= 0 seconds or None, got {self.max_elapsed_s}."
            )

    def delay_s(self, failed_attempt: int) -> float:
        """Seconds to sleep after attempt number `failed_attempt` (1-based) failed, jitter applied."""
        delay_s = min(self.max_delay_s, self.initial_delay_s * self.backoff_factor ** (failed_attempt - 1))
        if self.jitter:
            delay_s *= 1.0 - self.jitter * random.random()
        return delay_s

    def should_retry(self, error: BaseException, failed_attempt: int) -> bool:
        """Whether attempt `failed_attempt + 1` should run after `error`."""
        return failed_attempt < self.max_attempts and isinstance(error, self.retry_on)

    def server_delay_s(self, error: BaseException) -> float | None:
        """The delay the server asked for in `error` (seconds), or `None`."""
        if self.retry_after_s is not None:
            return self.retry_after_s(error)
        value = getattr(error, "retry_after_s", None)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
        return None

    def next_delay_s(self, error: BaseException, failed_attempt: int, elapsed_s: float) -> float | None:
        """Seconds to wait before attempt `failed_attempt + 1`, or `None` when the call fails now.

        Args:
            error: What attempt `failed_attempt` raised.
            failed_attempt: The number of the attempt that failed (1-based).
            elapsed_s: Seconds since the first attempt started.
        """
        if not self.should_retry(error, failed_attempt):
            return None
        server_delay_s = self.server_delay_s(error)
        if server_delay_s is not None and server_delay_s > self.max_delay_s:
            return None
        delay_s = self.delay_s(failed_attempt) if server_delay_s is None else server_delay_s
        if self.max_elapsed_s is not None and elapsed_s + delay_s > self.max_elapsed_s:
            return None
        return delay_s

    def describe(self, error: BaseException) -> str | None:
        """A short name for the kind of failure, recorded with each retry (`None`: the type's name)."""
        return None

    def not_retried_note(self, error: BaseException) -> str | None:
        """Why `error` was not retried, added to it as a note (`None`: no note)."""
        return None


NO_RETRY = RetryPolicy()


@dataclass(frozen=True)
class CallUsage:
    """Token usage and cost of a model call, recorded on its checkpoint call.

    Attributes:
        model_name: The model that answered, as the provider reported it.
        input_tokens: Prompt tokens billed.
        output_tokens: Completion tokens billed.
        cost_usd: Cost in US dollars where a price is known (genai-prices), else `None`.
    """

    model_name: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None


# -- the execution context -------------------------------------------------------------------------

_current: contextvars.ContextVar[ExecutionContext | None] = contextvars.ContextVar(
    "kitaru_execution", default=None
)
_scope: contextvars.ContextVar[str] = contextvars.ContextVar("kitaru_scope", default="")
_call: contextvars.ContextVar[str | None] = contextvars.ContextVar("kitaru_call", default=None)
_running_plan: contextvars.ContextVar[_Plan | None] = contextvars.ContextVar("kitaru_running_plan", default=None)
_active_owners: set[str] = set()


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


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in {"Z", "X"}


def holder_is_gone(record: ExecutionRecord) -> bool:
    """Whether the lease holder is known to be gone: same host id, and its process ended or was replaced.

    Only a lease written with a host id equal to this host's can be judged here (pids mean nothing
    across hosts or pid namespaces). The holder is gone if no process has its pid, if the process
    with that pid started at another time (pid reused), or if it is this very process and the run
    that took the lease has ended. This only makes a takeover faster: a lease whose holder is alive
    still expires after its duration.
    """
    pid = record.lease_pid
    if pid is None or record.lease_host_id is None or record.lease_host_id != HOST_ID:
        return False
    expected_start = record.lease_process_start_ticks
    if pid == os.getpid() and expected_start in (None, process_start_ticks(pid)):
        return record.lease_owner not in _active_owners
    if not _process_alive(pid):
        return True
    actual_start = process_start_ticks(pid)
    return expected_start is not None and actual_start is not None and actual_start != expected_start


def lease_is_live(record: ExecutionRecord, now: float | None = None) -> bool:
    """Whether a runner still holds the execution.

    A lease is live while it has not expired (`lease_expires_at_epoch_s` in the future, by this
    host's clock) and its holder is not known to be gone (`holder_is_gone`). Every lease expires
    after its duration, whatever process holds it: a hung or paused runner, or a reused pid, cannot
    block a takeover for longer than one lease duration.
    """
    if record.lease_owner is None or record.status != "running":
        return False
    if holder_is_gone(record):
        return False
    return (record.lease_expires_at_epoch_s or 0) > (time.time() if now is None else now)


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
        replace: CallRecord | None = None,
    ) -> CallRecord:
        """Commit one checkpoint call; raises `LeaseLost` if another runner owns the execution now.

        `replace` is this run's `started` record of the call (`on_interrupted="ask"/"fail"`): it is
        updated in place to the outcome instead of a new record being inserted.
        """
        lease = (self.execution_id, self.owner)  # first: a deferred lease is taken here (sets `run_number`)
        with self._lock:
            self._sequence += 1
            sequence = self._sequence
        values: dict[str, Any] = {
            "execution_id": self.execution_id,
            "call_key": key,
            "name": name,
            "kind": kind,
            "sequence": sequence,
            "status": status,
            "fingerprint": fingerprint_,
            "output_format": value.format if value else None,
            "output": value.payload if value else None,
            "output_ref": value.reference if value else None,
            "output_size_bytes": value.size_bytes if value else None,
            "error_type": _qualified_name(type(error)) if error is not None else None,
            "error_message": str(error) if error is not None else None,
            "error_traceback": "".join(traceback.format_exception(error)) if error is not None else None,
            "attempts": attempts,
            "run_number": self.run_number,
            "started_at_epoch_s": started_at_epoch_s,
            "ended_at_epoch_s": time.time(),
            "model_name": usage.model_name if usage else None,
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None,
            "cost_usd": usage.cost_usd if usage else None,
            "details": json.dumps(details, default=str) if details else None,
            "metadata": self.take_call_metadata(key) if status != "started" else None,
        }
        if replace is not None:
            row_id = replace.id if self.store.finish_started_call(replace.id, values, lease=lease) else -1
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
        record = CallRecord(  # as `call_from_columns` would read the row back, without the dict
            id=row_id,
            execution_id=self.execution_id,
            call_key=key,
            name=name,
            kind=kind,
            sequence=sequence,
            status=status,
            fingerprint=fingerprint_,
            output=value,
            error_type=values["error_type"],
            error_message=values["error_message"],
            error_traceback=values["error_traceback"],
            attempts=attempts,
            run_number=values["run_number"],
            last_served_run=None,
            started_at_epoch_s=started_at_epoch_s,
            ended_at_epoch_s=values["ended_at_epoch_s"],
            model_name=values["model_name"],
            input_tokens=values["input_tokens"],
            output_tokens=values["output_tokens"],
            cost_usd=values["cost_usd"],
            details=json.loads(values["details"]) if values["details"] else {},
            metadata=json.loads(values["metadata"]) if values["metadata"] else {},
        )
        self._calls.put(record)
        return record

    def discard_started(self, record: CallRecord) -> None:
        """Forget this run's `started` record of a call whose body stopped at a wait (it runs again on resume)."""
        if self.store.discard_started_call(record.id, lease=(self.execution_id, self.owner)):
            self._calls.discard(record)

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


model_call_gate: Callable[[ExecutionContext, str], None] | None = None
"""Called with the context and the call key before each live model call (`kitaru_core._budgets` sets it)."""


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


# -- checkpoint calls ------------------------------------------------------------------------------


@dataclass
class _Plan:
    """A checkpoint call that runs live: its key, fingerprint and how to store its outcome."""

    context: ExecutionContext
    key: str
    name: str
    kind: str
    fingerprint: str | None
    codec: Codec
    supersede: CallRecord | None
    details: dict[str, Any] | None
    retry: RetryPolicy
    on_interrupted: OnInterrupted = "retry"
    first_attempt: int = 1
    attempts: int = 0
    started_at_epoch_s: float = 0.0
    started_monotonic_s: float = 0.0
    started: CallRecord | None = None
    retries: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    gave_up: bool = False

    @contextmanager
    def running(self) -> Generator[None]:
        """Time the attempts and make the call the scope and idempotency key of its body.

        With `on_interrupted="ask"` or `"fail"` a `started` record is committed first, so a later
        run can tell that this attempt was cut off inside the body.
        """
        self._begin()
        call_token = _call.set(self.key)
        scope_token = _scope.set(self.key)
        plan_token = _running_plan.set(self)
        try:
            yield
        except BaseException as error:
            # A body that stopped at a wait stopped in order: it runs again on resume, as it would
            # without a `started` record. Anything else (a kill, Ctrl-C) leaves the record `started`.
            if self.started is not None and isinstance(find_signal(error), SuspendExecution | StopRun):
                self.context.discard_started(self.started)
            raise
        finally:
            _running_plan.reset(plan_token)
            _scope.reset(scope_token)
            _call.reset(call_token)

    def _begin(self) -> None:
        """Start the clock; with `on_interrupted="ask"` or `"fail"` commit the `started` record."""
        self.started_at_epoch_s = time.time()
        self.started_monotonic_s = time.monotonic()
        self.attempts = self.first_attempt
        if self.on_interrupted != "retry":
            self.started = self._record("started", None, None, None)

    @asynccontextmanager
    async def running_async(self) -> AsyncGenerator[None]:
        """`running` for async bodies: its store writes run on the execution's I/O lane, off the loop."""
        from kitaru_core._async_io import off_loop

        await off_loop(self.context, self._begin)
        call_token = _call.set(self.key)
        scope_token = _scope.set(self.key)
        plan_token = _running_plan.set(self)
        try:
            yield
        except BaseException as error:
            if self.started is not None and isinstance(find_signal(error), SuspendExecution | StopRun):
                await off_loop(self.context, self.context.discard_started, self.started)
            raise
        finally:
            _running_plan.reset(plan_token)
            _scope.reset(scope_token)
            _call.reset(call_token)

    def retry_delay_s(self, error: Exception) -> float:
        """Seconds to wait before the next attempt; records the failure and re-raises when final."""
        delay_s = self.next_retry_delay_s(error)
        if delay_s is None:
            self._record("failed", None, error, None)
            raise error
        return delay_s

    def next_retry_delay_s(self, error: BaseException) -> float | None:
        """Seconds to wait before the next attempt (counted), or `None` once the call gives up.

        Each retry is noted in the call's details (`retries`: attempt, error, delay, time), so the
        timeline shows what failed and how long the call waited. Giving up adds a note to the error.
        """
        if self.gave_up:
            return None
        elapsed_s = time.monotonic() - self.started_monotonic_s
        delay_s = self.retry.next_delay_s(error, self.attempts, elapsed_s)
        if delay_s is not None:
            self.retries.append(
                {
                    "attempt": self.attempts,
                    "error": self.retry.describe(error) or type(error).__name__,
                    "message": str(error)[:200],
                    "delay_s": round(delay_s, 3),
                    "failed_at_epoch_s": time.time(),
                }
            )
            self.attempts += 1
            return delay_s
        self.gave_up = True
        if self.retries:
            error.add_note(
                f"kitaru: {self.name!r} failed after {self.attempts} attempts "
                f"({', '.join(str(retry['error']) for retry in self.retries)}, then this error)."
            )
        else:
            note = self.retry.not_retried_note(error)
            if note is not None:
                error.add_note(f"kitaru: {self.name!r} {note}")
        return None

    def commit(self, output: Any, usage: Callable[[Any], CallUsage | None] | None) -> None:
        """Store the output and commit it (before the caller gets it)."""
        format_, payload = self.codec.encode(output)
        value = self.context.store.prepare_value(format_, payload)
        self._record("completed", value, None, usage(output) if usage is not None else None)

    def _record(
        self, status: str, value: StoredValue | None, error: BaseException | None, usage: CallUsage | None
    ) -> CallRecord:
        started, self.started = self.started, None
        return self.context.record(
            key=self.key,
            name=self.name,
            kind=self.kind,
            status=status,
            fingerprint_=self.fingerprint,
            value=value,
            error=error,
            attempts=self.attempts,
            started_at_epoch_s=self.started_at_epoch_s,
            usage=usage,
            details={**(self.details or {}), "retries": self.retries} if self.retries else self.details,
            supersede=None if started is not None else self.supersede,
            replace=started,
        )


def check_on_interrupted(value: str, where: str) -> None:
    """Refuse an unknown `on_interrupted` value with a message naming the valid ones.

    Raises:
        ConfigurationError: `value` is not `"retry"`, `"ask"` or `"fail"`.
    """
    if value not in ("retry", "ask", "fail"):
        raise ConfigurationError(f'{where}: on_interrupted must be "retry", "ask" or "fail", got {value!r}.')


def _codec_for(
    codec: Codec | None, type_hint: Any, allow_pickle: bool | None, settings: _config.Settings
) -> Codec:
    if codec is not None:
        return codec
    allowed = settings.allow_pickle if allow_pickle is None else allow_pickle
    try:  # one codec per (hint, pickle) kept: making one per call costs more than its lookup
        return _json_codecs[type_hint, allowed]
    except KeyError:
        made = _json_codecs[type_hint, allowed] = JsonCodec(type_hint=type_hint, allow_pickle=allowed)
        return made
    except TypeError:  # an unhashable type hint
        return JsonCodec(type_hint=type_hint, allow_pickle=allowed)


_json_codecs: dict[tuple[Any, bool], JsonCodec] = {}


def _plan(
    name: str,
    *,
    discriminator: str | None,
    kind: str,
    inputs: Any,
    codec: Codec | None,
    type_hint: Any,
    allow_pickle: bool | None,
    on_divergence: OnDivergence,
    details: dict[str, Any] | None,
    retry: RetryPolicy | None,
    on_interrupted: OnInterrupted | None = None,
    given_result: Callable[[Any], Any] | None = None,
) -> tuple[_Plan | None, Any]:
    """Decide whether a call is served from the store. Returns `(plan, _UNSET)` or `(None, stored value)`.

    A record left `started` by an earlier run (its runner stopped inside the body) is run again
    (`retry`), or resolved by a person's answer to its wait (`ask`, `fail`): run again, or the given
    result committed and returned as the call's output.
    """
    context = _current.get()
    assert context is not None
    context.check_alive()
    mode: OnInterrupted = on_interrupted or context.settings.on_interrupted  # pyright: ignore[reportAssignmentType]
    if mode not in ("retry", "ask", "fail"):
        check_on_interrupted(mode, f"checkpoint {name!r}")
    key = context.next_key(name, discriminator)
    fingerprint_ = fingerprint(inputs)
    chosen_codec = _codec_for(codec, type_hint, allow_pickle, context.settings)
    stored = context.stored_call(key)
    supersede: CallRecord | None = None
    first_attempt = 1
    if stored is not None and stored.status in ("completed", "started"):
        same_inputs = fingerprint_ is None or stored.fingerprint is None or fingerprint_ == stored.fingerprint
        if not same_inputs and on_divergence == "error":  # both fingerprints are known here
            raise DivergenceError(context.execution_id, key, stored.fingerprint or "", fingerprint_ or "")
        if stored.status == "completed":
            if same_inputs:
                assert stored.output is not None
                value = chosen_codec.decode(stored.output.format, context.store.load_value(stored.output))
                context.note_served(stored)
                return None, value
            supersede = stored
        elif same_inputs:  # interrupted inside its body in an earlier run
            first_attempt = stored.attempts + 1
            if mode != "retry":
                given = _resolve_interrupted(
                    context,
                    stored,
                    name=name,
                    kind=kind,
                    inputs=inputs,
                    mode=mode,
                    codec=chosen_codec,
                    type_hint=type_hint,
                    given_result=given_result,
                    fingerprint_=fingerprint_,
                    details=details,
                )
                if given is not _UNSET:
                    return None, given
    plan = _Plan(
        context,
        key,
        name,
        kind,
        fingerprint_,
        chosen_codec,
        supersede,
        details,
        retry or NO_RETRY,
        on_interrupted=mode,
        first_attempt=first_attempt,
    )
    return plan, _UNSET


def _resolve_interrupted(
    context: ExecutionContext,
    stored: CallRecord,
    *,
    name: str,
    kind: str,
    inputs: Any,
    mode: OnInterrupted,
    codec: Codec,
    type_hint: Any,
    given_result: Callable[[Any], Any] | None,
    fingerprint_: str | None,
    details: dict[str, Any] | None,
) -> Any:
    """Settle an interrupted call through its wait: `_UNSET` to run it again, or the given result.

    Raises:
        SuspendExecution: `ask`, and nobody has answered yet.
        InterruptedCallError: `fail`, and nobody has answered yet.
    """
    from pydantic import TypeAdapter

    from kitaru_core import _interrupted

    asked = _interrupted.question(stored, name, inputs, mode)
    answer_type = _interrupted.answer_type(None if given_result is not None else type_hint)
    adapter = TypeAdapter(answer_type)
    spec = WaitSpec(asked.wait_name, asked.text, answer_type, asked.metadata)
    item = _OpenWait(asked.wait_name, spec, adapter, adapter.json_schema())
    store = context.store
    cached = context.cached_wait(item.name)
    item.record = (
        cached
        if cached is not None and cached.status == "answered"
        else store.find_wait(context.execution_id, item.name)
    )
    interactive = mode == "ask" and _interactive(context.settings)
    scope_token = _scope.set(stored.call_key)  # the wait belongs to the call in the timeline
    try:
        while True:
            item.settle(context, interactive)
            if not item.done:
                break
            action, result = _interrupted.resolution(item.value)
            if action == "retry":
                return _UNSET
            try:
                output = given_result(result) if given_result is not None else result
                format_, payload = codec.encode(output)
            except (SerializationError, ValueError, TypeError) as error:
                store.refuse_answer(
                    context.execution_id, item.name, [f"result: cannot be the call's output: {error}"]
                )
                item.record, item.done = store.find_wait(context.execution_id, item.name), False
                continue
            now = time.time()
            context.record(
                key=stored.call_key,
                name=name,
                kind=kind,
                status="completed",
                fingerprint_=fingerprint_,
                value=store.prepare_value(format_, payload),
                error=None,
                attempts=stored.attempts,
                started_at_epoch_s=now,
                usage=None,
                details={**(details or {}), "given_by": "person", "wait": item.name},
                supersede=None,
            )
            return codec.decode(format_, payload)
    finally:
        _scope.reset(scope_token)
    if mode == "ask":
        raise SuspendExecution(context.execution_id)
    raise InterruptedCallError(
        context.execution_id, stored.call_key, asked.description, stored.started_at_epoch_s, item.name
    )


def run_checkpoint(
    name: str,
    function: Callable[..., T],
    *args: Any,
    discriminator: str | None = None,
    kind: Kind = "user",
    inputs: Any = _UNSET,
    codec: Codec | None = None,
    type_hint: Any = None,
    allow_pickle: bool | None = None,
    on_divergence: OnDivergence = "rerun",
    retry: RetryPolicy | None = None,
    usage: Callable[[T], CallUsage | None] | None = None,
    details: dict[str, Any] | None = None,
    on_interrupted: OnInterrupted | None = None,
    given_result: Callable[[Any], T] | None = None,
    **kwargs: Any,
) -> T:
    """Run `function(*args, **kwargs)` as one checkpoint call of the current execution.

    Outside an execution it simply calls the function. Inside one, a completed call with the same
    key and input fingerprint returns its stored output without running; otherwise the function
    runs and its output is committed to the store before it is returned.

    Args:
        name: Checkpoint name; part of the call's key.
        function: The synchronous function to run.
        *args: Positional arguments for `function`.
        discriminator: A stable discriminator (e.g. a tool call id); default: occurrence count.
        kind: `model`, `tool`, `mcp` or `user`, shown in the timeline.
        inputs: What to fingerprint; default: `(args, kwargs)`.
        codec: How to store the output; default: `JsonCodec`, lossless JSON (the served output is
            equal to the returned one and of the same type).
        type_hint: The function's return type (default codec only): finds classes defined inside
            functions, and validates outputs stored by 0.1. It never converts a value.
        allow_pickle: Allow pickle for this call's output (default: the global setting).
        on_divergence: `"rerun"` (default) or `"error"` when the stored inputs differ.
        retry: Retry policy for exceptions raised by `function`.
        usage: Extracts token usage and cost from the output (model calls).
        details: Small JSON-able facts shown in the timeline (tool name, arguments preview...).
        on_interrupted: What a later run does when this call's runner stopped inside its body (a
            crash or kill while it ran): `"retry"` runs it again (at-least-once; records nothing
            extra); `"ask"` commits a `started` record before the body and turns an interrupted call
            into a durable wait a person answers with `{"action": "retry"}` or
            `{"action": "result", "result": ...}`; `"fail"` records the same wait and raises
            `InterruptedCallError` until it is answered. Default: `configure(on_interrupted=...)`,
            itself `"retry"` by default.
        given_result: Turns a result a person gave for an interrupted call (JSON, validated against
            `type_hint` when there is one) into the call's output; default: the value itself.
        **kwargs: Keyword arguments for `function`.

    Returns:
        The function's output, live or from the store (or the result a person gave).

    Raises:
        DivergenceError: The stored inputs differ and `on_divergence="error"`.
        InterruptedCallError: The call was interrupted in an earlier run, `on_interrupted="fail"`,
            and nobody has answered its wait yet.
        SerializationError: The output cannot be stored (raised after the function ran and before
            anything is committed: the call is not completed and runs again on resume), or a stored
            output cannot be loaded (a class whose module is neither imported nor allowed by
            `configure(decode_modules=...)`, a corrupt or tampered record).
        Exception: Whatever `function` raised on its last attempt (it is recorded first).
    """
    if _current.get() is None:
        return function(*args, **kwargs)
    plan, stored = _plan(
        name,
        discriminator=discriminator,
        kind=kind,
        inputs=(args, kwargs) if inputs is _UNSET else inputs,
        codec=codec,
        type_hint=type_hint,
        allow_pickle=allow_pickle,
        on_divergence=on_divergence,
        details=details,
        retry=retry,
        on_interrupted=on_interrupted,
        given_result=given_result,
    )
    if plan is None:
        return stored
    if kind == "model" and model_call_gate is not None:
        model_call_gate(plan.context, plan.key)  # budgets: may stop at a wait before the call is sent
    with plan.running():
        while True:
            plan.context.ensure_lease()  # fencing: no body starts without the lease
            try:
                output = function(*args, **kwargs)
                break
            except Exception as error:
                time.sleep(plan.retry_delay_s(error))  # records the failure and re-raises when final
                plan.context.check_alive()
    plan.commit(output, usage)
    return output


async def run_checkpoint_async(
    name: str,
    function: Callable[..., Awaitable[T]],
    *args: Any,
    discriminator: str | None = None,
    kind: Kind = "user",
    inputs: Any = _UNSET,
    codec: Codec | None = None,
    type_hint: Any = None,
    allow_pickle: bool | None = None,
    on_divergence: OnDivergence = "rerun",
    retry: RetryPolicy | None = None,
    usage: Callable[[T], CallUsage | None] | None = None,
    details: dict[str, Any] | None = None,
    on_interrupted: OnInterrupted | None = None,
    given_result: Callable[[Any], T] | None = None,
    **kwargs: Any,
) -> T:
    """Await `function(*args, **kwargs)` as one checkpoint call; see `run_checkpoint`.

    Concurrent calls (asyncio tasks) must pass a stable `discriminator` (e.g. a tool call id),
    since their order of arrival may differ between runs.
    """
    import asyncio

    from kitaru_core._async_io import off_loop

    if _current.get() is None:
        return await function(*args, **kwargs)
    plan, stored = await off_loop(  # reads (and may load an artifact) on the execution's I/O lane
        _current.get(),
        _plan,
        name,
        discriminator=discriminator,
        kind=kind,
        inputs=(args, kwargs) if inputs is _UNSET else inputs,
        codec=codec,
        type_hint=type_hint,
        allow_pickle=allow_pickle,
        on_divergence=on_divergence,
        details=details,
        retry=retry,
        on_interrupted=on_interrupted,
        given_result=given_result,
    )
    if plan is None:
        return stored
    if kind == "model" and model_call_gate is not None:
        # budgets: may stop at a wait before the call is sent; it reads the store and may poll a
        # wait, so it runs on a thread of its own (not the execution's lane, which it could hold up)
        await off_loop(None, model_call_gate, plan.context, plan.key)
    async with plan.running_async():
        while True:
            await off_loop(plan.context, plan.context.ensure_lease)  # fencing: no body starts without the lease
            try:
                output = await function(*args, **kwargs)
                break
            except Exception as error:
                # records the failure and re-raises when final
                await asyncio.sleep(await off_loop(plan.context, plan.retry_delay_s, error))
                plan.context.check_alive()
    await off_loop(plan.context, plan.commit, output, usage)  # committed before it is returned
    return output


def retry_delay_in_call(error: BaseException) -> float | None:
    """Ask the current checkpoint call's retry policy whether `error` is retried inside the call's body.

    For a body that retries by itself through a framework's own hook (PydanticAI's
    `on_model_request_error`, which may call its handler only once): the attempt is counted and
    noted in the call's record as if the checkpoint call had retried, and the caller waits the
    returned seconds, then tries again. Once this returns `None` the call has given up: the caller
    raises `error`, and the call records it as failed when it leaves the body (without retrying).

    Args:
        error: What the failed attempt raised.

    Returns:
        Seconds to wait before the next attempt, or `None` (not retried; also outside a call).
    """
    plan = _running_plan.get()
    if plan is None:
        return None
    return plan.next_retry_delay_s(error)


def stop_retries_in_call() -> None:
    """Make the current checkpoint call's next failure final: its retry policy is not asked again.

    For a body that has already handed part of its output on before it failed (a streamed model
    reply whose first chunks reached the caller): another attempt would send them again. Does
    nothing outside a checkpoint call.
    """
    plan = _running_plan.get()
    if plan is not None:
        plan.gave_up = True


# -- waits -----------------------------------------------------------------------------------------


def _validation_problems(error: Exception) -> list[str]:
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        return [
            f"{'.'.join(str(part) for part in item['loc']) or 'value'}: {item['msg']}"
            for item in error.errors()
        ]
    return [str(error)]


def _interactive(settings: _config.Settings) -> bool:
    if settings.interactive is not None:
        return settings.interactive
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _parse_terminal_answer(line: str, schema: dict[str, Any]) -> Any:
    text = line.strip()
    lowered = text.lower()
    yes, no = {"y", "yes", "approve", "approved"}, {"n", "no", "deny", "denied"}
    if schema.get("title") == "ApprovalDecision":
        word, _, message = text.partition(" ")
        if word.lower() in yes | no:
            return {"approved": word.lower() in yes, "message": message or None}
    if schema.get("type") == "boolean" and lowered in yes | no:
        return lowered in yes
    try:
        return json.loads(text)
    except ValueError:
        return text


def _ask_at_terminal(question: str, schema: dict[str, Any], adapter: Any, name: str) -> tuple[bool, Any]:
    hint = "y/n, optionally followed by a message" if schema.get("title") == "ApprovalDecision" else "JSON"
    while True:
        try:
            line = input(f"\n[kitaru wait {name}] {question}\nAnswer ({hint}): ")
        except EOFError:
            return False, None
        try:
            return True, adapter.validate_python(_parse_terminal_answer(line, schema))
        except ValueError as error:
            print("Answer refused: " + "; ".join(_validation_problems(error)))


@dataclass(frozen=True)
class WaitSpec:
    """One question for `wait_all`; the fields mean what `wait`'s arguments mean.

    Attributes:
        name: The wait's name, unique within the execution; `None`: `wait-N` in the order reached.
        question: What to ask.
        schema: Type of the answer (any type pydantic validates).
        metadata: Small JSON-able facts stored with the wait.
    """

    name: str | None
    question: str
    schema: Any = bool
    metadata: dict[str, Any] | None = None


@dataclass
class _OpenWait:
    name: str
    spec: WaitSpec
    adapter: Any
    json_schema: dict[str, Any]
    record: WaitRecord | None = None
    asked: bool = False
    done: bool = False
    value: Any = None

    def settle(self, context: ExecutionContext, interactive: bool) -> None:
        """Take a valid stored answer, record the wait if it is new, or ask once at the terminal."""
        store = context.store
        while True:
            record = self.record
            if record is not None and record.status == "answered":
                try:
                    self.value = self.adapter.validate_python(record.answer)
                except ValueError as error:
                    store.refuse_answer(context.execution_id, self.name, _validation_problems(error))
                    self.record = None
                else:
                    self.done = True
                    return
            if self.record is None:
                self.record = store.create_wait(
                    context.execution_id,
                    self.name,
                    call_key=_scope.get() or "/",
                    question=self.spec.question,
                    schema=self.json_schema,
                    details=self.spec.metadata,
                )
                context.remember_wait(self.record)
                continue
            if not interactive or self.asked:
                return
            self.asked = True
            answered, value = _ask_at_terminal(self.spec.question, self.json_schema, self.adapter, self.name)
            if not answered:
                return
            try:
                store.answer_wait(
                    context.execution_id, self.name, self.adapter.dump_json(value).decode("utf-8")
                )
            except Exception as error:  # answered meanwhile from elsewhere: use that answer
                logger.warning("kitaru: %s", error)
            self.record = store.find_wait(context.execution_id, self.name)


def wait_all(specs: Sequence[WaitSpec], *, timeout: timedelta | float | None = None) -> list[Any]:
    """Ask several questions at once; see `wait`.

    Every wait is recorded as pending before anything blocks, so all of them can be answered
    (from the CLI, the `Client` or a webhook) before the execution resumes; the store is polled
    for all of them together until `timeout`, then the execution suspends.

    Args:
        specs: The questions.
        timeout: How long to poll the store for the answers before suspending (`timedelta` or
            seconds as a float); `None`: do not poll.

    Returns:
        The validated answers, in the order of `specs`.

    Raises:
        ConfigurationError: Called outside an execution.
    """
    from pydantic import TypeAdapter

    context = _current.get()
    if context is None:
        raise ConfigurationError(
            "wait() needs an execution to suspend: call it inside a @flow, a `with execution(...)` block, "
            "or a run of an agent made durable with an adapter."
        )
    context.check_alive()
    open_waits: list[_OpenWait] = []
    for spec in specs:
        adapter = TypeAdapter(spec.schema)
        open_waits.append(_OpenWait(context.wait_name(spec.name), spec, adapter, adapter.json_schema()))
    store = context.store
    for item in open_waits:
        cached = context.cached_wait(item.name)
        item.record = (
            cached
            if cached is not None and cached.status == "answered"
            else store.find_wait(context.execution_id, item.name)
        )
    timeout_s = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    deadline = time.monotonic() + (timeout_s or 0.0)
    interactive = _interactive(context.settings)
    while True:
        for item in open_waits:
            if not item.done:
                item.settle(context, interactive)
        if all(item.done for item in open_waits):
            return [item.value for item in open_waits]
        if time.monotonic() >= deadline:
            raise SuspendExecution(context.execution_id)
        time.sleep(min(context.settings.wait_poll_interval_s, max(0.0, deadline - time.monotonic())))
        context.check_alive()
        for item in open_waits:
            if not item.done:
                item.record = store.find_wait(context.execution_id, item.name)


def wait(
    name: str | None = None,
    *,
    question: str,
    schema: Any = bool,
    timeout: timedelta | float | None = None,
    metadata: dict[str, Any] | None = None,
) -> Any:
    """Stop the execution until a person, another agent or a webhook answers.

    If the execution already holds a valid answer for this wait, it is returned at once. Otherwise
    the wait is recorded as pending; when stdin is a terminal (or `configure(interactive=True)`)
    the question is asked there; the store is polled for an answer for `timeout`; then the
    execution stops with status `waiting` and its process is released. The caller of the execution
    then gets `ExecutionWaitingError`, which says how to answer and resume. An answer that does not
    validate against `schema` is refused (kept in the wait's history) and the wait stays pending.

    Args:
        name: The wait's name, unique within the execution (repeats get `-2`, `-3`...). Default:
            `wait-1`, `wait-2`... in the order reached.
        question: What to ask.
        schema: Type of the answer (any type pydantic validates: `bool`, `str`, a model...). Its
            JSON schema is stored so other processes can validate answers.
        timeout: How long to poll the store for an answer before suspending: a `timedelta` or
            seconds as a float. `None`: do not poll (at a terminal: ask and wait for the answer).
        metadata: Small JSON-able facts stored with the wait (shown to whoever answers).

    Returns:
        The validated answer.

    Raises:
        ConfigurationError: Called outside an execution.
    """
    return wait_all([WaitSpec(name, question, schema, metadata)], timeout=timeout)[0]


# -- the execution boundary ------------------------------------------------------------------------


def _new_execution_id() -> str:
    return uuid.uuid4().hex[:16]


def acquire(store: Store, execution_id: str, settings: _config.Settings) -> tuple[ExecutionRecord, str]:
    """Take the execution's lease, or raise if a live runner holds it.

    The lease records who holds it: host name (for people), host id (`HOST_ID`), pid and the
    process's start time, so a holder on this host that is gone (`holder_is_gone`) is taken over at
    once; any other lease only once it has expired.
    """
    owner = uuid.uuid4().hex
    for _ in range(5):
        record = store.get_execution(execution_id)
        if record.status == "cancelled" or record.cancel_requested:
            raise ExecutionCancelledError(execution_id)
        if lease_is_live(record) and (lease_handoff is None or record.lease_owner != lease_handoff):
            holder = f"{record.lease_host}:{record.lease_pid}"
            expires_in = (record.lease_expires_at_epoch_s or 0) - time.time()
            raise ExecutionLockedError(execution_id, holder, max(0.0, expires_in))
        if store.try_acquire_lease(
            execution_id,
            expected_owner=record.lease_owner,
            owner=owner,
            host=_HOST,
            pid=os.getpid(),
            lease_duration_s=settings.lease_duration_s,
            host_id=HOST_ID,
            process_start_ticks=process_start_ticks(os.getpid()),
        ):
            return store.get_execution(execution_id), owner
    record = store.get_execution(execution_id)
    raise ExecutionLockedError(
        execution_id, f"{record.lease_host}:{record.lease_pid}", settings.lease_duration_s
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
            and lease_handoff is None
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


# -- names the workers use (kitaru_core._workers) ------------------------------------------------

HOST = _HOST
"""This host's name, as leases record it."""
active_owners = _active_owners
"""Lease owner tokens this process holds now (a worker adds its claims: `holder_is_gone` reads it)."""
process_alive = _process_alive
