"""Plain records of the store (no SQLAlchemy here, so importing kitaru_core stays fast)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kitaru_core.errors import StoreError

ExecutionStatus = Literal["queued", "running", "waiting", "completed", "failed", "cancelled"]

UNFINISHED_STATUSES: tuple[str, ...] = ("queued", "running", "waiting", "failed")


@dataclass(frozen=True, slots=True)
class StoredValue:
    """A serialized value: inline bytes or a reference into the artifact store."""

    format: str
    payload: bytes | None
    reference: str | None
    size_bytes: int


@dataclass
class ExecutionRecord:
    """One row of the executions table."""

    id: str
    flow_name: str
    entry_point: str | None
    inputs_fingerprint: str | None
    inputs_format: str | None
    inputs: bytes | None
    status: str
    output: StoredValue | None
    error_type: str | None
    error_message: str | None
    error_traceback: str | None
    run_count: int
    replay_of: str | None
    cancel_requested: bool
    lease_owner: str | None
    lease_host: str | None
    lease_pid: int | None
    lease_expires_at_epoch_s: float | None
    created_at_epoch_s: float
    updated_at_epoch_s: float
    ended_at_epoch_s: float | None
    lease_host_id: str | None = None
    lease_process_start_ticks: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict[str, Any])
    """What `log()` attached to the execution outside any checkpoint call."""


@dataclass(slots=True)
class CallRecord:
    """One row of the checkpoint calls table.

    Slotted, with its repeated strings (execution id, name, kind, status, formats) shared: a resume
    holds one per stored call, so its size is the resume's memory per call beyond the values.
    """

    id: int
    execution_id: str
    call_key: str
    name: str
    kind: str
    sequence: int
    status: str
    fingerprint: str | None
    output: StoredValue | None
    error_type: str | None
    error_message: str | None
    error_traceback: str | None
    attempts: int
    run_number: int
    last_served_run: int | None
    started_at_epoch_s: float
    ended_at_epoch_s: float
    model_name: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    details: dict[str, Any] = field(default_factory=dict[str, Any])
    metadata: dict[str, Any] = field(default_factory=dict[str, Any])
    """What `log()` attached to the call, written with its record."""


@dataclass
class WaitRecord:
    """One row of the waits table."""

    id: int
    execution_id: str
    name: str
    call_key: str
    question: str
    schema: dict[str, Any]
    details: dict[str, Any]
    status: str
    answer: Any
    has_answer: bool
    refused_answers: list[Any]
    created_at_epoch_s: float
    answered_at_epoch_s: float | None
    answered_by: str | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One row of the audit trail: who did what to an execution, and when."""

    execution_id: str
    action: str
    wait_name: str | None
    actor: str
    actor_kind: str
    details: dict[str, Any]
    at_epoch_s: float


@dataclass(frozen=True)
class TokenRecord:
    """A named API token (its secret is kept only as a SHA-256 digest)."""

    name: str
    created_at_epoch_s: float
    created_by: str | None
    revoked_at_epoch_s: float | None


def stored_value(row: Mapping[Any, Any], prefix: str) -> StoredValue | None:
    format_ = row[f"{prefix}_format"]
    if format_ is None:
        return None
    payload = row[prefix]
    reference = row[f"{prefix}_ref"]
    size = row.get(f"{prefix}_size_bytes") or (len(payload) if payload is not None else 0)
    return StoredValue(format=sys.intern(format_), payload=payload, reference=reference, size_bytes=size)


def json_or_report(raw: str | None, what: str) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError as error:
        raise StoreError(f"Corrupt record: {what} is not valid JSON ({error}).") from error


def call_from_columns(row: Mapping[Any, Any]) -> CallRecord:
    """A `CallRecord` from a row of the checkpoint calls table (or the same columns as a dict)."""
    return CallRecord(
        id=row["id"],
        execution_id=sys.intern(row["execution_id"]),
        call_key=row["call_key"],
        name=sys.intern(row["name"]),
        kind=sys.intern(row["kind"]),
        sequence=row["sequence"],
        status=sys.intern(row["status"]),
        fingerprint=row["fingerprint"],
        output=stored_value(row, "output"),
        error_type=row["error_type"],
        error_message=row["error_message"],
        error_traceback=row["error_traceback"],
        attempts=row["attempts"],
        run_number=row["run_number"],
        last_served_run=row["last_served_run"],
        started_at_epoch_s=row["started_at_epoch_s"],
        ended_at_epoch_s=row["ended_at_epoch_s"],
        model_name=sys.intern(row["model_name"]) if row["model_name"] is not None else None,
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        cost_usd=row["cost_usd"],
        details=json_or_report(row["details"], f"details of call {row['call_key']!r}") or {},
        metadata=json_or_report(row.get("metadata"), f"metadata of call {row['call_key']!r}") or {},
    )


@dataclass(frozen=True)
class ArtifactRecord:
    """One version of a named artifact of an execution (`save`)."""

    execution_id: str
    name: str
    version: int
    call_key: str | None
    media_type: str
    value: StoredValue
    run_number: int
    created_at_epoch_s: float
