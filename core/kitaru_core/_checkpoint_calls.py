"""Checkpoint calls: retry policies, serving a call from the store or running and committing it."""

from __future__ import annotations

import contextvars
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from kitaru_core import _config
from kitaru_core._context import ExecutionContext, _call, _current, _scope
from kitaru_core._records import CallRecord, StoredValue
from kitaru_core._serialization import Codec, JsonCodec, fingerprint
from kitaru_core._signals import StopRun, SuspendExecution, find_signal
from kitaru_core._waits import WaitSpec, _interactive, _OpenWait
from kitaru_core.errors import ConfigurationError, DivergenceError, InterruptedCallError, SerializationError

T = TypeVar("T")
Kind = Literal["model", "tool", "user", "mcp", "handoff"]
OnDivergence = Literal["rerun", "error"]
OnInterrupted = Literal["retry", "ask", "fail"]
"""What a later run does with a checkpoint call whose runner stopped inside its body: `"retry"` runs it
again (the default), `"ask"` stops at a durable wait for a person, `"fail"` fails the execution until
somebody answers that wait (see `run_checkpoint`)."""

_UNSET: Any = object()


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


_running_plan: contextvars.ContextVar[_Plan | None] = contextvars.ContextVar("kitaru_running_plan", default=None)


model_call_gate: Callable[[ExecutionContext, str], None] | None = None
"""Called with the context and the call key before each live model call (`kitaru_core._budgets` sets it)."""


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
    started: int | None = None
    """The id of this attempt's `started` record (`on_interrupted="ask"/"fail"`), while it is one."""
    retries: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    gave_up: bool = False

    def _enter(self) -> tuple[contextvars.Token[str | None], contextvars.Token[str], contextvars.Token[_Plan | None]]:
        """Make the call the scope and idempotency key of its body (context variables set).

        With `on_interrupted="ask"` or `"fail"`, `_begin` has committed a `started` record first, so
        a later run can tell that this attempt was cut off inside the body (`run_planned`,
        `running_async`).
        """
        return _call.set(self.key), _scope.set(self.key), _running_plan.set(self)

    @staticmethod
    def _leave(
        tokens: tuple[contextvars.Token[str | None], contextvars.Token[str], contextvars.Token[_Plan | None]],
    ) -> None:
        call_token, scope_token, plan_token = tokens
        _running_plan.reset(plan_token)
        _scope.reset(scope_token)
        _call.reset(call_token)

    def _stopped(self, error: BaseException) -> None:
        """The body raised `error`: forget the `started` record of a body that stopped at a wait.

        A body that stopped at a wait stopped in order: it runs again on resume, as it would without
        a `started` record. Anything else (a kill, Ctrl-C) leaves the record `started`.
        """
        if self.started is not None and isinstance(find_signal(error), SuspendExecution | StopRun):
            self.context.discard_started(self.key, self.started)

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
        tokens = self._enter()
        try:
            yield
        except BaseException as error:
            if self.started is not None and isinstance(find_signal(error), SuspendExecution | StopRun):
                await off_loop(self.context, self.context.discard_started, self.key, self.started)
            raise
        finally:
            self._leave(tokens)

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
    ) -> int:
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


def plan_call(
    name: str,
    discriminator: str | None,
    kind: str,
    inputs: Any,
    codec: Codec | None,
    type_hint: Any,
    allow_pickle: bool | None,
    on_divergence: OnDivergence,
    details: dict[str, Any] | None,
    retry: RetryPolicy | None,
    on_interrupted: OnInterrupted | None,
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
        kind: `model`, `tool`, `mcp`, `handoff` or `user`, shown in the timeline.
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
    plan, stored = plan_call(
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
    return run_planned(plan, function, args, kwargs, usage)


def run_planned(
    plan: _Plan,
    function: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    usage: Callable[[T], CallUsage | None] | None,
) -> T:
    """Run a live checkpoint call's body (with its retries) and commit its output (see `run_checkpoint`).

    The attempts run between `_enter` and `_leave` as plain code, not inside a generator-based
    context manager: this is every live call's path, and such a `with` cost a few percent of a
    recorded call.
    """
    context = plan.context
    if plan.kind == "model" and model_call_gate is not None:
        model_call_gate(context, plan.key)  # budgets: may stop at a wait before the call is sent
    plan._begin()  # pyright: ignore[reportPrivateUsage]
    tokens = plan._enter()  # pyright: ignore[reportPrivateUsage]
    try:
        while True:
            context.ensure_lease()  # fencing: no body starts without the lease
            try:
                output = function(*args, **kwargs)
                break
            except Exception as error:
                time.sleep(plan.retry_delay_s(error))  # records the failure and re-raises when final
                context.check_alive()
    except BaseException as error:
        plan._stopped(error)  # pyright: ignore[reportPrivateUsage]
        raise
    finally:
        plan._leave(tokens)  # pyright: ignore[reportPrivateUsage]
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
        plan_call,
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
