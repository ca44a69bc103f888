"""Every OpenAI Agents SDK seam the adapter relies on, checked at the first `durable()` call.

Methods are checked by name and signature, dataclass fields by name. Three seams are checked by
what the SDK does: `handoff(agent)` keeps its agent in `Handoff._agent_ref`, `Agent.as_tool` makes a
tool the adapter recognises as an agent tool, and `Runner.run`/`run_sync`/`run_streamed` go through
the default agent runner (where `durable()` installs the durable one). Cheap: no run, no request.
"""

from __future__ import annotations

from typing import Any

from kitaru_core.adapters import Seam, fields_seam, seam_check

RUNNER_NAMES = frozenset({"DEFAULT_AGENT_RUNNER", "get_default_agent_runner"})
MODEL_PARAMETERS = (
    "self",
    "system_instructions",
    "input",
    "model_settings",
    "tools",
    "output_schema",
    "handoffs",
    "tracing",
    "previous_response_id",
    "conversation_id",
    "prompt",
)


def _check_agent_reference() -> str | None:
    from agents import Agent
    from agents.handoffs import handoff

    agent: Agent[Any] = Agent(name="kitaru_seam_probe")
    reference = getattr(handoff(agent), "_agent_ref", None)
    if not callable(reference) or reference() is not agent:
        return (
            "handoff(agent) no longer keeps its agent in _agent_ref (agents reached by a handoff stay plain)"
        )
    return None


def _check_agent_tool() -> str | None:
    from agents import Agent

    from kitaru_adapters.openai_agents._tools import is_agent_tool

    tool = Agent(name="kitaru_seam_probe").as_tool(tool_name="probe", tool_description="probe")
    if not is_agent_tool(tool):
        return "a tool made by Agent.as_tool has neither tool_origin 'agent_as_tool' nor _is_agent_tool"
    return None


def _check_runner_routing() -> str | None:
    from agents import Runner

    bypassing = [
        name
        for name in ("run", "run_sync", "run_streamed")
        if not RUNNER_NAMES & set(getattr(getattr(Runner, name, None), "__code__", None).co_names or ())  # pyright: ignore[reportOptionalMemberAccess]
    ]
    if bypassing:
        return f"Runner.{', Runner.'.join(bypassing)} no longer run(s) through the default agent runner"
    return None


MODELS = "agents.models.interface"
TOOL = "agents.tool"

