"""kitaru_core: durable execution for AI agents.

Two primitives, `checkpoint` and `wait`, on a SQL metadata store and an fsspec artifact store.
A `flow` (or an `execution(...)` block, or an agent made durable by an adapter) is an
execution: re-running it after a crash resumes it, serving every completed checkpoint call from
the store; a `wait()` can stop it until somebody answers, in another process, days later.

This module imports no agent framework.
"""

from typing import TYPE_CHECKING

from kitaru_core import errors
from kitaru_core._api import Checkpoint, Flow, checkpoint, durable_run, execution, flow
from kitaru_core._config import Settings, configure
from kitaru_core._runtime import (
    CallUsage,
    RetryPolicy,
    current_execution,
    idempotency_key,
    run_checkpoint,
    run_checkpoint_async,
    scope,
    wait,
)
from kitaru_core._serialization import Codec, JsonCodec, fingerprint

__all__ = [
    "CallUsage",
    "CallView",
    "Checkpoint",
    "Client",
    "Codec",
    "ExecutionDetail",
    "ExecutionSummary",
    "Flow",
    "JsonCodec",
    "RetryPolicy",
    "Settings",
    "Totals",
    "WaitView",
    "checkpoint",
    "configure",
    "current_execution",
    "durable_run",
    "errors",
    "execution",
    "fingerprint",
    "flow",
    "idempotency_key",
    "run_checkpoint",
    "run_checkpoint_async",
    "scope",
    "wait",
]

__version__ = "0.1.0"

_LAZY = {"CallView", "Client", "ExecutionDetail", "ExecutionSummary", "Totals", "WaitView"}


def __getattr__(name: str) -> object:
    """Import the client (and pydantic, SQLAlchemy) only when it is first used."""
    if name in _LAZY:
        from kitaru_core import _client

        return getattr(_client, name)
    raise AttributeError(f"module 'kitaru_core' has no attribute {name!r}")


if TYPE_CHECKING:
    from kitaru_core._client import CallView, Client, ExecutionDetail, ExecutionSummary, Totals, WaitView
