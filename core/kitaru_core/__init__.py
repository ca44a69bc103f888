"""kitaru_core: durable execution for AI agents.

Two primitives, `checkpoint` and `wait`, on a SQL metadata store and an fsspec artifact store.
A `flow` (or an `execution(...)` block, or an agent made durable by an adapter) is an
execution: re-running it after a crash resumes it, serving every completed checkpoint call from
the store; a `wait()` can stop it until somebody answers, in another process, days later.

This module imports no agent framework.
"""

from typing import TYPE_CHECKING

from kitaru_core import errors
from kitaru_core._api import Checkpoint, Flow, checkpoint, execution, flow, named_run
from kitaru_core._artifacts import load, log, log_async, save, save_async
from kitaru_core._checkpoint_calls import OnInterrupted, RetryPolicy
from kitaru_core._config import Settings, configure
from kitaru_core._context import idempotency_key, scope
from kitaru_core._serialization import Codec, JsonCodec
from kitaru_core._view import CurrentExecution, current_execution
from kitaru_core._waits import WaitSpec, wait, wait_all, wait_all_async, wait_async

__all__ = [
    "ApprovalDecision",
    "ApprovalPolicy",
    "ApprovalRequest",
    "ArtifactView",
    "AuditEvent",
    "Budget",
    "BudgetView",
    "CallView",
    "Checkpoint",
    "Client",
    "Codec",
    "CurrentExecution",
    "DiffRow",
    "DiffSide",
    "ExecutionDetail",
    "ExecutionDiff",
    "ExecutionRetryPolicy",
    "ExecutionSummary",
    "Flow",
    "JsonCodec",
    "ModelErrorClass",
    "ModelRetryPolicy",
    "OnInterrupted",
    "RetryPolicy",
    "Settings",
    "Totals",
    "WaitSpec",
    "WaitView",
    "Worker",
    "approval_wait_name",
    "checkpoint",
    "classify_model_error",
    "configure",
    "current_execution",
    "errors",
    "execution",
    "flow",
    "idempotency_key",
    "load",
    "log",
    "log_async",
    "model_retries",
    "named_run",
    "request_approval",
    "request_approvals",
    "save",
    "save_async",
    "scope",
    "wait",
    "wait_all",
    "wait_all_async",
    "wait_async",
]

__version__ = "0.1.0"

# Names kitaru_core 0.1 exported for adapters: importable from here still (0.1 code keeps working),
# but no longer part of the user API; they live in `kitaru_core.adapters`.
_MOVED_TO_ADAPTERS = {
    "CallUsage": "_checkpoint_calls",
    "durable_run": "_api",
    "fingerprint": "_serialization",
    "model_retry_policy": "_model_retries",
    "request_approval_together": "_approvals",
    "retry_delay_in_call": "_checkpoint_calls",
    "run_checkpoint": "_checkpoint_calls",
    "run_checkpoint_async": "_checkpoint_calls",
    "SideEffectPolicy": "_interrupted",
    "stop_retries_in_call": "_checkpoint_calls",
}

_LAZY = {
    "ArtifactView": "_client",
    "AuditEvent": "_client",
    "CallView": "_client",
    "Client": "_client",
    "ExecutionDetail": "_client",
    "ExecutionSummary": "_client",
    "Totals": "_client",
    "WaitView": "_client",
    "DiffRow": "_diff",
    "DiffSide": "_diff",
    "ExecutionDiff": "_diff",
    "ApprovalDecision": "_approvals",
    "ApprovalPolicy": "_approvals",
    "ApprovalRequest": "_approvals",
    "approval_wait_name": "_approvals",
    "request_approval": "_approvals",
    "request_approvals": "_approvals",
    "Worker": "_workers",
    "ExecutionRetryPolicy": "_execution_retries",
    "ModelErrorClass": "_model_retries",
    "ModelRetryPolicy": "_model_retries",
    "classify_model_error": "_model_retries",
    "model_retries": "_model_retries",
    "Budget": "_budgets",
    "BudgetView": "_budgets",
}


def __getattr__(name: str) -> object:
    """Import the client and approvals (and pydantic, SQLAlchemy) only when first used.

    Also serves the names 0.1 exported for adapters (`run_checkpoint`, `fingerprint`, ...), which
    moved to `kitaru_core.adapters`.
    """
    module = _LAZY.get(name) or _MOVED_TO_ADAPTERS.get(name)
    if module is not None:
        import importlib

        return getattr(importlib.import_module(f"kitaru_core.{module}"), name)
    raise AttributeError(f"module 'kitaru_core' has no attribute {name!r}")


if TYPE_CHECKING:
    from kitaru_core._api import durable_run as durable_run
    from kitaru_core._approvals import (
        ApprovalDecision,
        ApprovalPolicy,
        ApprovalRequest,
        approval_wait_name,
        request_approval,
        request_approvals,
    )
    from kitaru_core._approvals import (
        request_approval_together as request_approval_together,
    )
    from kitaru_core._budgets import Budget, BudgetView
    from kitaru_core._checkpoint_calls import (
        CallUsage as CallUsage,
    )
    from kitaru_core._checkpoint_calls import (
        retry_delay_in_call as retry_delay_in_call,
    )
    from kitaru_core._checkpoint_calls import (
        run_checkpoint as run_checkpoint,
    )
    from kitaru_core._checkpoint_calls import (
        run_checkpoint_async as run_checkpoint_async,
    )
    from kitaru_core._checkpoint_calls import (
        stop_retries_in_call as stop_retries_in_call,
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
    from kitaru_core._diff import DiffRow, DiffSide, ExecutionDiff
    from kitaru_core._execution_retries import ExecutionRetryPolicy
    from kitaru_core._interrupted import SideEffectPolicy as SideEffectPolicy
    from kitaru_core._model_retries import (
        ModelErrorClass,
        ModelRetryPolicy,
        classify_model_error,
        model_retries,
    )
    from kitaru_core._model_retries import (
        model_retry_policy as model_retry_policy,
    )
    from kitaru_core._serialization import fingerprint as fingerprint
    from kitaru_core._workers import Worker
