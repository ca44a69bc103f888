"""The adapter API: everything the adapters share, for whoever writes one for another framework.

A user writing a flow needs only `kitaru_core` (`flow`, `checkpoint`, `wait`, `execution`...). An
adapter turns a framework's model requests and tool calls into checkpoint calls and its agent runs
into executions; this module holds the pieces every adapter uses, once (adapters share helpers
through it, never by copying them). It imports no agent framework.

The pieces:

- **Recording calls**: `run_checkpoint` / `run_checkpoint_async` record one model request or tool
  call (serving it from the store on resume), with its `CallUsage` (tokens, `cost_usd`) and an
  input `fingerprint` of its `jsonable` form; `scope` nests the calls of one agent run or tool;
  `durable_run` opens (or joins) the execution of one agent run; `execution_context` gives the
  runtime's context of the running execution.
- **Retries**: `model_retry_policy` / `model_retries` choose how a failed model request is retried
  inside its checkpoint call; `retry_delay_in_call` and `stop_retries_in_call` let the call body
  steer them.
- **Interrupted calls**: `SideEffectPolicy` maps `durable(..., side_effects=...)` to each tool call's
  `on_interrupted` mode.
- **Approvals**: `ApprovalPolicy` decides which tool calls need one; `request_approvals`,
  `request_approval` and `request_approval_together` (with `APPROVAL_BATCH_WINDOW_S`) turn them
  into durable waits answered by an `ApprovalDecision`; `approval_timeout_s` reads
  `durable(..., approval_timeout=...)`.
- **Streaming**: `relay_while_running` passes a streamed response's items on while the checkpoint
  call that records it runs; `final_once_relayed` stops retries once something was passed on.
- **Seams**: `Seam`, `fields_seam`, `per_check` and `check_seams` (or `seam_check`) check, when
  `durable()` is first called, that every framework internal the adapter relies on is still there;
  `declared_range` / `installed_version` name the supported and installed releases.
- **Replay overrides**: a replay may give a model request a new response or a tool call a new
  result; they are stored framework-neutral, and an adapter's codec converts them in `decode`:
  `read_model_response_override` / `read_tool_result_override(format, payload)` return a
  `ModelResponseOverride` (text and `ToolCallOverride`s) / a `ToolResultOverride` (plain JSON), or
  `None` for the call's own output (`read_override` returns either).
- **Durable subclasses**: `DurableSubclasses` makes each durable subclass of a framework class once,
  under a lock, swaps an object's class to it and back; `register_durable_subclass` dresses a
  durable subclass as its framework class.

Writing an adapter, in short: list the framework's seams and call `check_seams` in `durable()`;
run each agent run under `durable_run(...)`; wrap each model request and tool call in
`run_checkpoint(_async)` with `inputs=jsonable(...)`, a codec for its output and, for model
requests, `usage=` giving a `CallUsage` with `cost_usd(...)`. See the "Writing an adapter" section
of the API reference.

Example:
    ```python
    from kitaru_core.adapters import CallUsage, cost_usd, jsonable, run_checkpoint


    def recorded_request(model_name: str, messages: list[dict[str, str]], send) -> dict:
        def usage(reply: dict) -> CallUsage:
            tokens = reply["usage"]
            return CallUsage(
                model_name=model_name,
                input_tokens=tokens["input"],
                output_tokens=tokens["output"],
                cost_usd=cost_usd(model_name, tokens["input"], tokens["output"]),
            )

        return run_checkpoint(
            "model", lambda: send(messages), kind="model", inputs=jsonable(messages), usage=usage
        )
    ```
"""

from kitaru_core._api import durable_run
from kitaru_core._approvals import (
    ApprovalDecision,
    ApprovalPolicy,
    ApprovalRequest,
    approval_wait_name,
    request_approval,
    request_approval_together,
    request_approvals,
)
from kitaru_core._budgets import budget_scope
from kitaru_core._checkpoint_calls import (
    CallUsage,
    retry_delay_in_call,
    run_checkpoint,
    run_checkpoint_async,
    stop_retries_in_call,
)
from kitaru_core._context import scope
from kitaru_core._interrupted import SideEffectPolicy
from kitaru_core._model_retries import model_retries, model_retry_policy
from kitaru_core._overrides import (
    MODEL_RESPONSE_OVERRIDE_FORMAT,
    TOOL_RESULT_OVERRIDE_FORMAT,
    ModelResponseOverride,
    ToolCallOverride,
    ToolResultOverride,
    read_model_response_override,
    read_override,
    read_tool_result_override,
)
from kitaru_core._serialization import canonical_json, fingerprint
from kitaru_core.adapters._seams import (
    Seam,
    check_seams,
    declared_range,
    field_names,
    fields_seam,
    installed_version,
    per_check,
    reset_seam_checks,
    seam_check,
)
from kitaru_core.adapters._shared import (
    APPROVAL_BATCH_WINDOW_S,
    UNCONVERTED,
    approval_timeout_s,
    cost_usd,
    execution_context,
    jsonable,
    stable_text,
)
from kitaru_core.adapters._streaming import final_once_relayed, relay_while_running
from kitaru_core.adapters._subclasses import DurableSubclasses, register_durable_subclass

__all__ = [
    "APPROVAL_BATCH_WINDOW_S",
    "MODEL_RESPONSE_OVERRIDE_FORMAT",
    "TOOL_RESULT_OVERRIDE_FORMAT",
    "UNCONVERTED",
    "ApprovalDecision",
    "ApprovalPolicy",
    "ApprovalRequest",
    "CallUsage",
    "DurableSubclasses",
    "ModelResponseOverride",
    "Seam",
    "SideEffectPolicy",
    "ToolCallOverride",
    "ToolResultOverride",
    "approval_timeout_s",
    "approval_wait_name",
    "budget_scope",
    "canonical_json",
    "check_seams",
    "cost_usd",
    "declared_range",
    "durable_run",
    "execution_context",
    "field_names",
    "fields_seam",
    "final_once_relayed",
    "fingerprint",
    "installed_version",
    "jsonable",
    "model_retries",
    "model_retry_policy",
    "per_check",
    "read_model_response_override",
    "read_override",
    "read_tool_result_override",
    "register_durable_subclass",
    "relay_while_running",
    "request_approval",
    "request_approval_together",
    "request_approvals",
    "reset_seam_checks",
    "retry_delay_in_call",
    "run_checkpoint",
    "run_checkpoint_async",
    "scope",
    "seam_check",
    "stable_text",
    "stop_retries_in_call",
]
