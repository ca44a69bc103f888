"""Errors raised by kitaru_core and its adapters.

Every error a caller may catch derives from `KitaruError`. Control-flow signals that must unwind
agent code (a wait that suspends the execution, a cancellation) derive from `BaseException` so an
agent's `except Exception:` cannot swallow them; they are private to the runtime and are turned
into a public error at the edge of an execution.

```
Exception
└── KitaruError
    ├── ConfigurationError          misuse: bad arguments, a call outside an execution, bad config
    │   └── InvalidIdError          an execution id or wait name breaks the id grammar (also a ValueError)
    ├── MissingDependencyError      also an ImportError: an optional extra is not installed
    ├── StoreError                  the metadata or artifact store failed or holds a corrupt record
    │   └── MigrationError          the database schema is newer than this version understands
    ├── SerializationError          a value could not be stored or loaded safely
    ├── DivergenceError             a stored call's inputs differ and `on_divergence="error"`
    ├── InterruptedCallError        a call with `on_interrupted="fail"` was cut off inside its body
    ├── ExecutionError
    │   ├── ExecutionNotFoundError  no execution with that id
    │   ├── CallNotFoundError       no checkpoint call with that sequence number in the execution
    │   ├── ArtifactNotFoundError   no artifact of that name (or version) in the execution
    │   ├── ExecutionLockedError    another live runner holds the execution's lease
    │   ├── LeaseLostError          this runner's lease was taken over while it ran
    │   ├── ExecutionCancelledError the execution was cancelled
    │   ├── ExecutionFailedError    a stored execution failed (raised when resuming it is refused)
    │   └── ExecutionWaitingError   the execution stopped at a wait; says how to answer and resume
    ├── WaitError
    │   ├── WaitNotFoundError       no wait of that name in the execution
    │   ├── WaitAlreadyAnsweredError
    │   └── InvalidAnswerError      the answer does not match the wait's schema; the wait stays pending
    └── AdapterError                an agent framework adapter cannot do what was asked
```
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "AdapterError",
    "ArtifactNotFoundError",
    "CallNotFoundError",
    "ConfigurationError",
    "DivergenceError",
    "ExecutionCancelledError",
    "ExecutionError",
    "ExecutionFailedError",
    "ExecutionLockedError",
    "ExecutionNotFoundError",
    "ExecutionWaitingError",
    "InterruptedCallError",
    "InvalidAnswerError",
    "InvalidIdError",
    "KitaruError",
    "LeaseLostError",
    "MigrationError",
    "MissingDependencyError",
    "PendingWait",
    "SerializationError",
    "StoreError",
    "WaitAlreadyAnsweredError",
    "WaitError",
    "WaitNotFoundError",
]


class KitaruError(Exception):
    """Root of every error kitaru_core raises on purpose."""


class ConfigurationError(KitaruError):
    """The API was used in a way it does not support, or configuration is invalid."""


class InvalidIdError(ConfigurationError, ValueError):
    """An execution id or wait name breaks the id grammar (see `kitaru_core._ids`).

    Ids are 1 to 200 characters with no control or invisible characters and no white space at
    either end; the message says which rule was broken.
    """


class MissingDependencyError(KitaruError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f'{package} is not installed. Install it with: pip install "kitaru-adapters[{extra}]"'
        )


class StoreError(KitaruError):
    """The metadata store or the artifact store failed, or holds a record that cannot be read."""


class MigrationError(StoreError):
    """The store's schema cannot be brought to the version this code needs."""


class SerializationError(KitaruError):
    """A value cannot be serialized safely (JSON), or a stored value cannot be loaded back."""


class DivergenceError(KitaruError):
    """A stored checkpoint call's input fingerprint differs from the new call's inputs.

    Raised only for checkpoints declared with `on_divergence="error"`; by default a diverging call
    runs live and the old record is kept as superseded.

    Attributes:
        execution_id: The execution the call belongs to.
        call_key: The checkpoint call's stable key.
        stored_fingerprint: Fingerprint recorded when the call first ran.
        new_fingerprint: Fingerprint of the inputs given now.
    """

    def __init__(
        self, execution_id: str, call_key: str, stored_fingerprint: str, new_fingerprint: str
    ) -> None:
        self.execution_id = execution_id
        self.call_key = call_key
        self.stored_fingerprint = stored_fingerprint
        self.new_fingerprint = new_fingerprint
        super().__init__(
            f"Checkpoint call {call_key!r} of execution {execution_id!r} was recorded with other inputs "
            f"(stored fingerprint {stored_fingerprint[:12]}, now {new_fingerprint[:12]}). Start a fresh "
            "execution, or declare the checkpoint with on_divergence='rerun' to run it again."
        )


