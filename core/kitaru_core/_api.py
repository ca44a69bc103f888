"""The user-facing decorators and context managers: `flow`, `checkpoint`, `execution`, `durable_run`."""

from __future__ import annotations

import contextvars
import functools
import hashlib
import inspect
import sys
import typing
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from kitaru_core import _config
from kitaru_core._async_io import off_loop
from kitaru_core._boundary import ExecutionRun, decode_stored, get_store, open_or_find
from kitaru_core._checkpoint_calls import (
    Kind,
    OnDivergence,
    OnInterrupted,
    RetryPolicy,
    check_on_interrupted,
    plan_call,
    run_checkpoint_async,
    run_planned,
)
from kitaru_core._context import _current, current_execution, scope
from kitaru_core._ids import check_execution_id, check_queue_name, fit_name
from kitaru_core._records import ExecutionRecord, StoredValue
from kitaru_core._serialization import Codec, JsonCodec, fingerprint, unstorable_type
from kitaru_core._view import CurrentExecution
from kitaru_core.errors import ConfigurationError

if TYPE_CHECKING:
    from kitaru_core._budgets import Budget
    from kitaru_core._store import Store

P = ParamSpec("P")
R = TypeVar("R")
T_co = TypeVar("T_co", covariant=True)

FILE_ENTRY_PREFIX = "file:"


def _return_hint(function: Callable[..., Any]) -> Any:
    return _resolve_return_hint(function)[1]


def _resolve_return_hint(function: Callable[..., Any]) -> tuple[bool, Any]:
    """`(resolved, hint)`: `resolved` is False when the annotations have unresolvable forward references."""
    try:
        hint = typing.get_type_hints(function).get("return")
    except Exception:  # unresolvable forward references: fall back to inferred types
        return False, None
    return True, _useful_hint(hint)


def _useful_hint(hint: Any) -> Any:
    if hint is None or hint is type(None):
        return None
    origin = typing.get_origin(hint)
    if origin is Coroutine or (isinstance(origin, type) and issubclass(origin, Coroutine)):
        return None
    return hint


def _refuse_unstorable(
    function: Callable[..., Any], hint: Any, *, decorator: str, codec: Codec | None, allow_pickle: bool | None
) -> None:
    """Raise `ConfigurationError` when the default codec cannot store what `function` is annotated to return."""
    if hint is None or codec is not None or allow_pickle:
        return
    unstorable = unstorable_type(hint)
    if unstorable is None:
        return
    if allow_pickle is None and _config.current_settings().allow_pickle:
        return
    name = getattr(unstorable, "__qualname__", None) or repr(unstorable)
    module = getattr(unstorable, "__module__", "builtins")
    shown = name if module == "builtins" else f"{module}.{name}"
    options = (
        "pass codec=YourCodec() (encode(value) -> (format, bytes), decode(format, bytes)), or opt in to "
        "pickle with @checkpoint(allow_pickle=True)"
        if decorator == "checkpoint"
        else "opt in to pickle with configure(allow_pickle=True) or KITARU_ALLOW_PICKLE=true"
    )
    raise ConfigurationError(
        f"@{decorator} {function.__module__}.{function.__qualname__} is annotated to return "
        f"{_typing_repr(hint)}, and the default codec cannot store {shown}: its output could not be "
        "recorded after the body ran. Return a storable type (JSON values, bytes, Decimal, datetimes, UUID, "
        f"tuples, sets, Enums, pydantic models, dataclasses; see 'What can be stored'), {options}."
    )


def _typing_repr(hint: Any) -> str:
    """A short text for an annotation: `int`, `dict[str, float]`, `myapp.Quote`."""
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__qualname__ if hint.__module__ == "builtins" else f"{hint.__module__}.{hint.__qualname__}"
    return repr(hint).replace("typing.", "")


def entry_point_of(function: Callable[..., Any]) -> str | None:
    """Where `Client.resume` can find `function` again: `module:qualname` or `file:PATH:qualname`."""
    qualname = function.__qualname__
    if "<locals>" in qualname:
        return None
    module = function.__module__
    if module == "__main__":
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        if not main_file:
            return None
        return f"{FILE_ENTRY_PREFIX}{Path(main_file).resolve()}:{qualname}"
    return f"{module}:{qualname}"


# -- checkpoint ------------------------------------------------------------------------------------


