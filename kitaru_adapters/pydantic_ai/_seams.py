"""Every PydanticAI seam the adapter relies on, checked at the first `durable()` call.

The adapter's capability overrides PydanticAI's capability hooks: a hook renamed upstream would
simply never be called, so each hook is checked by name and keyword parameters on
`AbstractCapability`. `durable()` adds the capability in `Agent.iter`; that every run method still
goes through `iter` is checked by the names their code uses. Dataclass fields the adapter reads
(`ModelResponse.model_id` first appeared in 2.64) are checked by name. Cheap: no run, no request.
"""

from __future__ import annotations

import inspect
from typing import Any

from kitaru_core.adapters import Seam, fields_seam, seam_check

# Each run method of `Agent` and a method it runs through on its way to `iter` (where the
# capability is added): `run_sync` runs `run`, `run_stream_events` runs `run`, `run` and
# `run_stream` open `iter`.
RUN_PATHS = {"run": "iter", "run_stream": "iter", "run_sync": "run", "run_stream_events": "run"}


def _names_used(function: Any) -> set[str]:
    """The global and attribute names a function's code (and the code nested in it) uses."""
    code = inspect.unwrap(function).__code__
    names = set(code.co_names)
    for constant in code.co_consts:
        if inspect.iscode(constant):
            names |= set(constant.co_names)
    return names


def _check_run_paths() -> str | None:
    from pydantic_ai import Agent

    bypassing = [
        f"Agent.{method} (no longer uses {through})"
        for method, through in RUN_PATHS.items()
        if through not in _names_used(getattr(Agent, method))
    ]
    return f"runs would not reach Agent.iter: {', '.join(bypassing)}" if bypassing else None


CAPABILITIES = "pydantic_ai.capabilities"

SEAMS: tuple[Seam, ...] = (
    Seam(
        "pydantic_ai",
        "Agent.iter",
        ("self", "user_prompt", "message_history", "capabilities"),
        purpose="subclassed: every run's durable boundary, adding the durable capability",
    ),
    Seam(
        "pydantic_ai",
        "Agent",
        check=_check_run_paths,
        label="Agent.run, run_sync, run_stream and run_stream_events go through Agent.iter",
        private=False,
        purpose="every run method is durable",
    ),
    Seam("pydantic_ai", "Agent.name", purpose="the default execution name"),
    Seam(
        CAPABILITIES,
        "AbstractCapability.get_ordering",
        ("self",),
        purpose="the durable capability sits outermost",
    ),
    Seam(
        CAPABILITIES,
        "AbstractCapability.wrap_model_request",
        ("self", "ctx", "request_context", "handler"),
        purpose="overridden: each model request is a checkpoint call",
    ),
    Seam(
        CAPABILITIES,
        "AbstractCapability.prepare_tools",
        ("self", "ctx", "tool_defs"),
        purpose="overridden: tools needing approval are gated by the adapter",
    ),
    Seam(
        CAPABILITIES,
        "AbstractCapability.wrap_tool_execute",
        ("self", "ctx", "call", "tool_def", "args", "handler"),
        purpose="overridden: each tool call is a checkpoint call",
    ),
    Seam(
        CAPABILITIES,
        "AbstractCapability.handle_deferred_tool_calls",
        ("self", "ctx", "requests"),
        purpose="overridden: approvals PydanticAI asks for become durable waits",
    ),
    Seam(CAPABILITIES, "CapabilityOrdering", ("position",), purpose="the capability's ordering"),
    fields_seam(
        "pydantic_ai.models",
        "ModelRequestContext",
        ("model", "messages", "model_settings", "model_request_parameters", "model_id"),
        purpose="a model request's fingerprint",
    ),
    fields_seam(
        "pydantic_ai.messages",
        "ModelResponse",
        ("parts", "usage", "model_name", "model_id"),
        purpose="stored and served responses (model_id is stamped on served ones)",
    ),
    Seam("pydantic_ai.messages", "ModelResponse.cost", ("self",), purpose="a recorded request's cost"),
    Seam(
        "pydantic_ai.messages", "ModelMessagesTypeAdapter", purpose="stores responses; fingerprints messages"
    ),
    Seam("pydantic_ai.messages", "tool_return_content_ta", purpose="stores tool results"),
    fields_seam(
        "pydantic_ai.messages",
        "ToolCallPart",
        ("tool_name", "args", "tool_call_id"),
        purpose="a tool call's key and recorded arguments",
    ),
    Seam("pydantic_ai.messages", "ToolReturn", purpose="a tool's rich result, stored as such"),
    fields_seam(
        "pydantic_ai",
        "RunContext",
        ("tool_call_approved",),
        purpose="an approved call runs under its own key",
    ),
    fields_seam(
        "pydantic_ai.tools",
        "ToolDefinition",
        ("name", "kind", "metadata"),
        purpose="approval gating marks tool definitions",
    ),
    fields_seam("pydantic_ai.tools", "DeferredToolRequests", ("approvals",), purpose="approvals asked for"),
    fields_seam("pydantic_ai.tools", "DeferredToolResults", ("approvals",), purpose="decisions handed back"),
    Seam("pydantic_ai.tools", "ToolApproved", purpose="an approval"),
    Seam("pydantic_ai.tools", "ToolDenied", ("message",), purpose="a denial with its message"),
    Seam(
        "pydantic_ai.exceptions",
        "ApprovalRequired",
        purpose="a tool asks for approval (recorded as an outcome)",
    ),
    Seam("pydantic_ai.exceptions", "CallDeferred", purpose="a deferred tool call (recorded as an outcome)"),
    Seam("pydantic_ai.exceptions", "ModelRetry", purpose="a tool's retry prompt (recorded as an outcome)"),
    Seam("pydantic_ai.exceptions", "ToolRetryError", purpose="how a retry reaches the capability"),
    Seam("pydantic_ai.exceptions", "ToolFailed", purpose="a tool's failure (recorded as an outcome)"),
    Seam("pydantic_ai.exceptions", "ToolFailedError", purpose="how a failure reaches the capability"),
)


check = seam_check("pydantic-ai", "pydantic-ai-slim", SEAMS, adapter="kitaru_adapters.pydantic_ai")
"""Check every seam once per process; raises `AdapterError` naming the version found and the supported range."""
