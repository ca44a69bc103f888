"""`Client`: read executions as timelines, answer waits, resume, replay, cancel, recover."""

from __future__ import annotations

import getpass
import hashlib
import hmac
import importlib.util
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from kitaru_core import _artifacts, _boundary, _config, _leases
from kitaru_core._api import FILE_ENTRY_PREFIX, Flow, submit_flow
from kitaru_core._budgets import BudgetView, budget_view
from kitaru_core._records import ArtifactRecord, AuditRecord
from kitaru_core._serialization import TYPED_FORMAT, JsonCodec, import_callable
from kitaru_core._store import CallRecord, ExecutionRecord, Store, WaitRecord, open_store
from kitaru_core.errors import (
    CallNotFoundError,
    ConfigurationError,
    ExecutionCancelledError,
    ExecutionError,
    ExecutionFailedError,
    ExecutionLockedError,
    InvalidAnswerError,
    SerializationError,
    StoreError,
)

PREVIEW_CHARACTERS = 200
Actor = tuple[str, str]
"""Who steers an execution: `(name, kind)`; kind `token` (HTTP API) or `os user` (CLI, Python)."""


def os_user() -> Actor:
    """The operating-system user running this process, as the audit trail records it."""
    try:
        return getpass.getuser(), "os user"
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return f"uid {os.getuid()}", "os user"


def question_digest(wait: WaitRecord) -> str:
    """SHA-256 of what a wait asks and where: execution, name, question, schema and metadata.

    The dashboard sends it back with an answer; the server refuses the answer when the wait it
    addresses is not the one that was shown.
    """
    document = [wait.execution_id, wait.name, wait.question, wait.schema, wait.details]
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def _time(epoch_s: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch_s, tz=UTC) if epoch_s is not None else None


def _call_status(call: CallRecord, latest_run: int, in_flight: bool) -> str:
    """A `started` record (`on_interrupted="ask"/"fail"`) is `running` while its runner lives, else `interrupted`."""
    if call.status != "started":
        return call.status
    return "running" if in_flight and call.run_number == latest_run else "interrupted"


class CallView(BaseModel):
    """One checkpoint call in an execution's timeline.

    Attributes:
        sequence: Order in which the call was recorded within the execution.
        key: Stable call key (scope/name:discriminator).
        name: Checkpoint name (`model_request`, `tool:lookup`, a function name...).
        kind: `model`, `tool`, `mcp`, `handoff` or `user`.
        status: `completed`, `failed`, `superseded`; for calls with `on_interrupted="ask"` or
            `"fail"` also `running` (its body runs now) or `interrupted` (its runner stopped inside
            the body; a wait named `interrupted:...` resolves it).
        source: In the latest run: `live` (ran then), `store` (served from the store) or
            `not reached` (recorded earlier, not reached by the latest run).
        run_number: The run of the execution that recorded it.
        duration_s: Seconds the live call took.
        attempts: Attempts made (retries + 1).
        model_name: Model that answered (model calls).
        input_tokens: Prompt tokens (model calls).
        output_tokens: Completion tokens (model calls).
        cost_usd: Cost in US dollars where a price is known.
        output_preview: The first characters of the stored output.
        output_size_bytes: Size of the stored output.
        error: `Type: message` of a failed call.
        error_traceback: The failed call's formatted traceback.
        details: Adapter facts (tool name, arguments...).
        metadata: What `log()` attached to the call.
    """

    sequence: int
    key: str
    name: str
    kind: str
    status: str
    source: Literal["live", "store", "not reached"]
    run_number: int
    duration_s: float
    attempts: int
    model_name: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    output_preview: str | None = None
    output_size_bytes: int | None = None
    error: str | None = None
    error_traceback: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)


class WaitView(BaseModel):
    """A wait of an execution.

    Attributes:
        execution_id: The execution it belongs to.
        name: Unique name within the execution (used to answer it).
        question: What is asked.
        schema_: JSON schema an answer must satisfy (`schema` in JSON output).
        status: `pending` or `answered`.
        answer: The answer, once given.
        refused_answers: Earlier answers that failed validation, with the problems found.
        metadata: Facts stored with the wait (tool name, arguments for approvals).
        created_at: When the wait was first reached.
        answered_at: When it was answered.
        answered_by: Who answered it: `NAME (token)` for the HTTP API, `USER (os user)` for the CLI
            and Python.
        question_digest: SHA-256 of the execution id, wait name, question, schema and metadata; send
            it with an answer (HTTP API) to have it refused if the wait is not the one you saw.
    """

    model_config = {"populate_by_name": True}

    execution_id: str
    name: str
    question: str
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")
    status: str
    answer: Any = None
    refused_answers: list[Any] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    answered_at: datetime | None = None
    answered_by: str | None = None
    question_digest: str = ""


class AuditEvent(BaseModel):
    """Who answered, resumed, cancelled or replayed an execution, and when.

    Attributes:
        action: `answer`, `resume`, `cancel` or `replay`.
        actor: The token's name (HTTP API) or the operating-system user (CLI, Python `Client`).
        actor_kind: `token` or `os user`.
        at: When.
        wait_name: The wait answered (`answer` only).
        details: More facts, e.g. the new execution of a `replay`.
    """

    action: str
    actor: str
    actor_kind: str
    at: datetime
    wait_name: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class Totals(BaseModel):
    """Token and cost totals of an execution.

    Attributes:
        model_calls: Model calls recorded.
        tool_calls: Tool calls recorded.
        input_tokens: Prompt tokens paid for, over every run.
        output_tokens: Completion tokens paid for, over every run.
        cost_usd: Dollars paid for model calls (where prices are known), over every run.
        reused_input_tokens: Prompt tokens served from the store in the latest run instead of paid again.
        reused_output_tokens: Completion tokens served from the store in the latest run.
        reused_cost_usd: Dollars not paid again in the latest run.
    """

    model_calls: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    reused_input_tokens: int = 0
    reused_output_tokens: int = 0
    reused_cost_usd: float = 0.0