class Checkpoint(Generic[P, R]):
    """A function whose calls inside an execution are checkpoint calls (see `checkpoint`)."""

    def __init__(
        self,
        function: Callable[P, R],
        *,
        name: str | None,
        kind: Kind,
        retry: RetryPolicy | None,
        on_divergence: OnDivergence,
        allow_pickle: bool | None,
        codec: Codec | None,
        discriminator: Callable[..., str] | None,
        on_interrupted: OnInterrupted | None = None,
    ) -> None:
        if on_interrupted is not None:
            check_on_interrupted(on_interrupted, f"@checkpoint on {function.__qualname__}")
        self.function = function
        self.name = name or function.__name__
        self.kind: Kind = kind
        self.retry = retry
        self.on_divergence: OnDivergence = on_divergence
        self.allow_pickle = allow_pickle
        self.codec = codec
        self.discriminator = discriminator
        self.on_interrupted: OnInterrupted | None = on_interrupted
        self.is_async = inspect.iscoroutinefunction(function)
        functools.update_wrapper(self, function)
        resolved, hint = _resolve_return_hint(function)
        if resolved:  # else: forward references resolved (and checked) at the first call
            self._check(hint)
            self.__dict__["_type_hint"] = hint

    def _check(self, hint: Any) -> None:
        _refuse_unstorable(
            self.function, hint, decorator="checkpoint", codec=self.codec, allow_pickle=self.allow_pickle
        )

    @functools.cached_property
    def _type_hint(self) -> Any:
        hint = _return_hint(self.function)
        self._check(hint)
        return hint

    @functools.cached_property
    def _signature(self) -> inspect.Signature | None:
        try:
            return inspect.signature(self.function)
        except (TypeError, ValueError):
            return None

    @functools.cached_property
    def _simple_parameters(self) -> tuple[tuple[str, ...], tuple[Any, ...]] | None:
        """`(names, defaults)` when every parameter is plain positional-or-keyword, else `None`.

        `defaults` holds one entry per name (`inspect.Parameter.empty` when it has none). Such a
        signature binds positional arguments by position alone: `_inputs` then skips `bind`.
        """
        signature = self._signature
        if signature is None:
            return None
        parameters = list(signature.parameters.values())
        if any(parameter.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD for parameter in parameters):
            return None
        return tuple(parameter.name for parameter in parameters), tuple(p.default for p in parameters)

    def _inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The arguments by parameter name, defaults applied (`self`/`cls` left out), for the fingerprint."""
        simple = self._simple_parameters
        if simple is not None and not kwargs and len(args) <= len(simple[0]):
            names, defaults = simple
            if len(args) == len(names) and "self" not in names and "cls" not in names:
                return dict(zip(names, args, strict=True))  # every argument given by position
            empty = inspect.Parameter.empty
            if all(default is not empty for default in defaults[len(args) :]):  # else: bind raises below
                inputs = dict(zip(names, args, strict=False))  # args may stop before the defaults
                for name, default in zip(names[len(args) :], defaults[len(args) :], strict=True):
                    inputs[name] = default
                inputs.pop("self", None)
                inputs.pop("cls", None)
                return inputs
        signature = self._signature
        if signature is None:
            return (args, kwargs)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return (args, kwargs)  # the call itself will raise the TypeError
        bound.apply_defaults()
        return {name: value for name, value in bound.arguments.items() if name not in {"self", "cls"}}

    def _options(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        return {
            "inputs": self._inputs(args, kwargs),
            "discriminator": self.discriminator(*args, **kwargs) if self.discriminator else None,
            "kind": self.kind,
            "codec": self.codec,
            "type_hint": self._type_hint,
            "allow_pickle": self.allow_pickle,
            "on_divergence": self.on_divergence,
            "retry": self.retry,
            "on_interrupted": self.on_interrupted,
        }

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the checkpoint: served from the store when already completed with the same inputs."""
        if self.is_async:
            return self._call_async(*args, **kwargs)  # type: ignore[return-value]
        type_hint = self._type_hint  # resolved and checked at the first call, in an execution or not
        if _current.get() is None:
            return self.function(*args, **kwargs)
        # `run_checkpoint` without its keyword plumbing: this is every `@checkpoint` call's path.
        plan, stored = plan_call(
            self.name,
            self.discriminator(*args, **kwargs) if self.discriminator else None,
            self.kind,
            self._inputs(args, kwargs),
            self.codec,
            type_hint,
            self.allow_pickle,
            self.on_divergence,
            None,
            self.retry,
            self.on_interrupted,
        )
        if plan is None:
            return stored
        return run_planned(plan, self.function, args, kwargs, None)

    async def _call_async(self, *args: Any, **kwargs: Any) -> Any:
        return await run_checkpoint_async(
            self.name,
            self.function,  # type: ignore[arg-type]
            *args,
            **self._options(args, kwargs),
            **kwargs,
        )

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        return functools.partial(self.__call__, instance)


