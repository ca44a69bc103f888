"""Waits: durable questions a person, another agent or a webhook answers (`wait`, `wait_all`)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from kitaru_core import _config
from kitaru_core._context import ExecutionContext, _current, _scope
from kitaru_core._records import WaitRecord
from kitaru_core._signals import SuspendExecution
from kitaru_core.errors import ConfigurationError

logger = logging.getLogger(__name__)


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
    waiting = _Waiting.open(specs, timeout)
    waiting.load()
    while True:
        waiting.settle()
        if waiting.done:
            return waiting.values()
        time.sleep(waiting.pause_s())
        waiting.context.check_alive()
        waiting.refresh()


async def wait_all_async(specs: Sequence[WaitSpec], *, timeout: timedelta | float | None = None) -> list[Any]:
    """Ask several questions at once in async code; see `wait_all` and `wait_async`.

    `await wait_all_async([...])` records and takes the same waits as `wait_all`. Its store reads
    and writes run on the execution's I/O lane, in the order reached; a question asked at a
    terminal runs on a thread of its own; between polls the task sleeps with `asyncio.sleep`.

    Args:
        specs: The questions (`WaitSpec`s).
        timeout: Seconds (or a `timedelta`) to poll for the answers before the execution
            suspends; `None`: suspend at once while one is missing.

    Returns:
        The answers, validated, in the order of `specs`.

    Raises:
        ConfigurationError: No execution runs here.
    """
    import asyncio

    from kitaru_core._async_io import off_loop

    waiting = _Waiting.open(specs, timeout)
    context = waiting.context
    await off_loop(context, waiting.load)
    while True:
        # a terminal question blocks until somebody types: not on the lane, which it would hold up
        await off_loop(None if waiting.interactive else context, waiting.settle)
        if waiting.done:
            return waiting.values()
        await asyncio.sleep(waiting.pause_s())
        context.check_alive()
        await off_loop(context, waiting.refresh)


@dataclass
class _Waiting:
    """The questions of one `wait_all` while it runs: each step is a blocking call or a pure one."""

    context: ExecutionContext
    open_waits: list[_OpenWait]
    deadline: float
    interactive: bool

    @classmethod
    def open(cls, specs: Sequence[WaitSpec], timeout: timedelta | float | None) -> _Waiting:
        """Name the waits in the order reached (no I/O).

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
        timeout_s = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        deadline = time.monotonic() + (timeout_s or 0.0)
        return cls(context, open_waits, deadline, _interactive(context.settings))

    @property
    def done(self) -> bool:
        """Whether every wait has a valid answer."""
        return all(item.done for item in self.open_waits)

    def values(self) -> list[Any]:
        """The validated answers, in the order asked."""
        return [item.value for item in self.open_waits]

    def load(self) -> None:
        """Read the waits' records: as loaded at the start of the run if answered, else from the store."""
        store = self.context.store
        for item in self.open_waits:
            cached = self.context.cached_wait(item.name)
            item.record = (
                cached
                if cached is not None and cached.status == "answered"
                else store.find_wait(self.context.execution_id, item.name)
            )

    def settle(self) -> None:
        """Take the valid answers, record the new waits, ask at the terminal once (blocking I/O)."""
        for item in self.open_waits:
            if not item.done:
                item.settle(self.context, self.interactive)

    def pause_s(self) -> float:
        """Seconds to sleep before the next poll.

        Raises:
            SuspendExecution: The timeout has passed (not an `Exception`).
        """
        if time.monotonic() >= self.deadline:
            raise SuspendExecution(self.context.execution_id)
        return min(self.context.settings.wait_poll_interval_s, max(0.0, self.deadline - time.monotonic()))

    def refresh(self) -> None:
        """Read again the records of the waits not answered yet (blocking I/O)."""
        for item in self.open_waits:
            if not item.done:
                item.record = self.context.store.find_wait(self.context.execution_id, item.name)


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


async def wait_async(
    name: str | None = None,
    *,
    question: str,
    schema: Any = bool,
    timeout: timedelta | float | None = None,
    metadata: dict[str, Any] | None = None,
) -> Any:
    """Stop the execution until an answer arrives, in async code: the event loop is never blocked.

    `answer = await wait_async(...)` is the same wait as `wait` (same names, records and answers;
    an execution may mix both): its store I/O runs on the execution's I/O lane, a question asked at
    a terminal on a thread of its own, and the polling sleeps with `asyncio.sleep`.

    Args:
        name: The wait's name, unique within the execution (repeats get `-2`, `-3`...). Default:
            `wait-1`, `wait-2`... in the order reached.
        question: What to ask.
        schema: Type of the answer (any type pydantic validates).
        timeout: How long to poll the store for an answer before suspending: a `timedelta` or
            seconds as a float. `None`: do not poll.
        metadata: Small JSON-able facts stored with the wait (shown to whoever answers).

    Returns:
        The validated answer.

    Raises:
        ConfigurationError: Called outside an execution.
    """
    return (await wait_all_async([WaitSpec(name, question, schema, metadata)], timeout=timeout))[0]
