"""The running side of an execution: lease and heartbeat, checkpoint calls, waits, and its boundary."""

from __future__ import annotations

import contextvars
import functools
import json
import os
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Generator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from kitaru_core import _config
from kitaru_core._ids import check_execution_id, check_wait_name, fit_name
from kitaru_core._records import CallRecord, ExecutionRecord, StoredValue, WaitRecord, call_from_columns
from kitaru_core._serialization import Codec, JsonCodec, fingerprint
from kitaru_core.errors import (
    ConfigurationError,
    DivergenceError,
    ExecutionCancelledError,
    ExecutionLockedError,
    ExecutionWaitingError,
    LeaseLostError,
    PendingWait,
    StoreError,
)

if TYPE_CHECKING:
    from kitaru_core._store import Store

T = TypeVar("T")
Kind = Literal["model", "tool", "user", "mcp"]
OnDivergence = Literal["rerun", "error"]

_HOST = socket.gethostname()
_UNSET: Any = object()


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

    Attributes:
        max_attempts: Total attempts including the first (1 = no retry).
        initial_delay_s: Seconds before the second attempt.
        backoff_factor: Each further delay is the previous one times this.
        max_delay_s: Upper bound of one delay, in seconds.
        retry_on: Exception types that are retried; others fail at once.
    """

    max_attempts: int = 1
    initial_delay_s: float = 1.0
    backoff_factor: float = 2.0
    max_delay_s: float = 60.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}.")
        if self.initial_delay_s < 0 or self.max_delay_s < 0 or self.backoff_factor < 1:
            raise ConfigurationError("RetryPolicy delays must be >= 0 seconds and backoff_factor >= 1.")

    def delay_s(self, failed_attempt: int) -> float:
        """Seconds to sleep after attempt number `failed_attempt` (1-based) failed."""
        return min(self.max_delay_s, self.initial_delay_s * self.backoff_factor ** (failed_attempt - 1))

    def should_retry(self, error: BaseException, failed_attempt: int) -> bool:
        """Whether attempt `failed_attempt + 1` should run after `error`."""
        return failed_attempt < self.max_attempts and isinstance(error, self.retry_on)


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
_active_owners: set[str] = set()


def get_store() -> Store:
    """The store the current settings point at (opened once per process and settings)."""
    from kitaru_core._store import open_store

    settings = _config.current_settings()
    return open_store(
        settings.resolved_store_url(), settings.resolved_artifacts_url(), settings.inline_limit_bytes
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


def lease_is_live(record: ExecutionRecord, now: float | None = None) -> bool:
    """Whether a runner still holds the execution (lease not expired and, on this host, alive)."""
    if record.lease_owner is None or record.status != "running":
        return False
    if record.lease_host == _HOST and record.lease_pid is not None:
        if record.lease_pid == os.getpid():
            return record.lease_owner in _active_owners
        return _process_alive(record.lease_pid)
    return (record.lease_expires_at_epoch_s or 0) > (now or time.time())


class ExecutionContext:
    """State of one run of an execution in this process."""

    def __init__(self, store: Store, record: ExecutionRecord, owner: str, settings: _config.Settings) -> None:
        self.store = store
        self.execution_id = record.id
        self.flow_name = record.flow_name
        self.entry_point = record.entry_point
        self.owner = owner
        self.settings = settings
        self.run_number = record.run_count
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str], int] = {}
        self._calls: dict[str, CallRecord] = {}
        self._sequence = 0
        for call in store.load_calls(record.id, include_superseded=True):
            self._sequence = max(self._sequence, call.sequence)
            if call.status != "superseded":
                self._calls[call.call_key] = call
        self._served: list[int] = []
        self._waits: dict[str, WaitRecord] = {wait.name: wait for wait in store.list_waits(record.id)}
        self._wait_names: dict[str, int] = {}
        self.cancel_requested = record.cancel_requested
        self.lease_lost = False
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(
            target=self._beat, name=f"kitaru-heartbeat-{record.id}", daemon=True
        )

    # lease ------------------------------------------------------------------------------------------

    def start_heartbeat(self) -> None:
        """Start renewing the lease every third of its duration."""
        self._heartbeat.start()

    def stop_heartbeat(self) -> None:
        """Stop renewing the lease."""
        self._stop.set()
        if self._heartbeat.is_alive():
            self._heartbeat.join(timeout=5)

    def _beat(self) -> None:
        interval_s = max(0.05, self.settings.lease_duration_s / 3)
        while not self._stop.wait(interval_s):
            try:
                still_owner, cancel = self.store.renew_lease(
                    self.execution_id, self.owner, self.settings.lease_duration_s
                )
            except Exception as error:  # a passing database error: try again next beat
                print(f"kitaru: heartbeat of {self.execution_id} failed: {error}", file=sys.stderr)
                continue
            self.lease_lost = self.lease_lost or not still_owner
            self.cancel_requested = self.cancel_requested or cancel

    def check_alive(self) -> None:
        """Raise the runtime signal if the execution was cancelled or its lease was lost."""
        if self.lease_lost:
            raise LeaseLost(self.execution_id)
        if self.cancel_requested:
            raise CancelExecution(self.execution_id)

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

    def flush_served(self) -> None:
        """Write which calls this run served from the store."""
        with self._lock:
            served, self._served = self._served, []
        try:
            self.store.mark_served(served, self.run_number)
        except StoreError as error:
            print(f"kitaru: could not record served calls of {self.execution_id}: {error}", file=sys.stderr)

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
    ) -> CallRecord:
        """Commit one checkpoint call; raises `LeaseLost` if another runner owns the execution now."""
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
        }
        previous = self._calls.get(key)
        supersede_ids = [supersede.id] if supersede is not None else []
        if previous is not None and previous.status == "failed":
            supersede_ids.append(previous.id)
        row_id = self.store.record_call(
            values, supersede_ids=supersede_ids, lease=(self.execution_id, self.owner)
        )
        if row_id < 0:
            self.lease_lost = True
            raise LeaseLost(self.execution_id)
        record = call_from_columns({**values, "id": row_id, "last_served_run": None})
        with self._lock:
            self._calls[key] = record
        return record

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


def current_execution() -> ExecutionContext | None:
    """The execution running in this context, or `None` outside any execution."""
    return _current.get()


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
    attempts: int = 0
    started_at_epoch_s: float = 0.0

    @contextmanager
    def running(self) -> Generator[None]:
        """Time the attempts and make the call the scope and idempotency key of its body."""
        self.started_at_epoch_s = time.time()
        self.attempts = 1
        call_token = _call.set(self.key)
        scope_token = _scope.set(self.key)
        try:
            yield
        finally:
            _scope.reset(scope_token)
            _call.reset(call_token)

    def retry_delay_s(self, error: Exception) -> float:
        """Seconds to wait before the next attempt; records the failure and re-raises when final."""
        if self.retry.should_retry(error, self.attempts):
            delay_s = self.retry.delay_s(self.attempts)
            self.attempts += 1
            return delay_s
        self._record("failed", None, error, None)
        raise error

    def commit(self, output: Any, usage: Callable[[Any], CallUsage | None] | None) -> None:
        """Store the output and commit it (before the caller gets it)."""
        format_, payload = self.codec.encode(output)
        value = self.context.store.prepare_value(format_, payload)
        self._record("completed", value, None, usage(output) if usage is not None else None)

    def _record(
        self, status: str, value: StoredValue | None, error: BaseException | None, usage: CallUsage | None
    ) -> None:
        self.context.record(
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
            details=self.details,
            supersede=self.supersede,
        )


def _codec_for(
    codec: Codec | None, type_hint: Any, allow_pickle: bool | None, settings: _config.Settings
) -> Codec:
    if codec is not None:
        return codec
    return JsonCodec(
        type_hint=type_hint, allow_pickle=settings.allow_pickle if allow_pickle is None else allow_pickle
    )


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
) -> tuple[_Plan | None, Any]:
    """Decide whether a call is served from the store. Returns `(plan, _UNSET)` or `(None, stored value)`."""
    context = _current.get()
    assert context is not None
    context.check_alive()
    key = context.next_key(name, discriminator)
    fingerprint_ = fingerprint(inputs)
    chosen_codec = _codec_for(codec, type_hint, allow_pickle, context.settings)
    stored = context.stored_call(key)
    supersede: CallRecord | None = None
    if stored is not None and stored.status == "completed":
        if fingerprint_ is None or stored.fingerprint is None or fingerprint_ == stored.fingerprint:
            assert stored.output is not None
            value = chosen_codec.decode(stored.output.format, context.store.load_value(stored.output))
            context.note_served(stored)
            return None, value
        if on_divergence == "error":
            raise DivergenceError(context.execution_id, key, stored.fingerprint, fingerprint_)
        supersede = stored
    plan = _Plan(context, key, name, kind, fingerprint_, chosen_codec, supersede, details, retry or NO_RETRY)
    return plan, _UNSET


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
        codec: How to store the output; default: JSON through pydantic.
        type_hint: Type to load the stored JSON into (default codec only).
        allow_pickle: Allow pickle for this call's output (default: the global setting).
        on_divergence: `"rerun"` (default) or `"error"` when the stored inputs differ.
        retry: Retry policy for exceptions raised by `function`.
        usage: Extracts token usage and cost from the output (model calls).
        details: Small JSON-able facts shown in the timeline (tool name, arguments preview...).
        **kwargs: Keyword arguments for `function`.

    Returns:
        The function's output, live or from the store.

    Raises:
        DivergenceError: The stored inputs differ and `on_divergence="error"`.
        SerializationError: The output cannot be stored.
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
    )
    if plan is None:
        return stored
    with plan.running():
        while True:
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
    **kwargs: Any,
) -> T:
    """Await `function(*args, **kwargs)` as one checkpoint call; see `run_checkpoint`.

    Concurrent calls (asyncio tasks) must pass a stable `discriminator` (e.g. a tool call id),
    since their order of arrival may differ between runs.
    """
    import asyncio

    if _current.get() is None:
        return await function(*args, **kwargs)
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
    )
    if plan is None:
        return stored
    with plan.running():
        while True:
            try:
                output = await function(*args, **kwargs)
                break
            except Exception as error:
                await asyncio.sleep(plan.retry_delay_s(error))  # records the failure and re-raises when final
                plan.context.check_alive()
    plan.commit(output, usage)
    return output


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
                print(f"kitaru: {error}", file=sys.stderr)
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
    """Take the execution's lease, or raise if a live runner holds it."""
    owner = uuid.uuid4().hex
    for _ in range(5):
        record = store.get_execution(execution_id)
        if record.status == "cancelled" or record.cancel_requested:
            raise ExecutionCancelledError(execution_id)
        if lease_is_live(record):
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
) -> tuple[Store, ExecutionRecord]:
    """Find the execution to run (explicit id, or the unfinished one with the same inputs), or create it."""
    if fresh and execution_id is not None:
        raise ConfigurationError(
            f"fresh=True starts a new execution with a generated id; it cannot be combined with "
            f"execution_id={execution_id!r}. Pass a new id instead."
        )
    if execution_id is not None:
        check_execution_id(execution_id)
    store = get_store()
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
        settings = _config.current_settings()
        record, owner = acquire(self.store, self.execution_id, settings)
        context = ExecutionContext(self.store, record, owner, settings)
        _active_owners.add(owner)
        context.start_heartbeat()
        self.context = context
        self._tokens = (_current.set(context), _scope.set(""), _call.set(None))
        return context

    def __exit__(self, error_type: Any, error: BaseException | None, _traceback: Any) -> None:
        context = self.context
        assert context is not None
        _current.reset(self._tokens[0])
        _scope.reset(self._tokens[1])
        _call.reset(self._tokens[2])
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
            self.store.finish_execution(self.execution_id, owner, status="cancelled")
            raise ExecutionCancelledError(self.execution_id) from None
        if isinstance(signal, LeaseLost):
            raise LeaseLostError(self.execution_id) from None
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