@overload
def checkpoint(function: Callable[P, R], /) -> Checkpoint[P, R]: ...


@overload
def checkpoint(
    *,
    name: str | None = None,
    kind: Kind = "user",
    retry: RetryPolicy | None = None,
    on_divergence: OnDivergence = "rerun",
    allow_pickle: bool | None = None,
    codec: Codec | None = None,
    discriminator: Callable[..., str] | None = None,
    on_interrupted: OnInterrupted | None = None,
) -> Callable[[Callable[P, R]], Checkpoint[P, R]]: ...


def checkpoint(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    kind: Kind = "user",
    retry: RetryPolicy | None = None,
    on_divergence: OnDivergence = "rerun",
    allow_pickle: bool | None = None,
    codec: Codec | None = None,
    discriminator: Callable[..., str] | None = None,
    on_interrupted: OnInterrupted | None = None,
) -> Any:
    """Mark a function (sync or async) whose calls are durable checkpoint calls.

    Inside an execution, each call gets a stable key (its scope, its name and a discriminator:
    the occurrence count, or what `discriminator` returns), a fingerprint of its arguments, and
    its output is committed to the store before it returns. On resume a completed call with the
    same fingerprint returns the stored output without running. Outside an execution the
    function runs as if undecorated.

    Args:
        function: The function, when used as `@checkpoint` without parentheses.
        name: Name in keys and the timeline; default: the function's name.
        kind: `user` (default), `model`, `tool` or `mcp`.
        retry: Retry policy for exceptions the function raises.
        on_divergence: `"rerun"`: run again when the arguments differ from the stored call (the old
            record is kept as superseded); `"error"`: raise `DivergenceError`.
        allow_pickle: Store outputs the default codec cannot store with pickle (off by default;
            `None`: the global setting).
        codec: A custom `Codec` for the output. The default, `JsonCodec`, serves exactly the
            value the function returned (same value, same type; see "What can be stored").
        discriminator: Computes a stable discriminator from the call's arguments, for calls made
            concurrently (threads, asyncio tasks) whose order may change between runs.
        on_interrupted: What a later run does when the runner stopped inside this function's body
            (a crash while it ran): `"retry"` runs it again; `"ask"` stops the execution at a wait
            where a person chooses to run it again or gives its result; `"fail"` fails the
            execution with `InterruptedCallError` until somebody answers that wait. Default:
            `configure(on_interrupted=...)`, itself `"retry"`.

    Returns:
        A `Checkpoint` wrapping the function, or a decorator that makes one.

    Raises:
        ConfigurationError: The return annotation names a type the default codec cannot store
            (e.g. a plain class, a `Callable`, an `Iterator`) and neither `codec` nor
            `allow_pickle` is given. An annotation with a forward reference that cannot be
            resolved yet is checked at the first call instead, before the body runs.

    Example:
        ```python
        @checkpoint(retry=RetryPolicy(max_attempts=3))
        def fetch_invoice(invoice_id: str) -> dict[str, str]:
            return billing_api.get(invoice_id)
        ```
    """

    def decorate(target: Callable[..., Any]) -> Checkpoint[..., Any]:
        return Checkpoint(
            target,
            name=name,
            kind=kind,
            retry=retry,
            on_divergence=on_divergence,
            allow_pickle=allow_pickle,
            codec=codec,
            discriminator=discriminator,
            on_interrupted=on_interrupted,
        )

    if function is not None:
        return decorate(function)
    return decorate


# -- executions ------------------------------------------------------------------------------------


def _inputs_for_storage(inputs: Any) -> tuple[Any, tuple[str, bytes] | None]:
    """(value to fingerprint, stored value) for flow inputs; `(None, None)` when not storable as JSON."""
    from kitaru_core.errors import SerializationError

    try:
        format_, payload = JsonCodec().encode(inputs)
    except SerializationError:
        return None, None
    return inputs, (format_, payload)


def _stored_inputs_value(stored_inputs: tuple[str, bytes] | None) -> StoredValue | None:
    if stored_inputs is None:
        return None
    format_, payload = stored_inputs
    return StoredValue(format_, payload, None, len(payload))


