"""Every LangGraph and LangChain seam the adapter relies on, checked at the first `durable()` call.

Attribute seams are checked by name and signature. The config keys and metadata LangGraph puts in
a running node's config cannot be: a probe runs a two-node graph (one node reached through an edge,
one through `Send`) on an in-memory checkpointer, in a context of its own, and reads what a node
sees. It takes a few milliseconds, once per process.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any, TypedDict

from kitaru_core.adapters import Seam, per_check, seam_check

TASK_ID_KEY = "__pregel_task_id"
CHECKPOINTER_KEY = "__pregel_checkpointer"
PULL_MARKER = "__pregel_pull"
PUSH_MARKER = "__pregel_push"
INPUT_CHANNEL = "__start__"
PROBE_NODES = ("pull", "push")


class _ProbeState(TypedDict):
    value: int


@dataclass
class ProbeResult:
    """What the nodes of the probe graph saw, and what its checkpointer kept."""

    configs: dict[str, dict[str, Any]] = field(default_factory=dict[str, dict[str, Any]])
    graph: Any = None
    latest_input: Any = None
    problem: str | None = None


def _run_probe() -> ProbeResult:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.config import get_config
    from langgraph.graph import START, StateGraph
    from langgraph.types import Send

    result = ProbeResult()

    def node(name: str) -> Any:
        def record(state: _ProbeState) -> dict[str, int]:
            result.configs[name] = dict(get_config())
            return {}

        return record

    builder = StateGraph(_ProbeState)
    for name in PROBE_NODES:
        builder.add_node(name, node(name))

    def fan_out(state: _ProbeState) -> list[Any]:
        return ["pull", Send("push", state)]

    builder.add_conditional_edges(START, fan_out, ["pull", "push"])
    checkpointer = InMemorySaver()
    graph = builder.compile(checkpointer=checkpointer, name="kitaru-seam-probe")
    config: Any = {"configurable": {"thread_id": "kitaru-seam-probe"}}
    graph.invoke({"value": 1}, config)
    result.graph = graph
    latest = next(iter(checkpointer.list(config, filter={"source": "input"}, limit=1)), None)
    result.latest_input = None if latest is None else latest.checkpoint["channel_values"].get(INPUT_CHANNEL)
    return result


def _run_probe_untraced() -> ProbeResult:
    """The probe, never traced: with LangSmith tracing on it would otherwise send a run over the network."""
    try:
        from langsmith import tracing_context
    except ImportError:  # pragma: no cover - langsmith comes with langchain-core
        return _run_probe()
    with tracing_context(enabled=False):
        return _run_probe()


@per_check
def _probe() -> ProbeResult:
    # An empty context: a durable() call made inside a running graph must not nest the probe in it.
    try:
        return contextvars.Context().run(_run_probe_untraced)
    except Exception as error:
        return ProbeResult(problem=f"the probe graph failed with {type(error).__name__}: {error}")


def _node_configs() -> dict[str, dict[str, Any]]:
    probe = _probe()
    if probe.problem is not None:
        raise RuntimeError(probe.problem)
    missing = [name for name in PROBE_NODES if name not in probe.configs]
    if missing:
        raise RuntimeError(f"the probe graph's node(s) {', '.join(missing)} did not run")
    return probe.configs


def _configurable(name: str) -> dict[str, Any]:
    return dict(_node_configs()[name].get("configurable") or {})


def _metadata(name: str) -> dict[str, Any]:
    return dict(_node_configs()[name].get("metadata") or {})


def _check_task_id() -> str | None:
    values = {name: _configurable(name).get(TASK_ID_KEY) for name in PROBE_NODES}
    if not all(isinstance(value, str) and value for value in values.values()):
        return f"a running node's config has no {TASK_ID_KEY!r} (parallel tasks' call counters would merge)"
    if len(set(values.values())) != len(values):
        return f"two parallel tasks got the same {TASK_ID_KEY!r}"
    return None


def _check_checkpointer() -> str | None:
    from langgraph.checkpoint.base import BaseCheckpointSaver

    if not isinstance(_configurable("pull").get(CHECKPOINTER_KEY), BaseCheckpointSaver):
        return (
            f"a running node's config has no checkpointer under {CHECKPOINTER_KEY!r} (a durable graph "
            "run inside a node would take approvals as durable waits instead of interrupt())"
        )
    return None


def _check_namespace() -> str | None:
    configurable, metadata = _configurable("pull"), _metadata("pull")
    if "checkpoint_ns" not in configurable and "langgraph_checkpoint_ns" not in metadata:
        return "a running node's config has neither configurable 'checkpoint_ns' nor metadata 'langgraph_checkpoint_ns'"
    return None


def _check_step_and_node() -> str | None:
    metadata = _metadata("pull")
    if not isinstance(metadata.get("langgraph_step"), int):
        return "a running node's metadata has no integer 'langgraph_step'"
    if metadata.get("langgraph_node") != "pull":
        return "a running node's metadata 'langgraph_node' is not the node's name"
    return None


def _check_path(name: str, marker: str) -> str | None:
    path = _metadata(name).get("langgraph_path")
    if not isinstance(path, list | tuple) or not path or path[0] != marker:  # pyright: ignore[reportUnknownArgumentType]
        return f"the {name} task's metadata 'langgraph_path' is {path!r}, not a path starting with {marker!r}"
    return None


def _check_input_channel() -> str | None:
    _node_configs()
    if _probe().latest_input != {"value": 1}:
        return (
            f"the latest source='input' checkpoint does not keep the run's input in channel {INPUT_CHANNEL!r} "
            "(the re-run rule could not tell a repeated input from a new one)"
        )
    return None


def _check_graph_attributes() -> str | None:
    _node_configs()
    graph = _probe().graph
    missing = [
        name
        for name in ("checkpointer", "output_channels", "stream_mode", "nodes", "name")
        if not hasattr(graph, name)
    ]
    return f"a compiled graph has no {', '.join(missing)}" if missing else None


CHAT_MODEL = "langchain_core.language_models.chat_models"
PREGEL = "langgraph.pregel"

SEAMS: tuple[Seam, ...] = (
    # LangChain chat models: every model call of a graph goes through these.
    Seam(
        CHAT_MODEL,
        "BaseChatModel._generate_with_cache",
        ("self", "messages", "stop", "run_manager"),
        purpose="wrapped: each invoke/ainvoke model call is a checkpoint call",
    ),
    Seam(
        CHAT_MODEL,
        "BaseChatModel._agenerate_with_cache",
        ("self", "messages", "stop", "run_manager"),
        purpose="wrapped: the async model call",
    ),
    Seam(
        CHAT_MODEL,
        "BaseChatModel.stream",
        ("self", "input", "config", "stop"),
        purpose="wrapped: a direct stream() of a model",
    ),
    Seam(
        CHAT_MODEL,
        "BaseChatModel.astream",
        ("self", "input", "config", "stop"),
        purpose="wrapped: a direct astream() of a model",
    ),
    Seam(
        CHAT_MODEL,
        "BaseChatModel._should_stream",
        ("async_api", "run_manager"),
        purpose="whether LangChain streams a call to its callbacks (recorded chunks are replayed)",
    ),
    Seam(
        CHAT_MODEL,
        "BaseChatModel._convert_input",
        purpose="the messages of a streamed request, for its fingerprint",
    ),
    Seam(
        "langchain_core.outputs",
        "ChatGenerationChunk",
        ("message",),
        purpose="replayed stream chunks handed to the callbacks",
    ),
    Seam("langchain_core.outputs", "ChatResult", ("generations",), purpose="a served model result"),
    Seam("langchain_core.messages", "message_to_dict", ("message",), purpose="stores model results"),
    Seam("langchain_core.messages", "messages_from_dict", ("messages",), purpose="loads model results"),
    # LangChain tools: every tool call of a graph (ToolNode, agents) goes through these.
    Seam(
        "langchain_core.tools",
        "BaseTool.run",
        ("self", "tool_input", "tool_call_id"),
        purpose="wrapped: each tool call is a checkpoint call",
    ),
    Seam(
        "langchain_core.tools",
        "BaseTool.arun",
        ("self", "tool_input", "tool_call_id"),
        purpose="wrapped: the async tool call",
    ),
    Seam(
        "langchain_core.tools",
        "BaseTool._filter_injected_args",
        ("tool_input",),
        purpose="leaves injected state and runtime out of a tool call's recorded arguments",
    ),
    # LangGraph graphs.
    Seam(
        PREGEL, "Pregel.invoke", ("self", "input", "config"), purpose="subclassed: a run's durable boundary"
    ),
    Seam(PREGEL, "Pregel.ainvoke", ("self", "input", "config"), purpose="subclassed: async boundary"),
    Seam(
        PREGEL,
        "Pregel.stream",
        ("self", "input", "config", "stream_mode", "subgraphs"),
        purpose="subclassed: a streamed run's boundary",
    ),
    Seam(
        PREGEL,
        "Pregel.astream",
        ("self", "input", "config", "stream_mode", "subgraphs"),
        purpose="subclassed: an async streamed run's boundary",
    ),
    Seam(PREGEL, "Pregel.get_state", ("config",), purpose="the re-run rule reads the thread's state"),
    Seam(PREGEL, "Pregel.aget_state", ("config",), purpose="the same, for async entry points"),
    Seam(
        "langgraph.checkpoint.base",
        "BaseCheckpointSaver.list",
        ("config", "filter", "limit"),
        purpose="the re-run rule finds the thread's latest input",
    ),
    Seam(
        "langgraph.checkpoint.base",
        "BaseCheckpointSaver.alist",
        ("config", "filter", "limit"),
        purpose="the same, for async entry points",
    ),
    Seam("langgraph.config", "get_config", purpose="a call's position: the running node's config"),
    Seam("langgraph.types", "interrupt", ("value",), purpose="approval gates on graphs with a checkpointer"),
    Seam(
        "langgraph.types",
        "Command",
        ("update", "resume", "goto"),
        purpose="resume input; stored tool results",
    ),
    Seam("langgraph.types", "Send", ("node", "arg"), purpose="stored tool results"),
    Seam("langgraph.errors", "GraphBubbleUp", purpose="interrupts pass through a tool call unrecorded"),
    # What a running node sees: checked by running the probe graph.
    Seam(
        PREGEL,
        check=_check_task_id,
        label=f"node config key configurable[{TASK_ID_KEY!r}]",
        private=True,
        purpose="tells parallel tasks apart when counting a task's repeated calls",
    ),
    Seam(
        PREGEL,
        check=_check_checkpointer,
        label=f"node config key configurable[{CHECKPOINTER_KEY!r}]",
        private=True,
        purpose="whether a graph run inside a node has a checkpointer (interrupt() approvals)",
    ),
    Seam(
        PREGEL,
        check=_check_namespace,
        label="node config key configurable['checkpoint_ns']",
        private=False,
        purpose="the graph namespace of a call's position",
    ),
    Seam(
        PREGEL,
        check=_check_step_and_node,
        label="node metadata 'langgraph_step' and 'langgraph_node'",
        private=False,
        purpose="the superstep and node of a call's position",
    ),
    Seam(
        PREGEL,
        check=lambda: _check_path("pull", PULL_MARKER),
        private=True,
        label=f"node metadata 'langgraph_path' starting with {PULL_MARKER!r}",
        purpose="a call's task path",
    ),
    Seam(
        PREGEL,
        check=lambda: _check_path("push", PUSH_MARKER),
        private=True,
        label=f"node metadata 'langgraph_path' of a Send task starting with {PUSH_MARKER!r}",
        purpose="a Send task's path",
    ),
    Seam(
        PREGEL,
        check=_check_input_channel,
        private=True,
        label=f"input checkpoints keep the input in channel {INPUT_CHANNEL!r}",
        purpose="the re-run rule compares a call's input with the thread's latest",
    ),
    Seam(
        PREGEL,
        check=_check_graph_attributes,
        private=False,
        label="compiled graph attributes checkpointer, output_channels, stream_mode, nodes, name",
        purpose="the boundary, served outputs and default names",
    ),
)


check = seam_check(
    "langgraph", "langgraph", SEAMS, adapter="kitaru_adapters.langgraph", related=["langchain-core"]
)
"""Check every seam once per process; raises `AdapterError` naming the version found and the supported range."""
