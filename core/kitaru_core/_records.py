"""Plain records of the store (no SQLAlchemy here, so importing kitaru_core stays fast)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ExecutionStatus = Literal["running", "waiting", "completed", "failed", "cancelled"]
CallStatus = Literal["completed", "failed", "superseded"]
CallKind = Literal["model", "tool", "user", "mcp"]

UNFINISHED_STATUSES: tuple[str, ...] = ("running", "waiting", "failed")


@dataclass(frozen=True)
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


@dataclass
class CallRecord:
    """One row of the checkpoint calls table."""

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