class SyncOrAsync(Generic[T_co]):
    """A context manager for both `with` (blocking) and `async with` (store I/O off the event loop)."""

    def __init__(
        self,
        sync: Callable[[], AbstractContextManager[T_co]],
        async_: Callable[[], AbstractAsyncContextManager[T_co]],
    ) -> None:
        self._make_sync = sync
        self._make_async = async_
        self._sync: AbstractContextManager[T_co] | None = None
        self._async: AbstractAsyncContextManager[T_co] | None = None

    def __enter__(self) -> T_co:
        self._sync = self._make_sync()
        return self._sync.__enter__()

    def __exit__(self, error_type: Any, error: BaseException | None, traceback: Any) -> bool | None:
        assert self._sync is not None
        return self._sync.__exit__(error_type, error, traceback)

    async def __aenter__(self) -> T_co:
        self._async = self._make_async()
        return await self._async.__aenter__()

    async def __aexit__(self, error_type: Any, error: BaseException | None, traceback: Any) -> bool | None:
        assert self._async is not None
        return await self._async.__aexit__(error_type, error, traceback)


def execution(
    execution_id: str | None = None,
    *,
    name: str = "execution",
    inputs: Any = None,
    fresh: bool = False,
    entry_point: str | None = None,
) -> SyncOrAsync[CurrentExecution]:
    """Run the code inside as a named, resumable execution (`with`, or `async with` in async code).

    With `async with` the store I/O of opening and closing the run (and of the checkpoint calls
    made through `run_checkpoint_async`) runs on a worker thread, so the event loop never waits
    for the database or the artifact store.

    Args:
        execution_id: The execution's id, an idempotency key (e.g. `"ticket-42"`).
        name: What the execution runs, shown in listings (the flow name).
        inputs: JSON-able inputs identifying the execution when no id is given.
        fresh: Always start a new execution.
        entry_point: `module:function` of an importable `@flow` that resumes it (for the CLI).

    Returns:
        A context manager that gives a frozen view of the running execution
        (`CurrentExecution`: its `execution_id` names it); see `_execution` for what it does.

    Raises:
        ExecutionLockedError: Another live runner holds the execution.
        ExecutionWaitingError: The code inside stopped at a wait (the execution is `waiting`).
        ExecutionCancelledError: The execution was cancelled.
        ConfigurationError: Nested inside another execution with a different id.
    """
    options: dict[str, Any] = {"name": name, "inputs": inputs, "fresh": fresh, "entry_point": entry_point}
    return SyncOrAsync(
        lambda: _execution(execution_id, **options), lambda: _execution_async(execution_id, **options)
    )


def _joined(execution_id: str | None) -> CurrentExecution | None:
    """The execution already running here, which a nested `execution()` joins; `None` outside one.

    Raises:
        ConfigurationError: `execution_id` names another execution (executions do not nest).
    """
    active = current_execution()
    if active is None:
        return None
    if execution_id is not None and execution_id != active.execution_id:
        raise ConfigurationError(
            f"Cannot start execution {execution_id!r} inside execution {active.execution_id!r}: "
            "executions do not nest. Call the inner code directly, or run it as a separate flow."
        )
    return CurrentExecution.of(active)


def _open(
    execution_id: str | None, name: str, inputs: Any, fresh: bool, entry_point: str | None
) -> tuple[Store, ExecutionRecord]:
    """Find or create the execution `execution()` runs (blocking store I/O)."""
    fingerprint_input, stored_inputs = _inputs_for_storage(inputs) if inputs is not None else (None, None)
    return open_or_find(
        execution_id,
        flow_name=name,
        entry_point=entry_point,
        inputs=fingerprint_input,
        inputs_value=_stored_inputs_value(stored_inputs),
        fresh=fresh,
    )


@asynccontextmanager
async def _execution_async(
    execution_id: str | None,
    *,
    name: str,
    inputs: Any,
    fresh: bool,
    entry_point: str | None,
) -> AsyncGenerator[CurrentExecution]:
    """`_execution` for `async with`: the same run, its store I/O on worker threads."""
    active = _joined(execution_id)
    if active is not None:
        yield active
        return
    store, record = await off_loop(None, _open, execution_id, name, inputs, fresh, entry_point)
    async with ExecutionRun(store, record.id, resumable_by_cli=entry_point is not None) as context:
        yield CurrentExecution.of(context)