class ExecutionSummary(BaseModel):
    """An execution as listed.

    Attributes:
        id: Execution id.
        flow_name: The flow (or agent) it runs.
        status: `running`, `waiting`, `completed`, `failed` or `cancelled`.
        runner_alive: For `running`: whether a live runner holds its lease (`False`: crashed; it is
            taken over by the next runner or marked failed by `recover`).
        run_count: How many times it was started or resumed.
        entry_point: Importable flow that resumes it, if any.
        replay_of: The execution it replays, if any.
        error: `Type: message` of the failure, if failed.
        error_traceback: The failure's formatted traceback, if failed.
        created_at: When it was created.
        updated_at: Last change.
        ended_at: When it completed, failed or was cancelled.
    """

    id: str
    flow_name: str
    status: str
    runner_alive: bool
    run_count: int
    entry_point: str | None
    replay_of: str | None
    error: str | None
    error_traceback: str | None = None
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None


class ArtifactView(BaseModel):
    """One version of a named artifact of an execution (`save`).

    Attributes:
        execution_id: The execution that saved it.
        name: The artifact's name.
        version: Its version (1, 2, ...).
        media_type: What it is, for previews (`text/markdown`, `image/png`, `application/json`...).
        format: How the value is encoded (`json+typed/1`, or `pickle` where allowed).
        size_bytes: Size of the encoded value.
        call_key: The checkpoint call (or scope) that saved it; `None`: the flow's own code.
        run_number: The run of the execution that saved it.
        created_at: When it was saved.
    """

    execution_id: str
    name: str
    version: int
    media_type: str
    format: str
    size_bytes: int
    call_key: str | None
    run_number: int
    created_at: datetime


class ExecutionDetail(ExecutionSummary):
    """An execution with its timeline.

    Attributes:
        calls: Checkpoint calls in recording order (superseded ones included, marked).
        waits: Its waits.
        totals: Token and cost totals.
        output_preview: The first characters of the stored output, once completed.
        audit: Who answered, resumed, cancelled or replayed it, and when, oldest first.
        metadata: What `log()` attached to the execution outside any checkpoint call.
        artifacts: Its artifacts (`save`), by name, then version.
        budget: Its budget (limits in force, spent so far), when a `Budget` applies to it; `None` otherwise.
        inputs: The flow's inputs by parameter name, as JSON data (`None` when they were not stored).
        worker_retries: How many times a worker retried it after a failure (`@flow(retry=...)`).
        retry_at: When a worker retries it next, or `None` (no retry scheduled).
    """

    calls: list[CallView]
    waits: list[WaitView]
    totals: Totals
    output_preview: str | None = None
    audit: list[AuditEvent] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    artifacts: list[ArtifactView] = Field(default_factory=list)
    budget: BudgetView | None = None
    inputs: Any = None
    worker_retries: int = 0
    retry_at: datetime | None = None


