"""The running side of an execution, re-exported from the modules that hold it.

The runtime is split along its seams: `_signals` (control-flow signals), `_leases` (host identity,
lease clock, taking the lease), `_context` (the execution context, scopes and keys),
`_checkpoint_calls` (`run_checkpoint*`, retry policies), `_waits` (`wait`, `wait_all`) and
`_boundary` (finding or creating an execution, one run of it). This module keeps their names
importable from one place (tests, tools). Module-level state that is assigned or patched
(`_leases.lease_handoff`, `_leases.HOST_ID`, `_checkpoint_calls.model_call_gate`) must be set on
the module that owns it: setting it here changes nothing.
"""

from kitaru_core._boundary import ExecutionRun, copy_context_run, decode_stored, get_store, open_or_find
from kitaru_core._checkpoint_calls import (
    NO_RETRY,
    CallUsage,
    Kind,
    OnDivergence,
    OnInterrupted,
    RetryPolicy,
    check_on_interrupted,
    retry_delay_in_call,
    run_checkpoint,
    run_checkpoint_async,
    stop_retries_in_call,
)
from kitaru_core._context import (
    ExecutionContext,
    current_call_key,
    current_execution,
    current_scope,
    enter_scope,
    idempotency_key,
    leave_scope,
    scope,
)
from kitaru_core._leases import (
    HOST,
    HOST_ID,
    acquire,
    active_owners,
    holder_is_gone,
    lease_clock_s,
    lease_is_live,
    process_alive,
    process_start_ticks,
)
from kitaru_core._signals import (
    CancelExecution,
    LeaseLost,
    StopRun,
    SuspendExecution,
    find_signal,
    request_stop,
    stop_requested,
)
from kitaru_core._waits import WaitSpec, wait, wait_all

__all__ = [
    "HOST",
    "HOST_ID",
    "NO_RETRY",
    "CallUsage",
    "CancelExecution",
    "ExecutionContext",
    "ExecutionRun",
    "Kind",
    "LeaseLost",
    "OnDivergence",
    "OnInterrupted",
    "RetryPolicy",
    "StopRun",
    "SuspendExecution",
    "WaitSpec",
    "acquire",
    "active_owners",
    "check_on_interrupted",
    "copy_context_run",
    "current_call_key",
    "current_execution",
    "current_scope",
    "decode_stored",
    "enter_scope",
    "find_signal",
    "get_store",
    "holder_is_gone",
    "idempotency_key",
    "lease_clock_s",
    "lease_is_live",
    "leave_scope",
    "open_or_find",
    "process_alive",
    "process_start_ticks",
    "request_stop",
    "retry_delay_in_call",
    "run_checkpoint",
    "run_checkpoint_async",
    "scope",
    "stop_requested",
    "stop_retries_in_call",
    "wait",
    "wait_all",
]