@contextmanager
def _execution(
    execution_id: str | None = None,
    *,
    name: str = "execution",
    inputs: Any = None,
    fresh: bool = False,
    entry_point: str | None = None,
) -> Generator[CurrentExecution]:
    """Run the code inside as a named, resumable execution.

    Framework calls made inside (agent runs of durable agents, checkpoints, waits) are recorded
    in this execution. Entering it again with the same id after a crash or a wait resumes it:
    completed calls are served from the store. Without an id, an unfinished execution of the same
    `name` and `inputs` is resumed, unless `fresh=True`.

    Args:
        execution_id: The execution's id, an idempotency key (e.g. `"ticket-42"`).
        name: What the execution runs, shown in listings (the flow name).
        inputs: JSON-able inputs identifying the execution when no id is given.
        fresh: Always start a new execution.
        entry_point: `module:function` of an importable `@flow` that resumes it (for the CLI).

    Yields:
        A frozen view of the running execution (`CurrentExecution`: its `execution_id` names it).

    Raises:
        ExecutionLockedError: Another live runner holds the execution.
        ExecutionWaitingError: The code inside stopped at a wait (the execution is `waiting`).
        ExecutionCancelledError: The execution was cancelled.
        ConfigurationError: Nested inside another execution with a different id.
    """
    active = _joined(execution_id)
    if active is not None:
        yield active
        return
    store, record = _open(execution_id, name, inputs, fresh, entry_point)
    with ExecutionRun(store, record.id, resumable_by_cli=entry_point is not None) as context:
        yield CurrentExecution.of(context)


_named_run: contextvars.ContextVar[str | None] = contextvars.ContextVar("kitaru_named_run", default=None)

TURN_SEPARATOR = "~"
"""Joins a run identity's execution id and a turn number: `ticket-42`, `ticket-42~2`, `ticket-42~3`..."""


@contextmanager
def named_run(execution_id: str) -> Generator[None]:
    """Name the identity of the top-level adapter runs started inside this block.

    A run that names its identity follows the re-run rule (see `durable_run`): run again with
    the same input after it completed, it is served from the store (no model request, no tool
    run); after a crash, failure or wait it resumes; with another input it is a new turn, a new
    execution `{execution_id}~2`, `~3`... linked to the identity. Named by a prepared replay's id
    (`Client.replay(..., run=False)`), a run with the inputs the replay stored runs that replay.

    Args:
        execution_id: The identity, used as the first turn's execution id (e.g. `"ticket-42"`).

    Yields:
        Nothing; runs of durable agents inside the block use the identity.

    Raises:
        InvalidIdError: `execution_id` breaks the id rule (empty, over 200 characters, control
            characters; see `kitaru_core._ids`).
    """
    check_execution_id(execution_id)
    token = _named_run.set(execution_id)
    try:
        yield
    finally:
        _named_run.reset(token)


def _turn_id(base: str, turn: int) -> str:
    return base if turn == 1 else fit_name(f"{base}{TURN_SEPARATOR}{turn}")


def _latest_turn(base: str) -> int:
    """The highest turn number with an execution under `base` (0: none), in O(log turns) lookups."""
    store = get_store()

    def exists(turn: int) -> bool:
        return store.find_execution(_turn_id(base, turn)) is not None

    if not exists(1):
        return 0
    low, high = 1, 2
    while exists(high):  # turns are numbered without gaps: gallop, then bisect
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if exists(middle):
            low = middle
        else:
            high = middle
    return low


def identity_execution_id(base: str, inputs: Any) -> str:
    """The execution a run under the identity `base` with these inputs belongs to (the re-run rule).

    The latest turn under the identity is returned when it had the same inputs, or when the run
    names no inputs (a framework's restore by id, such as CrewAI's `kickoff(inputs={"id": ...})`):
    it is then served if completed, resumed otherwise. Otherwise a new turn's id.

    Args:
        base: The identity's first execution id.
        inputs: The run's JSON-able inputs, or `None` to continue the latest turn.

    Returns:
        The execution id to open.
    """
    latest = _latest_turn(base)
    if latest == 0:
        return base
    if inputs is None:
        return _turn_id(base, latest)
    fingerprint_input, stored = _inputs_for_storage(inputs)
    wanted = fingerprint(fingerprint_input) if fingerprint_input is not None else None
    record = get_store().get_execution(_turn_id(base, latest))
    if wanted is not None and record.inputs_fingerprint == wanted:
        return record.id
    if _replay_with_inputs(record, stored):
        return record.id
    return _turn_id(base, latest + 1)


def _replay_with_inputs(record: ExecutionRecord, stored: tuple[str, bytes] | None) -> bool:
    """Whether `record` is a replay (`Client.replay`) whose stored inputs are these.

    A replay stores no inputs fingerprint (so an anonymous re-run never picks it up); a run that
    names the replay's id (`named_run(new_id)`) with the inputs it stored is that replay: a
    prepared replay of a top-level adapter run, which has no `@flow` to resume it, runs this way.
    """
    return (
        record.replay_of is not None
        and record.inputs_fingerprint is None
        and stored is not None
        and (record.inputs_format, record.inputs) == stored
    )