class Client:
    """Read and steer executions in a store, from any process.

    Args:
        store_url: SQLAlchemy URL; default: the configured store (`configure`, `KITARU_STORE_URL`...).
        artifacts_url: fsspec URL of the artifact store; default: the configured one.
    """

    def __init__(self, store_url: str | None = None, artifacts_url: str | None = None) -> None:
        settings = _config.current_settings()
        self.store: Store = open_store(
            store_url or settings.resolved_store_url(),
            artifacts_url or settings.resolved_artifacts_url(),
            settings.inline_limit_bytes,
            retry_budget_s=settings.store_retry_budget_s,
            sqlite_busy_timeout_s=settings.sqlite_busy_timeout_s,
            sqlite_synchronous=settings.sqlite_synchronous,
        )

    # -- reading --------------------------------------------------------------------------------

    def _summary_fields(self, record: ExecutionRecord) -> dict[str, Any]:
        return {
            "id": record.id,
            "flow_name": record.flow_name,
            "status": record.status,
            "runner_alive": _leases.lease_is_live(record),
            "run_count": record.run_count,
            "entry_point": record.entry_point,
            "replay_of": record.replay_of,
            "error": f"{record.error_type}: {record.error_message}" if record.error_type else None,
            "error_traceback": record.error_traceback,
            "created_at": _time(record.created_at_epoch_s),
            "updated_at": _time(record.updated_at_epoch_s),
            "ended_at": _time(record.ended_at_epoch_s),
        }

    def list_executions(
        self,
        *,
        status: str | Sequence[str] | None = None,
        flow: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[ExecutionSummary]:
        """Executions, newest first.

        Args:
            status: One status or several to keep.
            flow: Keep only this flow (or agent) name.
            since: Keep only executions created at or after this time.
            until: Keep only executions created before this time.
            limit: Page size.
            offset: Executions to skip (pagination).
        """
        statuses = [status] if isinstance(status, str) else list(status or [])
        records = self.store.list_executions(
            statuses=statuses,
            flow_name=flow,
            created_after_epoch_s=since.timestamp() if since else None,
            created_before_epoch_s=until.timestamp() if until else None,
            limit=limit,
            offset=offset,
        )
        return [ExecutionSummary(**self._summary_fields(record)) for record in records]

    def count_executions(
        self,
        *,
        status: str | Sequence[str] | None = None,
        flow: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many executions match these filters (the total behind `list_executions`'s pages).

        Args:
            status: One status or several to keep.
            flow: Keep only this flow (or agent) name.
            since: Keep only executions created at or after this time.
            until: Keep only executions created before this time.
        """
        statuses = [status] if isinstance(status, str) else list(status or [])
        return self.store.count_executions(
            statuses=statuses,
            flow_name=flow,
            created_after_epoch_s=since.timestamp() if since else None,
            created_before_epoch_s=until.timestamp() if until else None,
        )

    def change_marker(self, execution_id: str | None = None) -> str:
        """An opaque string that changes whenever the store (or one execution) changes.

        Poll it to follow executions live from any process: it moves when an execution starts,
        changes status or finishes, when a checkpoint call is recorded or served from the store on
        resume, when a wait is reached, answered or has an answer refused, and when the runner of a
        `running` execution is found gone (its process ended on this host, or its lease expired).
        It does not move when only a runner's lease is renewed. Works the same on SQLite and
        PostgreSQL.

        Args:
            execution_id: Watch only this execution; default: every execution in the store.
        """
        running = (
            self.store.list_executions(statuses=["running"], limit=10_000)
            if execution_id is None
            else [record for record in [self.store.find_execution(execution_id)] if record is not None]
        )
        runners_gone = sum(
            1 for record in running if record.status == "running" and not _leases.lease_is_live(record)
        )
        return f"{self.store.change_marker(execution_id)}/{runners_gone}"

    def call_output(self, execution_id: str, sequence: int) -> Any:
        """The full stored output of one checkpoint call, as plain JSON data (no user type is imported).

        `CallView.output_preview` holds only the first characters; this loads the whole value, from
        the artifact store if it was large.

        Args:
            execution_id: The execution.
            sequence: The call's `sequence` in the timeline.

        Returns:
            The output as JSON data (dicts, lists, strings, numbers, booleans, `None`); `None` for a
            call that stored no output (a failed call). What JSON cannot carry (bytes, NaN, datetimes,
            models...) appears in the default codec's tagged form, `{"$kitaru": kind, ...}`.

        Raises:
            ExecutionNotFoundError: No such execution.
            CallNotFoundError: The execution has no call with that sequence number.
            SerializationError: The output was stored with pickle (never loaded here) or is not JSON.
        """
        self.store.get_execution(execution_id)
        call = self.store.find_call(execution_id, sequence)
        if call is None:
            raise CallNotFoundError(execution_id, sequence)
        if call.output is None:
            return None
        if call.output.format == "pickle":
            raise SerializationError(
                f"The output of call #{sequence} of {execution_id!r} was stored with pickle "
                f"({call.output.size_bytes} bytes); it is never unpickled for display."
            )
        try:
            return json.loads(self.store.load_value(call.output))
        except ValueError as error:
            raise SerializationError(
                f"The output of call #{sequence} of {execution_id!r} (format {call.output.format}) is not JSON: "
                f"{error}"
            ) from error

    def _preview(self, value: Any) -> str | None:
        if value is None:
            return None
        if value.format == "pickle":
            return f"<pickled, {value.size_bytes} bytes>"
        try:
            raw = self.store.load_value(value)
        except StoreError as error:
            return f"<unreadable: {error}>"
        text = raw[: PREVIEW_CHARACTERS * 4].decode("utf-8", errors="replace")
        return text if len(text) <= PREVIEW_CHARACTERS else text[:PREVIEW_CHARACTERS] + "…"

    def _call_view(self, call: CallRecord, latest_run: int, in_flight: bool = False) -> CallView:
        if call.run_number == latest_run:
            source: Literal["live", "store", "not reached"] = "live"
        elif call.last_served_run == latest_run:
            source = "store"
        else:
            source = "not reached"
        return CallView(
            sequence=call.sequence,
            key=call.call_key,
            name=call.name,
            kind=call.kind,
            status=_call_status(call, latest_run, in_flight),
            source=source,
            run_number=call.run_number,
            duration_s=max(0.0, call.ended_at_epoch_s - call.started_at_epoch_s),
            attempts=call.attempts,
            model_name=call.model_name,
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            cost_usd=call.cost_usd,
            output_preview=self._preview(call.output),
            output_size_bytes=call.output.size_bytes if call.output else None,
            error=f"{call.error_type}: {call.error_message}" if call.error_type else None,
            error_traceback=call.error_traceback,
            details=call.details,
            metadata=call.metadata,
        )

    @staticmethod
    def _wait_view(wait: WaitRecord) -> WaitView:
        return WaitView(
            execution_id=wait.execution_id,
            name=wait.name,
            question=wait.question,
            schema=wait.schema,
            status=wait.status,
            answer=wait.answer,
            refused_answers=wait.refused_answers,
            metadata=wait.details,
            created_at=_time(wait.created_at_epoch_s) or datetime.now(tz=UTC),
            answered_at=_time(wait.answered_at_epoch_s),
            answered_by=wait.answered_by,
            question_digest=question_digest(wait),
        )

    @staticmethod
    def _audit_event(record: AuditRecord) -> AuditEvent:
        return AuditEvent(
            action=record.action,
            actor=record.actor,
            actor_kind=record.actor_kind,
            at=_time(record.at_epoch_s) or datetime.now(tz=UTC),
            wait_name=record.wait_name,
            details=record.details,
        )

    def get_execution(self, execution_id: str) -> ExecutionDetail:
        """One execution with its timeline, waits and totals.

        Raises:
            ExecutionNotFoundError: No such execution.
        """
        from kitaru_core._workers import retry_state

        record = self.store.get_execution(execution_id)
        calls = self.store.load_calls(execution_id, include_superseded=True)
        retries = retry_state(self.store, execution_id)
        in_flight = record.status == "running" and _leases.lease_is_live(record)
        views = [self._call_view(call, record.run_count, in_flight) for call in calls]
        totals = Totals()
        for view in views:
            if view.status == "superseded":
                continue
            totals.model_calls += view.kind == "model"
            totals.tool_calls += view.kind in {"tool", "mcp"}
        for view in views:
            if view.kind != "model" or (view.source == "not reached" and view.status == "superseded"):
                continue
            if view.details.get("copied_from") is None:
                totals.input_tokens += view.input_tokens or 0
                totals.output_tokens += view.output_tokens or 0
                totals.cost_usd += view.cost_usd or 0.0
            if view.source == "store":
                totals.reused_input_tokens += view.input_tokens or 0
                totals.reused_output_tokens += view.output_tokens or 0
                totals.reused_cost_usd += view.cost_usd or 0.0
        return ExecutionDetail(
            **self._summary_fields(record),
            calls=views,
            waits=[self._wait_view(wait) for wait in self.store.list_waits(execution_id)],
            totals=totals,
            output_preview=self._preview(record.output),
            audit=[self._audit_event(event) for event in self.store.list_audit(execution_id)],
            metadata=record.metadata,
            artifacts=[_artifact_view(artifact) for artifact in self.store.list_artifacts(execution_id)],
            budget=budget_view(record.metadata, calls),
            inputs=self._inputs_data(record),
            worker_retries=retries.retries,
            retry_at=_time(retries.retry_at_epoch_s),
        )

    def get_summary(self, execution_id: str) -> ExecutionSummary:
        """One execution as listed: status, flow, entry point, run count..., without its timeline.

        Reads the execution's own record only (one query), so it costs the same for an execution
        with a million checkpoint calls as for one with none; `get_execution` reads every call,
        wait, audit event and artifact.

        Args:
            execution_id: The execution.

        Returns:
            Its summary, the fields `list_executions` gives.

        Raises:
            ExecutionNotFoundError: No such execution.
        """
        return ExecutionSummary(**self._summary_fields(self.store.get_execution(execution_id)))

    def list_calls(self, execution_id: str, *, key_prefix: str = "") -> list[CallView]:
        """The checkpoint calls of one execution whose key starts with `key_prefix`, in recording order.

        A call's key is its scope's key, its checkpoint name and a discriminator
        (`scope:discriminator/name:discriminator`), so a prefix selects the calls of one name at
        one level (`"langgraph:turn:"`: the calls named `langgraph:turn` outside any scope) or every
        call inside one scope (`"turn:2/"`). The calls are read with one query on the index of
        call keys, and only the matching ones are read: the cost follows the calls returned, not
        the execution's size. Each call is the `CallView` `get_execution` lists, superseded
        records included and marked.

        Args:
            execution_id: The execution.
            key_prefix: The start of the keys to keep, compared character by character (no
                wildcards); `""` keeps every call, as `get_execution(execution_id).calls`.

        Returns:
            The matching calls, in the order they were recorded.

        Raises:
            ExecutionNotFoundError: No such execution.
        """
        record = self.store.get_execution(execution_id)
        in_flight = record.status == "running" and _leases.lease_is_live(record)
        return [
            self._call_view(call, record.run_count, in_flight)
            for call in self.store.load_calls_by_key_prefix(execution_id, key_prefix)
        ]

    def _inputs_data(self, record: ExecutionRecord) -> Any:
        """An execution's stored inputs as JSON data, rebuilding no class that is not imported."""
        from pydantic_core import to_jsonable_python

        stored = _stored_inputs(record)
        if stored is None:
            return None
        try:
            value = _boundary.decode_stored(self.store, stored, JsonCodec())
        except SerializationError:  # a class not imported here: its tagged JSON form
            try:
                return json.loads(self.store.load_value(stored))
            except ValueError:
                return None
        return to_jsonable_python(value, fallback=repr)

    def list_artifacts(self, execution_id: str) -> list[ArtifactView]:
        """Every version of every artifact of an execution, by name, then version.

        Raises:
            ExecutionNotFoundError: No such execution.
        """
        return list_artifacts(self, execution_id)

    def load_artifact(self, execution_id: str, name: str, version: int | None = None) -> Any:
        """An artifact's value, exactly as saved (see `kitaru_core.load`)."""
        return _artifacts.load_from(self.store, execution_id, name, version)

    def artifact_content(
        self, execution_id: str, name: str, version: int | None = None
    ) -> tuple[ArtifactView, Any]:
        """An artifact as data to show (bytes, str or JSON data), never rebuilding a class; see `artifact_content`."""
        return artifact_content(self, execution_id, name, version)

    def get_output(self, execution_id: str, *, type_hint: Any = None) -> Any:
        """The stored output of a completed execution, exactly as the flow returned it.

        Args:
            execution_id: The execution.
            type_hint: Finds classes defined inside functions that the output names, and validates
                outputs stored by 0.1 (format `json`) into this type. It never converts a value
                stored since.

        Returns:
            The output.

        Raises:
            SerializationError: The output names a class whose module is not imported (import it,
                or allow it with `configure(decode_modules=[...])`).
            ExecutionNotFoundError: No such execution.
            ExecutionFailedError: It failed.
            ExecutionError: It has not completed.
        """
        record = self.store.get_execution(execution_id)
        if record.status == "failed":
            raise ExecutionFailedError(execution_id, record.error_type or "", record.error_message or "")
        if record.status != "completed":
            raise ExecutionError(
                execution_id, f"Execution {execution_id!r} is {record.status}, not completed."
            )
        return _boundary.decode_stored(self.store, record.output, JsonCodec(type_hint=type_hint))

    def pending_waits(self, execution_id: str | None = None) -> list[WaitView]:
        """Waits without an answer, of one execution or of all."""
        return [self._wait_view(wait) for wait in self.store.list_waits(execution_id, status="pending")]

    # -- steering -------------------------------------------------------------------------------

    def answer(
        self,
        execution_id: str,
        wait_name: str,
        value: Any,
        *,
        actor: Actor | None = None,
        expected_digest: str | None = None,
    ) -> WaitView:
        """Answer a pending wait after validating `value` against the wait's JSON schema.

        Args:
            execution_id: The execution.
            wait_name: The wait's name (see `pending_waits` or the CLI's `show`).
            value: A JSON-able value (for approvals: `{"approved": true, "message": "..."}`).
            actor: Who answers, for the audit trail: `(name, kind)`; default: this process's
                operating-system user.
            expected_digest: The wait's `question_digest` as the answerer saw it; the answer is
                refused when the addressed wait differs.

        Returns:
            The answered wait.

        Raises:
            InvalidAnswerError: The value does not satisfy the schema (or the wait is not the one
                `expected_digest` names); the wait stays pending.
            WaitNotFoundError: No wait of that name.
            WaitAlreadyAnsweredError: It was answered before.
        """
        from jsonschema import Draft202012Validator, validators

        existing = self.store.find_wait(execution_id, wait_name)
        if existing is None:
            self.store.get_execution(execution_id)
            known = [wait.name for wait in self.store.list_waits(execution_id)]
            from kitaru_core.errors import WaitNotFoundError

            raise WaitNotFoundError(execution_id, wait_name, known)
        if expected_digest is not None and not hmac.compare_digest(
            expected_digest.encode(), question_digest(existing).encode()
        ):
            raise InvalidAnswerError(
                execution_id,
                wait_name,
                [
                    "question_digest: the addressed wait is not the question that was shown "
                    "(reload the page and answer again)"
                ],
            )
        validator_class = validators.validator_for(existing.schema, default=Draft202012Validator)
        validator = validator_class(existing.schema)
        problems = sorted(
            f"{'/'.join(str(part) for part in error.absolute_path) or 'value'}: {error.message}"
            for error in validator.iter_errors(value)
        )
        if problems:
            raise InvalidAnswerError(execution_id, wait_name, problems)
        try:
            answer_json = json.dumps(value)
        except (TypeError, ValueError) as error:
            raise InvalidAnswerError(execution_id, wait_name, [f"value is not JSON: {error}"]) from error
        answered = self.store.answer_wait(execution_id, wait_name, answer_json, actor=actor or os_user())
        from kitaru_core._workers import notify_workers

        notify_workers(self.store)  # a worker takes a waiting execution once its waits are all answered
        return self._wait_view(answered)

    def load_flow(self, execution_id: str) -> Flow[..., Any]:
        """Import the `@flow` that runs an execution.

        Raises:
            ConfigurationError: The execution has no importable entry point.
        """
        record = self.store.get_execution(execution_id)
        entry_point = record.entry_point
        if not entry_point:
            raise ConfigurationError(
                _not_resumable_message(execution_id, record.flow_name, replay_of=record.replay_of)
            )
        return load_entry_point(entry_point, f"the entry point {entry_point} of {execution_id!r}")

    def submit(
        self, entry_point: str, /, *args: Any, execution_id: str | None = None, queue: str = "default", **kwargs: Any
    ) -> str:
        """Queue an execution of the `@flow` at `entry_point` for a worker and return its id (see `Flow.submit`).

        Args:
            entry_point: `module:flow`, importable here and in the workers, e.g. `"myapp.flows:bill"`.
            *args: The flow's positional arguments (JSON-able).
            execution_id: Explicit execution id (an idempotency key); default: generated.
            queue: The worker queue; default `"default"`.
            **kwargs: The flow's keyword arguments (JSON-able).

        Returns:
            The execution's id.

        Raises:
            ConfigurationError: `entry_point` does not import, is not a `@flow`, or its inputs are not JSON-able.
            InvalidIdError: `execution_id` or `queue` is not a valid name.
        """
        flow_object = load_entry_point(entry_point, f"the entry point {entry_point!r}")
        return submit_flow(flow_object, args, kwargs, execution_id=execution_id, queue=queue, store=self.store)

    def child_environment(self) -> dict[str, str]:
        """The environment of a process that runs this client's executions (`resume_in_background`, workers).

        It names this client's store and artifact store, and puts the current working directory and
        this process's import path on `PYTHONPATH`, so an execution's `@flow` imports there as here.
        """
        return {
            **os.environ,
            "KITARU_STORE_URL": self.store.url,
            "KITARU_ARTIFACTS_URL": self.store.artifacts.url,
            "KITARU_INLINE_LIMIT_BYTES": str(self.store.inline_limit_bytes),
            "KITARU_INTERACTIVE": "false",
            "PYTHONPATH": os.pathsep.join(
                [os.getcwd(), *(entry for entry in sys.path if entry and Path(entry).is_dir())]
            ),
        }


    def resume(self, execution_id: str, *, actor: Actor | None = None, audit: bool = True) -> Any:
        """Run an unfinished execution again in this process, from its importable `@flow`.

        Completed calls are served from the store; answered waits return their answers.

        Args:
            execution_id: The execution to resume.
            actor: Who resumes it, for the audit trail; default: this process's operating-system user.
            audit: Record the resume in the audit trail (the process started by
                `resume_in_background` does not record it a second time).

        Returns:
            The flow's output (awaited for async flows).

        Raises:
            ConfigurationError: No importable entry point.
            ExecutionWaitingError: It stopped at a wait again.
            ExecutionLockedError: A live runner holds it.
            ExecutionCancelledError: It was cancelled.
        """
        record = self.store.get_execution(execution_id)
        flow_object = self.load_flow(execution_id)
        if audit:
            self.store.record_audit(execution_id, "resume", actor or os_user())
        inputs = _boundary.decode_stored(self.store, _stored_inputs(record), JsonCodec()) or {}
        if not isinstance(inputs, dict):
            raise SerializationError(f"Stored inputs of {execution_id!r} are not a mapping of parameters.")
        if record.inputs_format == TYPED_FORMAT:
            arguments: dict[str, Any] = inputs  # pyright: ignore[reportUnknownVariableType]  # stored exactly
        else:  # written by 0.1 as plain JSON: validated into the parameters' annotations
            arguments = flow_object.decode_inputs(inputs)  # pyright: ignore[reportUnknownArgumentType]
        result = flow_object.run(execution_id=execution_id, **arguments)
        if flow_object.is_async:
            import asyncio

            return asyncio.run(result)
        return result

    def resume_in_background(
        self, execution_id: str, *, log_path: str | Path | None = None, actor: Actor | None = None
    ) -> int:
        """Resume an execution in a new background process (`kitaru-adapters executions resume ID`).

        The process uses this client's store and artifact store, this interpreter, the current
        working directory and this process's import path, so the execution's `@flow` imports there as
        it does here. It runs on after this call returns; follow it with `get_execution`.

        Args:
            execution_id: The execution to resume.
            log_path: File that receives the process's output; default: discarded.
            actor: Who resumes it, for the audit trail; default: this process's operating-system user.

        Returns:
            The process id.

        Raises:
            ExecutionNotFoundError: No such execution.
            ExecutionError: It has completed already.
            ExecutionCancelledError: It was cancelled.
            ExecutionLockedError: A live runner holds it.
            ConfigurationError: It has no importable `@flow` entry point (the message says how to
                resume it instead), or the store lives in this process's memory.
        """
        import subprocess
        import threading

        record = self.store.get_execution(execution_id)
        if record.status == "completed":
            raise ExecutionError(
                execution_id,
                f"Execution {execution_id!r} has completed; there is nothing to resume. "
                f"Start a new one, or replay it with: kitaru-adapters executions replay {execution_id}",
            )
        if record.status == "cancelled" or record.cancel_requested:
            raise ExecutionCancelledError(execution_id)
        if _leases.lease_is_live(record):
            expires_in_s = max(0.0, (record.lease_expires_at_epoch_s or 0.0) - time.time())
            raise ExecutionLockedError(execution_id, f"{record.lease_host}:{record.lease_pid}", expires_in_s)
        if not record.entry_point:
            raise ConfigurationError(
                _not_resumable_message(execution_id, record.flow_name, replay_of=record.replay_of)
            )
        self._check_shared_store(execution_id)
        environment = self.child_environment()
        self.store.record_audit(execution_id, "resume", actor or os_user(), details={"background": True})
        output: Any = subprocess.DEVNULL
        if log_path is not None:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            output = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kitaru_core.cli",
                    "executions",
                    "resume",
                    "--audited",
                    "--",
                    execution_id,
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
            )
        finally:
            if log_path is not None:
                output.close()
        # reap it when it ends so it never lingers as a zombie of a long-lived server
        threading.Thread(target=process.wait, name=f"kitaru-resume-{execution_id}", daemon=True).start()
        return process.pid

    def replay(
        self,
        execution_id: str,
        *,
        from_call: str | int | None = None,
        overrides: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        new_execution_id: str | None = None,
        run: bool = True,
        actor: Actor | None = None,
        queue: str = "default",
        from_sequence: int | None = None,
    ) -> str:
        """Start a new execution that reuses the stored outputs of another up to a chosen call.

        Calls before `from_call` are served from the store in the new execution; the chosen call and
        every later one run live. Waits answered before the chosen call keep their answers; waits
        reached from it on are asked again. Everything is checked before the new execution is
        created, so a refused replay creates nothing.

        Args:
            execution_id: The execution to replay.
            from_call: The first call to run live again: its key (`"price:0"`) or its `sequence`
                (`#` in the timeline); default: reuse every completed call (and every answered wait).
            overrides: New values by call key (a plain `@checkpoint` call's output: any value the
                default codec stores; a plain dict is validated into the stored output's model or
                dataclass; an adapter's model request: its response as a string or `{"text": ...,
                "tool_calls": [{"name": ..., "arguments": {...}}]}`; an adapter's tool call: its result
                as plain JSON, converted by the adapter when the replay runs) or by wait name (its
                answer, checked against its schema). An overridden call or wait is reused with that
                value wherever it is, even after `from_call`, and is matched by key only.
            inputs: New values of some of the flow's inputs, by parameter name (validated into the
                parameters' annotations when the `@flow` imports); the others keep their values.
                Calls whose inputs change because of it run live (their fingerprints differ).
            new_execution_id: The new execution's id; default: generated.
            run: Run the new execution now in this process (needs an importable `@flow`). With
                `False` it is only prepared, with status `queued`: a worker taking `queue` runs it,
                or run it with `resume`; a top-level agent run (no `@flow`) runs when the agent is
                run again with the same input inside `named_run(new_id)`.
            actor: Who replays it, recorded in both executions' audit trails; default: this process's
                operating-system user.
            queue: The worker queue of a prepared replay (`run=False`); default `"default"`.
            from_sequence: Same as an integer `from_call` (kept for 0.1 callers).

        Returns:
            The new execution's id.

        Raises:
            ExecutionNotFoundError: No such execution.
            CallNotFoundError: `from_call` is a sequence number no call has.
            ConfigurationError: `from_call` or an override names no call or wait; a model request's
                override is not a model response (a string, or `{"text": ..., "tool_calls": [...]}`);
                an override targets an adapter call that is neither a model request nor a tool call
                (a handoff, a flow step); an input names no parameter of the flow; `run=True` but the
                execution has no importable entry point.
            InvalidAnswerError: An overridden wait answer does not satisfy the wait's schema.
            SerializationError: An override or input cannot be stored.
            ExecutionWaitingError: `run=True` and the new execution stopped at a wait.
        """
        if from_sequence is not None:
            if from_call is not None:
                raise ConfigurationError("Give from_call or from_sequence, not both (from_call takes a sequence too).")
            from_call = from_sequence
        new_id = self._prepare_replay(
            execution_id,
            from_call=from_call,
            overrides=overrides,
            inputs=inputs,
            new_execution_id=new_execution_id,
            actor=actor,
            queue=None if run else queue,
        )
        if run:
            self.resume(new_id, audit=False)
        return new_id

    def replay_in_background(
        self,
        execution_id: str,
        *,
        from_call: str | int | None = None,
        overrides: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        new_execution_id: str | None = None,
        log_path: str | Path | None = None,
        actor: Actor | None = None,
    ) -> tuple[str, int]:
        """`replay`, run in a new background process as `resume_in_background` runs a resume.

        Args:
            execution_id: The execution to replay.
            from_call: As for `replay`.
            overrides: As for `replay`.
            inputs: As for `replay`, except that the `@flow` is not imported in this process: names are
                checked against the stored inputs, and values are passed to the flow as given.
            new_execution_id: As for `replay`.
            log_path: File that receives the process's output; default: discarded.
            actor: Who replays it, for both audit trails; default: this process's operating-system user.

        Returns:
            `(new execution id, process id)`.

        Raises:
            ExecutionNotFoundError: No such execution.
            CallNotFoundError: `from_call` is a sequence number no call has.
            ConfigurationError: As for `replay`; also when the store lives in this process's memory.
            InvalidAnswerError: An overridden wait answer does not satisfy the wait's schema.
            SerializationError: An override or input cannot be stored.
        """
        self._check_shared_store(execution_id)
        new_id = self._prepare_replay(
            execution_id,
            from_call=from_call,
            overrides=overrides,
            inputs=inputs,
            new_execution_id=new_execution_id,
            actor=actor,
            queue=None,
            import_flow=False,
        )
        return new_id, self.resume_in_background(new_id, log_path=log_path, actor=actor)

    def _check_shared_store(self, execution_id: str) -> None:
        if self.store.url in {"sqlite://", "sqlite:///:memory:", "sqlite+pysqlite://"} or (
            self.store.artifacts.url.startswith("memory://")
        ):
            raise ConfigurationError(
                "This client's store lives in this process's memory, so another process cannot resume "
                f"{execution_id!r}: use a SQLite file or PostgreSQL and a shared artifact store."
            )

    def _prepare_replay(
        self,
        execution_id: str,
        *,
        from_call: str | int | None,
        overrides: dict[str, Any] | None,
        inputs: dict[str, Any] | None,
        new_execution_id: str | None,
        actor: Actor | None,
        queue: str | None,
        import_flow: bool = True,
    ) -> str:
        """Check and create a replay: `running` for a runner started at once (`queue=None`), else `queued`.

        `import_flow=False` (the server): the `@flow` is not imported in this process; input names
        are checked against the stored inputs and values stored as given.
        """
        from kitaru_core import _replay
        from kitaru_core._ids import check_execution_id, check_queue_name

        run_now = queue is None
        source = self.store.get_execution(execution_id)
        flow_object: Flow[..., Any] | None = None
        if source.entry_point and (run_now or inputs) and import_flow:
            flow_object = load_entry_point(source.entry_point, f"the entry point {source.entry_point} of {execution_id!r}")
        elif run_now and not source.entry_point:
            raise ConfigurationError(_not_resumable_message(execution_id, source.flow_name, replaying=True))
        if queue is not None:
            check_queue_name(queue)
        if new_execution_id is not None:
            check_execution_id(new_execution_id)
            if self.store.find_execution(new_execution_id) is not None:
                raise ConfigurationError(
                    f"Execution {new_execution_id!r} exists already; a replay starts a new execution: give "
                    "another new_execution_id, or none for a generated one."
                )
        plan = _replay.plan_replay(
            self.store,
            execution_id,
            from_call=from_call,
            overrides=overrides,
            inputs=inputs,
            parameters=list(flow_object.signature.parameters) if flow_object is not None else None,
            decode_inputs=flow_object.decode_inputs if flow_object is not None else None,
        )
        record = self.store.create_replay(
            new_execution_id or f"{execution_id[:8].strip()}-replay-{int(time.time() * 1000) % 10**8}",
            source=source,
            inputs=plan.inputs_value,
            calls=plan.calls,
            waits=plan.waits,
            status="running" if run_now else "queued",
            queue=queue,
        )
        who = actor or os_user()
        details: dict[str, Any] = {"from_call": plan.first_live.call_key} if plan.first_live else {}
        if plan.overridden:
            details["overrides"] = sorted(plan.overridden)
        if inputs:
            details["inputs"] = sorted(inputs)
        self.store.record_audit(execution_id, "replay", who, details={"new_execution_id": record.id, **details})
        self.store.record_audit(record.id, "replay", who, details={"replay_of": execution_id, **details})
        return record.id

    def diff(self, a: str, b: str) -> Any:
        """Line up two executions call by call (e.g. an execution and its replay).

        Returns:
            An `ExecutionDiff` (`kitaru_core._diff`): one row per call key, `same` (same status and
            stored output), `changed`, `new` (only in `b`) or `missing` (only in `a`), with each
            side's output preview, tokens and cost, and each execution's totals.

        Raises:
            ExecutionNotFoundError: Either execution does not exist.
        """
        from kitaru_core._diff import diff_executions

        return diff_executions(self, a, b)

    def cancel(self, execution_id: str, *, actor: Actor | None = None) -> ExecutionSummary:
        """Cancel an execution: at once if no runner holds it, else at the runner's next call.

        Args:
            execution_id: The execution.
            actor: Who cancels it, for the audit trail; default: this process's operating-system user.

        Raises:
            ExecutionNotFoundError: No such execution.
        """
        record = self.store.request_cancel(execution_id)
        self.store.record_audit(execution_id, "cancel", actor or os_user())
        return ExecutionSummary(**self._summary_fields(record))

    def recover(self) -> list[str]:
        """Mark `running` executions whose runner is gone as `failed` (resumable), and list them."""
        crashed = [
            (record.id, record.lease_owner)
            for record in self.store.list_executions(statuses=["running"], limit=10_000)
            if not _leases.lease_is_live(record)
        ]
        return self.store.mark_crashed(
            crashed, message="The process running it stopped without finishing (crash or kill)."
        )


def _not_resumable_message(
    execution_id: str, flow_name: str, *, replay_of: str | None = None, replaying: bool = False
) -> str:
    """Why an execution without an entry point cannot run from here, and what runs it.

    `replaying`: `execution_id` is being replayed with `run=True`; `replay_of`: `execution_id` is a
    prepared replay of that execution.
    """
    run_under_id = (
        "run the agent again with the same input under {id}: inside `with named_run({id}):` (any "
        "adapter; the OpenAI Agents SDK also takes DurableRunner().run(..., execution_id={id}); a "
        "LangGraph graph on a thread runs on thread_id={id}), or inside `with execution({id}):` when "
        "the original ran inside `with execution(...)`."
    )
    if replaying:
        return (
            f"Execution {execution_id!r} ({flow_name}) was not started by an importable @flow, so its "
            "replay cannot run here. Prepare the replay with run=False (CLI: --no-run), then "
            + run_under_id.format(id="the new execution's id")
        )
    if replay_of is not None:
        return (
            f"Execution {execution_id!r} ({flow_name}) is a replay of {replay_of!r}, which was not "
            "started by an importable @flow, so it cannot be resumed from here: "
            + run_under_id.format(id=repr(execution_id))
        )
    return (
        f"Execution {execution_id!r} ({flow_name}) was not started by an importable @flow, so "
        "it cannot be resumed from here: re-run the program that started it (same inputs, or the "
        "same execution id) and it resumes."
    )


def _stored_inputs(record: ExecutionRecord) -> Any:
    from kitaru_core._store import StoredValue

    if record.inputs_format is None or record.inputs is None:
        return None
    return StoredValue(record.inputs_format, record.inputs, None, len(record.inputs))


def load_entry_point(entry_point: str, what: str) -> Flow[..., Any]:
    """Import the `@flow` at `module:qualname` or `file:PATH:qualname`.

    Args:
        entry_point: Where the flow is.
        what: What is being imported, for the error message.

    Raises:
        ConfigurationError: It does not import, or it is not a `@flow`.
    """
    try:
        if entry_point.startswith(FILE_ENTRY_PREFIX):
            path, _, qualname = entry_point[len(FILE_ENTRY_PREFIX) :].rpartition(":")
            module_name = f"kitaru_entry_{abs(hash(path))}"
            module = sys.modules.get(module_name)
            if module is None:
                spec = importlib.util.spec_from_file_location(module_name, path)
                if spec is None or spec.loader is None:
                    raise ImportError(f"cannot load {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                sys.path.insert(0, str(Path(path).parent))
                spec.loader.exec_module(module)
            target: Any = module
            for part in qualname.split("."):
                target = getattr(target, part)
        else:
            target = import_callable(entry_point)
    except (ImportError, AttributeError, OSError) as error:
        raise ConfigurationError(
            f"Cannot import {what}: {error}"
        ) from error
    if not isinstance(target, Flow):
        raise ConfigurationError(f"{entry_point} is not a @flow.")
    return target  # pyright: ignore[reportUnknownVariableType]
# -- metadata and artifacts --------------------------------------------------------------------------


def _artifact_view(record: ArtifactRecord) -> ArtifactView:
    return ArtifactView(
        execution_id=record.execution_id,
        name=record.name,
        version=record.version,
        media_type=record.media_type,
        format=record.value.format,
        size_bytes=record.value.size_bytes,
        call_key=record.call_key,
        run_number=record.run_number,
        created_at=_time(record.created_at_epoch_s) or datetime.now(tz=UTC),
    )


def list_artifacts(client: Client, execution_id: str) -> list[ArtifactView]:
    """Every version of every artifact of an execution, by name, then version (`Client.list_artifacts`)."""
    client.store.get_execution(execution_id)
    return [_artifact_view(record) for record in client.store.list_artifacts(execution_id)]


def artifact_content(
    client: Client, execution_id: str, name: str, version: int | None = None
) -> tuple[ArtifactView, str | bytes | Any]:
    """An artifact as data to show, without rebuilding any class (`Client.artifact_content`).

    Returns:
        `(view, content)`: `bytes` for a value saved as bytes, `str` for a string, else the JSON
        data of the stored value (what JSON cannot carry in the codec's tagged form).

    Raises:
        ExecutionNotFoundError: No such execution.
        ArtifactNotFoundError: No artifact of that name (or version).
        SerializationError: It was stored with pickle (never unpickled for display) or is corrupt.
    """
    record = _artifacts.find(client.store, execution_id, name, version)
    view = _artifact_view(record)
    if record.value.format != TYPED_FORMAT:
        raise SerializationError(
            f"Artifact {name!r} version {record.version} of {execution_id!r} is stored as "
            f"{record.value.format!r} ({record.value.size_bytes} bytes); it is shown only when stored as "
            f"{TYPED_FORMAT} (pickle is never loaded for display). Read it with kitaru_core.load()."
        )
    try:
        data = json.loads(client.store.load_value(record.value))
        if isinstance(data, dict) and data.get("$kitaru") in {"bytes", "bytearray"}:  # pyright: ignore[reportUnknownMemberType]
            return view, JsonCodec().decode(TYPED_FORMAT, json.dumps(data).encode())
    except ValueError as error:
        raise SerializationError(f"Artifact {name!r} of {execution_id!r} is corrupt: {error}") from error
    return view, data
