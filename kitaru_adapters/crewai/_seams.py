"""Every CrewAI seam the adapter relies on, checked at the first `durable()` call.

Methods are checked by name and signature, pydantic fields by name. Two markers are checked by
what CrewAI does with them: `_crewai_rate_limit_wrapped` (a `call` marked with it gets no second
retry loop from `BaseLLM`) and `__flow_persistence_config__` (what `@persist` leaves on what it
decorates). Cheap: no LLM, crew or flow is built.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from kitaru_core.adapters import Seam, fields_seam, seam_check

RATE_LIMIT_MARKER = "_crewai_rate_limit_wrapped"
PERSISTENCE_MARKER = "__flow_persistence_config__"


def _check_original_role() -> str | None:
    from crewai import Agent

    if "_original_role" not in (Agent.__private_attributes__ or {}):
        return "Agent has no private attribute _original_role (a kickoff's identity would use the interpolated role)"
    return None


def _check_rate_limit_marker() -> str | None:
    from crewai.llms.base_llm import BaseLLM

    wrap: Any = getattr(BaseLLM, "_wrap_call_method", None)
    if wrap is None:
        if importlib.util.find_spec("crewai.llms.retry") is None:
            return None  # a release without CrewAI's rate-limit retry (1.15.15) wraps nothing: no marker needed
        return "BaseLLM._wrap_call_method, which reads the marker, is missing"

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        del self, args, kwargs

    setattr(call, RATE_LIMIT_MARKER, True)
    marked = type("MarkedLLM", (), {"call": call})
    wrap.__func__(marked, "call")
    if vars(marked)["call"] is not call:
        return (
            f"BaseLLM wraps a subclass's call marked {RATE_LIMIT_MARKER} in its rate-limit retry "
            "(each durable LLM call would be retried twice over)"
        )
    return None


def _check_persistence_marker() -> str | None:
    from crewai.flow.persistence import persist

    def step(self: Any) -> None:
        del self

    if not hasattr(persist()(step), PERSISTENCE_MARKER):
        return f"@persist no longer marks what it decorates with {PERSISTENCE_MARKER} (persisted flows not recognised)"
    return None


BASE_LLM = "crewai.llms.base_llm"
CALL_PARAMETERS = (
    "self",
    "messages",
    "tools",
    "available_functions",
    "from_task",
    "from_agent",
    "response_model",
)
HUMAN_INPUT = "crewai.core.providers.human_input"
FLOW = "crewai.flow.flow"

SEAMS: tuple[Seam, ...] = (
    # Crews.
    Seam("crewai", "Crew.kickoff", ("self", "inputs"), purpose="subclassed: a kickoff's durable boundary"),
    Seam("crewai", "Crew.akickoff", ("self", "inputs"), purpose="subclassed: an async kickoff's boundary"),
    Seam("crewai", "Crew.copy", ("self",), purpose="a copied durable crew stays durable"),
    Seam(
        "crewai",
        "Crew._prepare_tools",
        ("self", "agent", "task", "tools"),
        purpose="overridden: the tools CrewAI adds per task (delegation, MCP, memory) are made durable",
    ),
    fields_seam(
        "crewai",
        "Crew",
        (
            "agents",
            "tasks",
            "manager_agent",
            "manager_llm",
            "planning_llm",
            "chat_llm",
            "function_calling_llm",
            "stream",
            "name",
        ),
        purpose="every LLM slot and agent of a crew is made durable; its name names the execution",
    ),
    fields_seam(
        "crewai",
        "Agent",
        ("llm", "function_calling_llm", "tools", "agent_executor", "role"),
        purpose="an agent's LLMs and tools are wrapped (set without validation)",
    ),
    fields_seam(
        "crewai",
        "Task",
        ("tools", "agent", "name", "id"),
        purpose="task tools are wrapped; task names label tool calls and waits",
    ),
    Seam(
        "crewai",
        "Agent",
        check=_check_original_role,
        label="crewai:Agent._original_role",
        private=True,
        purpose="a kickoff's identity uses the roles as written, before CrewAI interpolates the inputs",
    ),
    Seam(
        "crewai.utilities.llm_utils",
        "create_llm",
        ("llm_value",),
        purpose="an LLM slot given as a model name is built before it is wrapped",
    ),
    Seam("crewai.context", "get_current_task_id", purpose="which task a tool call belongs to (its key)"),
    # LLMs: every request CrewAI sends.
    Seam(
        BASE_LLM,
        "BaseLLM.call",
        CALL_PARAMETERS,
        purpose="wrapped in every LLM class: each request is recorded",
    ),
    Seam(BASE_LLM, "BaseLLM.acall", CALL_PARAMETERS, purpose="wrapped in every LLM class: async requests"),
    Seam(
        BASE_LLM,
        "BaseLLM",
        check=_check_rate_limit_marker,
        label=f"the {RATE_LIMIT_MARKER} marker",
        private=True,
        purpose="the durable LLM's calls get no second rate-limit retry loop",
    ),
    fields_seam(
        BASE_LLM,
        "BaseLLM",
        ("model", "stop", "provider", "base_url", "api_key", "is_litellm"),
        purpose="the durable LLM mirrors the wrapped LLM's settings; model names price calls",
    ),
    Seam(BASE_LLM, "call_stop_override", purpose="a call's stop words reach the wrapped LLM"),
    Seam(BASE_LLM, "call_stream_override", purpose="a call's streaming mode reaches the wrapped LLM"),
    Seam(
        "crewai.utilities.internal_instructor",
        "InternalInstructor.to_pydantic",
        ("self",),
        private=True,
        purpose="patched: structured-output conversion requests are recorded",
    ),
    Seam(
        "crewai.utilities.internal_instructor",
        "InternalInstructor",
        ("content", "model", "llm"),
        private=True,
        purpose="the request's content, output model and LLM, read off the instructor",
    ),
    # Tools.
    Seam(
        "crewai.tools",
        "BaseTool._run",
        purpose="overridden by the durable tool: each run is a checkpoint call",
    ),
    Seam("crewai.tools", "BaseTool._arun", purpose="overridden by the durable tool: async runs"),
    fields_seam(
        "crewai.tools",
        "BaseTool",
        (
            "name",
            "description",
            "args_schema",
            "result_schema",
            "env_vars",
            "cache_function",
            "result_as_answer",
            "max_usage_count",
            "tool_failure_policy",
        ),
        purpose="the durable tool copies the wrapped tool's name, schema and flags",
    ),
    # Human input.
    Seam(
        HUMAN_INPUT,
        "SyncHumanInputProvider._prompt_input",
        ("crew",),
        purpose="overridden: task feedback is a durable wait instead of stdin",
    ),
    Seam(
        HUMAN_INPUT,
        "SyncHumanInputProvider._prompt_input_async",
        ("crew",),
        purpose="overridden: the same for async crews",
    ),
    Seam(HUMAN_INPUT, "set_provider", ("provider",), purpose="installs the durable human-input provider"),
    Seam(HUMAN_INPUT, "reset_provider", ("token",), purpose="restores the previous provider"),
    # Flows.
    Seam(FLOW, "Flow.kickoff_async", ("self", "inputs"), purpose="subclassed: a flow kickoff's boundary"),
    Seam(
        FLOW,
        "Flow._execute_method",
        ("self", "method_name", "method"),
        purpose="wrapped: each flow step is a checkpoint call",
    ),
    Seam(FLOW, "Flow._restore_state", ("stored_state",), purpose="a served step restores the state it left"),
    Seam(
        FLOW, "Flow._copy_and_serialize_state", ("self",), purpose="the state a step leaves, stored with it"
    ),
    fields_seam(FLOW, "Flow", ("persistence",), purpose="whether a flow persists its state"),
    Seam(
        "crewai.flow.persistence",
        "persist",
        check=_check_persistence_marker,
        label=f"the {PERSISTENCE_MARKER} marker of @persist",
        private=True,
        purpose="a persisted flow's id names its execution",
    ),
)


check = seam_check("crewai", "crewai", SEAMS, adapter="kitaru_adapters.crewai")
"""Check every seam once per process; raises `AdapterError` naming the version found and the supported range."""