def durable_run(
    name: str, *, inputs: Any = None, execution_id: str | None = None, identity: str | None = None
) -> SyncOrAsync[str]:
    """Mark one top-level run of an agent, crew or graph (used by adapters); `with` or `async with`.

    See `_durable_run` for the rule; `async with` does the same with its store I/O on worker
    threads (adapters use it on their async paths, so the event loop never waits for the store).

    Args:
        name: The agent's name, e.g. `pydantic_ai:support_agent`.
        inputs: JSON-able inputs of the run (prompt, history...) identifying it for resume.
        execution_id: The run's explicit identity: its first turn's execution id.
        identity: An identity the framework names (a session id, a thread id).

    Returns:
        A context manager that gives the id of the execution the run belongs to.
    """
    return SyncOrAsync(
        lambda: _durable_run(name, inputs=inputs, execution_id=execution_id, identity=identity),
        lambda: _durable_run_async(name, inputs=inputs, execution_id=execution_id, identity=identity),
    )


def _run_identity(name: str, inputs: Any, execution_id: str | None, identity: str | None) -> str | None:
    """The identity base of a top-level run (`None`: anonymous); see `_durable_run`."""
    base = check_execution_id(execution_id) if execution_id is not None else _named_run.get()
    if base is None and identity is not None:
        digest = hashlib.sha256(f"{name}\x00{identity}".encode()).hexdigest()[:24]
        base = f"run-{digest}"
    return base


@asynccontextmanager
async def _durable_run_async(
    name: str, *, inputs: Any, execution_id: str | None, identity: str | None
) -> AsyncGenerator[str]:
    """`_durable_run` for `async with`: the turn lookup and the run's store I/O on worker threads."""
    active = current_execution()
    if active is not None:
        with scope(name):
            yield active.execution_id
        return
    base = _run_identity(name, inputs, execution_id, identity)
    resolved = await off_loop(None, identity_execution_id, base, inputs) if base is not None else None
    async with _execution_async(resolved, name=name, inputs=inputs, fresh=False, entry_point=None) as context:
        yield context.execution_id


@contextmanager
def _durable_run(
    name: str, *, inputs: Any = None, execution_id: str | None = None, identity: str | None = None
) -> Generator[str]:
    """Mark one top-level run of an agent, crew or graph (used by adapters).

    Outside any execution it opens one; inside an execution it opens a stable scope so the run's
    calls get their own keys. Which execution it opens follows the re-run rule:

    - A run that names its identity (`execution_id`, `identity`, or an enclosing `named_run`)
      is served when the latest run under that identity had the same inputs and completed (its
      execution is entered again and every call is served from the store); it resumes when that
      run crashed, failed or is waiting; with other inputs it is a new turn: a new execution
      `{id}~2`, `~3`... linked to the identity.
    - An anonymous run resumes the unfinished (crashed, failed, waiting) execution of the same
      `name` and `inputs`, and is a new execution otherwise.

    `current_execution().served_completed` tells the adapter when the run is a served re-run of
    a completed execution (so it can avoid side effects outside checkpoint calls, such as
    appending to a conversation session again).

    Args:
        name: The agent's name, e.g. `pydantic_ai:support_agent`.
        inputs: JSON-able inputs of the run (prompt, history...) identifying it for resume. A run
            that names its identity and passes `None` continues the identity's latest turn.
        execution_id: The run's explicit identity: its first turn's execution id.
        identity: An identity the framework names (a session id, a thread id); the first turn's
            execution id is derived from `name` and it (a hash, so any string is safe).

    Yields:
        The id of the execution the run belongs to.
    """
    active = current_execution()
    if active is not None:
        with scope(name):
            yield active.execution_id
        return
    base = _run_identity(name, inputs, execution_id, identity)
    resolved = identity_execution_id(base, inputs) if base is not None else None
    with _execution(resolved, name=name, inputs=inputs) as context:
        yield context.execution_id


# -- flows -----------------------------------------------------------------------------------------