SEAMS: tuple[Seam, ...] = (
    # Runs.
    Seam(
        "agents.run",
        "AgentRunner.run",
        ("self", "starting_agent", "input"),
        purpose="the durable runner wraps the SDK's runner: a run's durable boundary",
    ),
    Seam("agents.run", "AgentRunner.run_sync", ("self", "starting_agent", "input"), purpose="the same, sync"),
    Seam(
        "agents.run",
        "AgentRunner.run_streamed",
        ("self", "starting_agent", "input"),
        purpose="the same, streamed",
    ),
    Seam("agents.run", "get_default_agent_runner", purpose="the runner the durable runner wraps"),
    Seam("agents.run", "set_default_agent_runner", ("runner",), purpose="installs the durable runner"),
    Seam(
        "agents",
        "Runner",
        check=_check_runner_routing,
        label="Runner.run, run_sync and run_streamed use the default agent runner",
        private=False,
        purpose="Runner.run(...) of a durable agent reaches the durable runner",
    ),
    fields_seam(
        "agents",
        "RunConfig",
        ("model", "model_provider"),
        purpose="a run's model provider (and model) is made durable, not replaced",
    ),
    Seam(
        "agents", "RunResultStreaming.stream_events", ("self",), purpose="a streamed run ends its execution"
    ),
    fields_seam(
        "agents.result",
        "RunResultStreaming",
        ("run_loop_task",),
        purpose="a streamed run's execution waits for the run's task",
    ),
    Seam("agents", "RunState", purpose="a run resumed from a RunState keeps its identity"),
    Seam(
        "agents.memory.session",
        "Session.get_items",
        ("limit",),
        purpose="a served run's session is truncated",
    ),
    Seam("agents.memory.session", "Session.add_items", ("items",), purpose="the same"),
    Seam("agents.memory.session", "Session.pop_item", purpose="the same"),
    Seam("agents.memory.session", "Session.clear_session", purpose="the same"),
    # Agents.
    Seam(
        "agents",
        "Agent.get_all_tools",
        ("self", "run_context"),
        purpose="subclassed: every function tool an agent gets is made durable",
    ),
    Seam("agents", "Agent.get_mcp_tools", ("self", "run_context"), purpose="subclassed: MCP tools too"),
    Seam("agents", "Agent.clone", ("self",), purpose="DurableRunner runs clones"),
    fields_seam(
        "agents",
        "Agent",
        ("name", "model", "handoffs", "tools"),
        purpose="models and handoffs are made durable; agents are found by name",
    ),
    # Models.
    Seam(
        MODELS,
        "Model.get_response",
        MODEL_PARAMETERS,
        purpose="the durable model: each request is a checkpoint call",
    ),
    Seam(MODELS, "Model.stream_response", MODEL_PARAMETERS, purpose="the same, streamed"),
    Seam(
        MODELS,
        "Model.get_retry_advice",
        ("self", "request"),
        purpose="retry advice comes from the wrapped model",
    ),
    Seam(
        MODELS,
        "ModelProvider.get_model",
        ("self", "model_name"),
        purpose="models from a provider are made durable",
    ),
    fields_seam(
        "agents.items",
        "ModelResponse",
        ("output", "usage", "response_id", "request_id"),
        purpose="stored and served model responses",
    ),
    Seam("agents.items", "TResponseStreamEvent", purpose="served streamed responses replay their events"),
    Seam("agents.usage", "serialize_usage", ("usage",), purpose="stores a response's usage"),
    Seam("agents.usage", "deserialize_usage", purpose="loads it"),
    # Tools and handoffs.
    fields_seam(
        TOOL,
        "FunctionTool",
        ("name", "on_invoke_tool", "needs_approval"),
        purpose="each tool call is a checkpoint call; approval is decided durably",
    ),
    Seam(
        "agents",
        "Agent.as_tool",
        check=_check_agent_tool,
        label="Agent.as_tool tools are marked _is_agent_tool (or tool_origin)",
        private=True,
        purpose="an agent used as a tool is a scope, not one recorded call",
    ),
    Seam(TOOL, "DEFAULT_APPROVAL_REJECTION_MESSAGE", purpose="what a denied tool call returns to the model"),
    fields_seam(TOOL, "ShellTool", ("executor",), purpose="local tools are refused (not recordable yet)"),
    Seam(TOOL, "ComputerTool", purpose="refused: runs locally"),
    Seam(TOOL, "LocalShellTool", purpose="refused: runs locally"),
    Seam(TOOL, "ApplyPatchTool", purpose="refused: runs locally"),
    Seam(TOOL, "CustomTool", purpose="refused: runs locally"),
    fields_seam("agents.tool_context", "ToolContext", ("tool_call_id",), purpose="a tool call's key"),
    fields_seam(
        "agents.run_context",
        "RunContextWrapper",
        ("context",),
        purpose="the run context a tool or handoff changed is stored and restored",
    ),
    Seam("agents.handoffs", "handoff", ("agent",), purpose="an agent listed as a handoff becomes a Handoff"),
    fields_seam(
        "agents.handoffs",
        "Handoff",
        ("tool_name", "agent_name", "on_invoke_handoff"),
        purpose="each handoff is a checkpoint call",
    ),
    Seam(
        "agents.handoffs",
        "Handoff",
        check=_check_agent_reference,
        label="agents.handoffs:Handoff._agent_ref",
        private=True,
        purpose="agents reached through a handoff are made durable before the run",
    ),
    Seam("agents.exceptions", "AgentsException", purpose="errors the SDK lets through a run unchanged"),
)


check = seam_check("openai-agents", "openai-agents", SEAMS, adapter="kitaru_adapters.openai_agents")
"""Check every seam once per process; raises `AdapterError` naming the version found and the supported range."""
