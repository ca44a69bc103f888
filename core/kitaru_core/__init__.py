"""kitaru_core: durable execution for AI agents.

Two primitives, `checkpoint` and `wait`, on a SQL metadata store and an fsspec artifact store.
A `flow` (or an `execution(...)` block, or an agent made durable by an adapter) is an
execution: re-running it after a crash resumes it, serving every completed checkpoint call from
the store; a `wait()` can stop it until somebody answers, in another process, days later.

This module imports no agent framework.
"""

from typing import TYPE_CHECKING

from kitaru_core import errors
from kitaru_core._api import Checkpoint, Flow, checkpoint, durable_run, execution, flow, named_run
from kitaru_core._artifacts import load, log, save
from kitaru_core._config import Settings, configure
from kitaru_core._runtime import (
    CallUsage,
    OnInterrupted,
    RetryPolicy,
    WaitSpec,
    current_execution,
    idempotency_key,
    retry_delay_in_call,
    run_checkpoint,
    run_checkpoint_async,
    scope,
    stop_retries_in_call,
    wait,
    wait_all,
)
from kitaru_core._serialization import Codec, JsonCodec, fingerprint

__all__ = [
    "ApprovalDecision",
    "ApprovalPolicy",
    "ApprovalRequest",
    "ArtifactView",
    "AuditEvent",
    "CallUsage",
    "CallView",
    "Checkpoint",
    "Client",
    "Codec",
    "ExecutionDetail",
    "ExecutionRetryPolicy",
    "ExecutionSummary",
    "Flow",
    "JsonCodec",
    "ModelErrorClass",
    "ModelRetryPolicy",
    "OnInterrupted",
    "RetryPolicy",
    "Settings",
    "SideEffectPolicy",
    "Totals",
    "WaitSpec",
    "WaitView",
    "Worker",
    "approval_wait_name",
    "checkpoint",
    "classify_model_error",
    "configure",
    "current_execution",
    "durable_run",
    "errors",
    "execution",
    "fingerprint",
    "flow",
    "idempotency_key",
    "load",
    "log",
    "model_retries",
    "model_retry_policy",
    "named_run",
    "request_approval",
    "request_approval_together",
    "request_approvals",
    "retry_delay_in_call",
    "run_checkpoint",
    "run_checkpoint_async",
    "save",
    "scope",
    "stop_retries_in_call",
    "wait",
    "wait_all",
]

__version__ = "0.1.0"

_LAZY = {
    "ArtifactView": "_client",
    "AuditEvent": "_client",
    "CallView": "_client",
    "Client": "_client",
    "ExecutionDetail": "_client",
    "ExecutionSummary": "_client",
    "Totals": "_client",
    "WaitView": "_client",
    "ApprovalDecision": "_approvals",
    "ApprovalPolicy": "_approvals",
    "ApprovalRequest": "_approvals",
    "approval_wait_name": "_approvals",
    "request_approval": "_approvals",
    "request_approval_together": "_approvals",
    "request_approvals": "_approvals",
    "SideEffectPolicy": "_interrupted",
    "Worker": "_workers",
    "ExecutionRetryPolicy": "_execution_retries",
    "ModelErrorClass": "_model_retries",
    "ModelRetryPolicy": "_model_retries",
    "classify_model_error": "_model_retries",
    "model_retries": "_model_retries",
    "model_retry_policy": "_model_retries",
}


def __getattr__(name: str) -> object:
    """Import the client and approvals (and pydantic, SQLAlchemy) only when first used."""
    module = _LAZY.get(name)
    if module is not None:
        import importlib

        return getattr(importlib.import_module(f"kitaru_core.{module}"), name)
    raise AttributeError(f"module 'kitaru_core' has no attribute {name!r}")


if TYPE_CHECKING:
    from kitaru_core._approvals import (
        ApprovalDecision,
        ApprovalPolicy,
        ApprovalRequest,
        approval_wait_name,
        request_approval,
        request_approval_together,
        request_approvals,
    )
    from kitaru_core._client import (
        ArtifactView,
        AuditEvent,
        CallView,
        Client,
        ExecutionDetail,
        ExecutionSummary,
        Totals,
        WaitView,
    )
    from kitaru_core._execution_retries import ExecutionRetryPolicy
    from kitaru_core._interrupted import SideEffectPolicy
    from kitaru_core._model_retries import (
        ModelErrorClass,
        ModelRetryPolicy,
        classify_model_error,
        model_retries,
        model_retry_policy,
    )
    from kitaru_core._workers import Worker