class Flow(Generic[P, R]):
    """A function whose calls are durable executions (see `flow`)."""

    def __init__(
        self,
        function: Callable[P, R],
        *,
        name: str | None,
        budget: Budget | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.function = function
        self.name = name or function.__qualname__
        self.budget = _checked_budget(budget, f"@flow on {function.__qualname__}")
        self.retry = retry
        """How a worker retries a failed execution of this flow (`ExecutionRetryPolicy`); `None`: never."""
        self.is_async = inspect.iscoroutinefunction(function)
        self.signature = inspect.signature(function)
        functools.update_wrapper(self, function)
        resolved, hint = _resolve_return_hint(function)
        if resolved:  # else: forward references resolved (and checked) at the first call
            _refuse_unstorable(function, hint, decorator="flow", codec=None, allow_pickle=None)
            self.__dict__["_type_hint"] = hint

    @functools.cached_property
    def entry_point(self) -> str | None:
        """Where the CLI finds this flow to resume it, or `None` when it is not importable."""
        return entry_point_of(self.function)

    @functools.cached_property
    def _type_hint(self) -> Any:
        hint = _return_hint(self.function)
        _refuse_unstorable(self.function, hint, decorator="flow", codec=None, allow_pickle=None)
        return hint

    def bind_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The flow's arguments by parameter name, with defaults applied."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def decode_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Validate stored JSON inputs into the parameters' annotated types (used by resume)."""
        from pydantic import TypeAdapter

        try:
            hints = typing.get_type_hints(self.function)
        except Exception:
            hints = {}
        return {
            name: TypeAdapter(hints[name]).validate_python(value) if name in hints else value
            for name, value in inputs.items()
        }

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the flow durably: resumes an unfinished execution with the same inputs."""
        return self.run(*args, **kwargs)  # type: ignore[arg-type]

    def run(self, *args: Any, execution_id: str | None = None, fresh: bool = False, **kwargs: Any) -> R:
        """Run the flow with options.

        Args:
            *args: The flow's positional arguments.
            execution_id: Explicit execution id (an idempotency key): a completed execution with this
                id returns its stored output without running; an unfinished one is resumed.
            fresh: Start a new execution even if an unfinished one has the same inputs.
            **kwargs: The flow's keyword arguments.

        Returns:
            The flow's output (a coroutine for async flows).

        Raises:
            ExecutionWaitingError: The flow stopped at a wait.
            ExecutionLockedError: Another live runner holds the execution.
            ExecutionCancelledError: The execution was cancelled.
        """
        if self.is_async:
            return self._run_async(args, kwargs, execution_id, fresh)  # type: ignore[return-value]
        if current_execution() is not None:
            with scope(f"flow:{self.name}"), _budget_scope(self.budget):
                return self.function(*args, **kwargs)
        run, stored = self._prepare(args, kwargs, execution_id, fresh)
        if run is None:
            return stored
        with run, _budget_scope(self.budget):
            result = self.function(*args, **kwargs)
            run.output = self._store_output(run, result)
        return result

    async def _run_async(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], execution_id: str | None, fresh: bool
    ) -> Any:
        if current_execution() is not None:
            with scope(f"flow:{self.name}"), _budget_scope(self.budget):
                return await self.function(*args, **kwargs)  # type: ignore[misc]
        run, stored = await off_loop(None, self._prepare, args, kwargs, execution_id, fresh)
        if run is None:
            return stored
        async with run:
            with _budget_scope(self.budget):
                result = await self.function(*args, **kwargs)  # type: ignore[misc]
            run.output = await off_loop(current_execution(), self._store_output, run, result)
        return result

    def submit(self, *args: Any, execution_id: str | None = None, queue: str = "default", **kwargs: Any) -> str:
        """Queue an execution of the flow for a worker (`kitaru-adapters worker`) and return its id.

        Nothing runs here: the execution is stored `queued` with its inputs, and a worker taking
        `queue` runs it in a child process (importing the flow from its entry point).

        Args:
            *args: The flow's positional arguments (stored as JSON).
            execution_id: Explicit execution id (an idempotency key): submitting an id that exists
                returns it unchanged and queues nothing. Default: a new generated id.
            queue: The worker queue, e.g. `"default"` or `"emails"` (same rule as execution ids).
            **kwargs: The flow's keyword arguments (stored as JSON).

        Returns:
            The execution's id.

        Raises:
            ConfigurationError: The flow is not importable (defined inside a function), its inputs
                cannot be stored as JSON, or the id belongs to another flow.
            InvalidIdError: `execution_id` or `queue` is not a valid name.
        """
        return submit_flow(self, args, kwargs, execution_id=execution_id, queue=queue)

    def _codec(self) -> Codec:
        return JsonCodec(type_hint=self._type_hint, allow_pickle=_config.current_settings().allow_pickle)

    def _store_output(self, run: ExecutionRun, result: Any) -> Any:
        return run.store.prepare_value(*self._codec().encode(result))

    def _prepare(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], execution_id: str | None, fresh: bool
    ) -> tuple[ExecutionRun | None, Any]:
        inputs = self.bind_inputs(args, kwargs)
        fingerprint_input, stored_inputs = _inputs_for_storage(inputs)
        store, record = open_or_find(
            execution_id,
            flow_name=self.name,
            entry_point=self.entry_point,
            inputs=fingerprint_input,
            inputs_value=_stored_inputs_value(stored_inputs),
            fresh=fresh,
        )
        if record.status == "completed":
            return None, decode_stored(store, record.output, self._codec())
        return ExecutionRun(store, record.id, resumable_by_cli=self.entry_point is not None), None