class InterruptedCallError(KitaruError):
    """A checkpoint call with `on_interrupted="fail"` started in an earlier run that never finished it.

    Its runner stopped inside the body (a crash, a kill, a lost machine), so the call may have acted.
    The execution ends `failed`; a person decides by answering the call's wait (run it again, or give
    its result), then resumes the execution.

    Attributes:
        execution_id: The execution.
        call_key: The checkpoint call's key.
        description: The call as a person reads it, e.g. `refund(order=42)`.
        started_at_epoch_s: When the interrupted attempt started (Unix seconds).
        wait_name: The wait whose answer resolves the call.
    """

    def __init__(
        self,
        execution_id: str,
        call_key: str,
        description: str,
        started_at_epoch_s: float,
        wait_name: str,
    ) -> None:
        self.execution_id = execution_id
        self.call_key = call_key
        self.description = description
        self.started_at_epoch_s = started_at_epoch_s
        self.wait_name = wait_name
        started = datetime.fromtimestamp(started_at_epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        answer = (
            f"kitaru-adapters executions answer {shlex.quote(execution_id)} {shlex.quote(wait_name)} --value"
        )
        super().__init__(
            f"Checkpoint call {description} (key {call_key!r}) of execution {execution_id!r} started at "
            f"{started} and its runner stopped inside it, so it may have acted; it is marked "
            'on_interrupted="fail", so it is not run again on its own. Check what it did, then either run '
            f"""it again: {answer} '{{"action": "retry"}}'  or give its result: {answer} """
            """'{"action": "result", "result": ...}'  and resume: """
            f"kitaru-adapters executions resume {shlex.quote(execution_id)} (or re-run the program)."
        )


class ExecutionError(KitaruError):
    """Base for errors about one execution.

    Attributes:
        execution_id: The execution concerned.
    """

    def __init__(self, execution_id: str, message: str) -> None:
        self.execution_id = execution_id
        super().__init__(message)


class ExecutionNotFoundError(ExecutionError):
    """No execution with the given id exists in the store."""

    def __init__(self, execution_id: str) -> None:
        super().__init__(
            execution_id,
            f"No execution {execution_id!r} in the store. List executions with: kitaru-adapters executions list",
        )


class CallNotFoundError(ExecutionError):
    """The execution has no checkpoint call with the given sequence number.

    Attributes:
        sequence: The sequence number asked for.
    """

    def __init__(self, execution_id: str, sequence: int) -> None:
        self.sequence = sequence
        super().__init__(
            execution_id,
            f"Execution {execution_id!r} has no checkpoint call #{sequence}. "
            f"Its timeline: kitaru-adapters executions show {execution_id}",
        )


class ExecutionLockedError(ExecutionError):
    """Another runner holds a live lease on the execution.

    Attributes:
        holder: `host:pid` of the runner holding the lease.
        lease_expires_in_s: Seconds until the lease expires unless it is renewed.
    """

    def __init__(self, execution_id: str, holder: str, lease_expires_in_s: float) -> None:
        self.holder = holder
        self.lease_expires_in_s = lease_expires_in_s
        super().__init__(
            execution_id,
            f"Execution {execution_id!r} is being run by {holder} (lease expires in "
            f"{lease_expires_in_s:.1f} s unless renewed). Only one runner may run an execution at a time; "
            "wait for it to finish, or cancel it with: "
            f"kitaru-adapters executions cancel {execution_id}",
        )


class LeaseLostError(ExecutionError):
    """This runner's lease expired and another runner took the execution over."""

    def __init__(self, execution_id: str) -> None:
        super().__init__(
            execution_id,
            f"Lost the lease on execution {execution_id!r}: another runner took it over, or this "
            "process could not renew it within the lease duration (it was paused, or the store was "
            "unreachable). This runner stops without starting or recording more calls; the execution "
            "continues with whichever runner holds the lease (or resumes when run again).",
        )


class ExecutionCancelledError(ExecutionError):
    """The execution was cancelled (by `Client.cancel` or the CLI) before or while it ran."""

    def __init__(self, execution_id: str, reason: str | None = None) -> None:
        self.reason = reason
        """Why, when the execution stopped itself (a budget wait answered `stop`), else `None`."""
        because = f" ({reason})" if reason else ""
        super().__init__(
            execution_id,
            f"Execution {execution_id!r} was cancelled{because}. Start a new one with fresh=True, or replay it "
            f"with: kitaru-adapters executions replay {execution_id}",
        )


class ExecutionFailedError(ExecutionError):
    """A stored execution failed; raised when its stored outcome is requested.

    Attributes:
        error_type: Qualified name of the exception type that failed the execution.
        error_message: Its message.
    """

    def __init__(self, execution_id: str, error_type: str, error_message: str) -> None:
        self.error_type = error_type
        self.error_message = error_message
        super().__init__(execution_id, f"Execution {execution_id!r} failed: {error_type}: {error_message}")


@dataclass(frozen=True)
class PendingWait:
    """A wait that has no answer yet, as reported by `ExecutionWaitingError`.

    Attributes:
        name: The wait's name, unique within its execution.
        question: The question shown to whoever answers.
        schema: JSON schema the answer must satisfy.
    """

    name: str
    question: str
    schema: dict[str, object]


class ExecutionWaitingError(ExecutionError):
    """The execution stopped at one or more waits and released its process.

    The execution's status is `waiting`. Answer each wait (CLI, `Client.answer` or the HTTP API),
    then resume by re-running the same code, or with `kitaru-adapters executions resume ID` when
    the entry point is an importable `@flow`.

    Attributes:
        waits: The pending waits, in the order they were reached.
        answer_commands: One shell command per wait that answers it (edit the JSON value).
        resume_command: The shell command that resumes the execution.
    """

    def __init__(self, execution_id: str, waits: Sequence[PendingWait], resumable_by_cli: bool) -> None:
        self.waits = list(waits)
        self.answer_commands = [
            f"kitaru-adapters executions answer {shlex.quote(execution_id)} {shlex.quote(wait.name)} "
            f"--value {_single_quoted(_example_answer(wait))}"
            for wait in self.waits
        ]
        self.resume_command = (
            f"kitaru-adapters executions resume {shlex.quote(execution_id)}"
            if resumable_by_cli
            else "re-run the same program (it resumes the unfinished execution)"
        )
        lines = [f"Execution {execution_id!r} is waiting for {len(self.waits)} answer(s):"]
        for wait, command in zip(self.waits, self.answer_commands, strict=True):
            lines.append(f"  - {wait.name}: {wait.question}")
            lines.append(f"    answer: {command}")
        lines.append(f"  then resume: {self.resume_command}")
        super().__init__(execution_id, "\n".join(lines))

    @property
    def wait_names(self) -> list[str]:
        """Names of the pending waits."""
        return [wait.name for wait in self.waits]


def _single_quoted(text: str) -> str:
    """`text` in single quotes for a POSIX shell, whatever it holds (JSON always looks the same)."""
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _example_answer(wait: PendingWait) -> str:
    schema = wait.schema
    if schema.get("title") == "ApprovalDecision":
        return '{"approved": true}'
    if schema.get("title") == "InterruptedCallAnswer":
        return '{"action": "retry"}'
    import json

    from kitaru_core._schema_example import example_for_schema

    return json.dumps(example_for_schema(dict(schema)), ensure_ascii=False)


class WaitError(KitaruError):
    """Base for errors about a wait.

    Attributes:
        execution_id: The execution the wait belongs to.
        wait_name: The wait's name.
    """

    def __init__(self, execution_id: str, wait_name: str, message: str) -> None:
        self.execution_id = execution_id
        self.wait_name = wait_name
        super().__init__(message)


class WaitNotFoundError(WaitError):
    """The execution has no wait with that name."""

    def __init__(self, execution_id: str, wait_name: str, known: Sequence[str]) -> None:
        super().__init__(
            execution_id,
            wait_name,
            f"Execution {execution_id!r} has no wait named {wait_name!r}. "
            f"Its waits: {', '.join(known) if known else 'none'}.",
        )


class WaitAlreadyAnsweredError(WaitError):
    """The wait already has an answer; answers are written once."""

    def __init__(self, execution_id: str, wait_name: str) -> None:
        super().__init__(
            execution_id,
            wait_name,
            f"Wait {wait_name!r} of execution {execution_id!r} is already answered; an answer is final.",
        )


class InvalidAnswerError(WaitError):
    """An answer does not satisfy the wait's schema. The wait stays pending.

    A replay's overridden answer that does not satisfy the schema raises it too; then the message
    says that no replay was created (the replayed execution's wait is not touched).

    Attributes:
        problems: One human-readable line per validation problem.
    """

    def __init__(
        self,
        execution_id: str,
        wait_name: str,
        problems: Sequence[str],
        *,
        outcome: str = "the wait stays pending",
    ) -> None:
        self.problems = list(problems)
        super().__init__(
            execution_id,
            wait_name,
            f"Answer refused for wait {wait_name!r} of execution {execution_id!r}; {outcome}. "
            + "Problems: "
            + "; ".join(self.problems),
        )


class AdapterError(KitaruError):
    """An agent-framework adapter cannot do what was asked (unsupported object or option)."""


class ArtifactNotFoundError(ExecutionError):
    """The execution has no artifact of that name, or not that version (`load`).

    Attributes:
        name: The artifact's name.
        version: The version asked for (`None`: the latest).
    """

    def __init__(self, execution_id: str, name: str, version: int | None, known: list[str]) -> None:
        self.name = name
        self.version = version
        what = f"artifact {name!r}" + (f" version {version}" if version is not None else "")
        shown = ", ".join(repr(item) for item in known[:20]) or "none"
        super().__init__(
            execution_id,
            f"Execution {execution_id!r} has no {what}. Its artifacts: {shown}. "
            f"List them with: kitaru-adapters executions artifacts {execution_id}",
        )