@overload
def flow(function: Callable[P, R], /) -> Flow[P, R]: ...


@overload
def flow(
    *, name: str | None = None, budget: Budget | None = None, retry: RetryPolicy | None = None
) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    budget: Budget | None = None,
    retry: RetryPolicy | None = None,
) -> Any:
    """Mark a function (sync or async) whose calls are durable executions.

    Calling the flow starts an execution, or resumes the unfinished (crashed, failed or waiting)
    execution of the same flow with the same inputs: completed checkpoint calls inside are served
    from the store and the first missing one runs live. Use `.run(..., execution_id="ticket-42")`
    for an explicit id (an idempotency key) and `.run(..., fresh=True)` to start over. A flow
    called inside another execution runs as part of it.

    Args:
        function: The function, when used as `@flow` without parentheses.
        name: The flow's name in the store; default: the function's qualified name. Keep it stable.
        budget: Limits on what the execution's model calls may spend (`Budget(usd=5.0)`): when one
            is reached, the run stops before the next model call at a durable wait named `budget`
            (see docs/concepts.md "Budgets"). Default: no budget.
        retry: How a worker retries a failed execution of this flow, later and from its stored
            calls (an `ExecutionRetryPolicy` retries by the class of the error: rate limits,
            timeouts, connection and server errors); default: never. A flow called directly
            raises its error to the caller as always; executions a worker runs are retried.

    Returns:
        A `Flow` wrapping the function, or a decorator that makes one.

    Raises:
        ConfigurationError: `budget` is not a `Budget`; or the return annotation names a type the
            default codec cannot store and pickle is not allowed (`configure(allow_pickle=True)`);
            checked at the first call when a forward reference cannot be resolved yet.
    """

    def decorate(target: Callable[..., Any]) -> Flow[..., Any]:
        return Flow(target, name=name, budget=budget, retry=retry)

    if function is not None:
        return decorate(function)
    return decorate


def _checked_budget(budget: Any, where: str) -> Budget | None:
    if budget is None:
        return None
    from kitaru_core._budgets import check_budget  # pydantic is imported only when budgets are used

    return check_budget(budget, where)


@contextmanager
def _budget_scope(budget: Budget | None) -> Generator[None]:
    if budget is None:  # the usual case: no import, no context variable
        yield
        return
    from kitaru_core._budgets import budget_scope

    with budget_scope(budget):
        yield


def submit_flow(
    flow_object: Flow[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    execution_id: str | None,
    queue: str,
    store: Store | None = None,
) -> str:
    """`Flow.submit` and `Client.submit`: store a `queued` execution of `flow_object` (in `store`, default: configured)."""
    check_queue_name(queue)
    if flow_object.entry_point is None:
        raise ConfigurationError(
            f"Flow {flow_object.name!r} cannot be submitted: a worker imports flows by their entry point, "
            "and this one is defined inside a function. Define it at module level."
        )
    inputs = flow_object.bind_inputs(args, kwargs)
    fingerprint_input, stored_inputs = _inputs_for_storage(inputs)
    if stored_inputs is None:
        raise ConfigurationError(
            f"The inputs of flow {flow_object.name!r} cannot be stored as JSON, so a worker could not get "
            "them: submit JSON-able arguments (ids, strings, numbers, lists, dicts, pydantic models)."
        )
    _, record = open_or_find(
        execution_id,
        flow_name=flow_object.name,
        entry_point=flow_object.entry_point,
        inputs=fingerprint_input,
        inputs_value=_stored_inputs_value(stored_inputs),
        fresh=execution_id is None,
        queue=queue,
        store=store,
    )
    if record.status == "queued":
        from kitaru_core._workers import notify_workers

        notify_workers(store or get_store(), queue)  # listening workers take it at once
    return record.id
