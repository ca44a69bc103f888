"""What the LangGraph adapter costs per graph run, and what a resume saves.

Not a test (pytest does not collect it). Run it with `nox -s bench_langgraph` or, from an
environment with the `langgraph` extra and langchain-openai:

    python tests/benchmarks/bench_langgraph.py [--runs N]

A hand-built graph (a node making three model calls, then a `bind_tools` agent and a `ToolNode`:
5 model calls and 1 tool call per run, ChatOpenAI over HTTP) against the project's scripted
OpenAI-compatible server on 127.0.0.1, with a fresh SQLite file store. It prints medians over N
runs of:

1. plain: `graph.invoke` without the adapter,
2. durable: the same graph made durable, on a new thread each time (6 checkpoint calls recorded),
3. served: the same thread invoked again (every call served from the store: no HTTP request),

and the ratios durable/plain and served/plain. The model server answers in about a millisecond,
so "durable - plain" is the adapter's own overhead; a real model call takes seconds.
"""

from __future__ import annotations

import argparse
import operator
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
from langchain_core.messages import AnyMessage, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from typing_extensions import TypedDict

import kitaru_core
from kitaru_adapters.langgraph import durable
from kitaru_core.testing import Rule, Script, ScriptedModelServer, ScriptedToolCall

SCRIPT = Script(
    rules=[
        Rule(when_last_user_contains="question", text="an answer"),
        Rule(when_last_tool_result_contains="=", text="Sum: {last_tool_result}"),
        Rule(when_tools_offered="add", tool_calls=(ScriptedToolCall("add", {"a": 2, "b": 3}),)),
    ],
    model_names=("gpt-4o-mini",),
)


@tool
def add(a: int, b: int) -> str:
    """Add two numbers."""
    return f"{a}+{b}={a + b}"


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    notes: Annotated[list[str], operator.add]


def build(base_url: str) -> Any:
    model = ChatOpenAI(
        model="gpt-4o-mini",
        base_url=base_url,
        api_key="scripted",  # pyright: ignore[reportArgumentType]
        max_retries=0,
        http_client=httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)),
    )

    def research(state: State) -> dict[str, Any]:
        return {"notes": [str(model.invoke(f"question {index}").content) for index in range(3)]}

    def agent(state: State) -> dict[str, Any]:
        return {"messages": [model.bind_tools([add]).invoke(state["messages"])]}

    builder = StateGraph(State).add_node("research", research).add_node("agent", agent)
    builder.add_node("tools", ToolNode([add]))
    builder.add_edge(START, "research").add_edge("research", "agent")
    builder.add_conditional_edges("agent", tools_condition).add_edge("tools", "agent")
    return builder.compile()


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def measure(base_url: str, runs: int) -> dict[str, float]:
    plain_graph = build(base_url)
    durable_graph = durable(build(base_url), name="bench")
    payload = {"messages": [HumanMessage("Add 2 and 3")], "notes": []}
    plain: list[float] = []
    recorded: list[float] = []
    served: list[float] = []
    for index in range(runs + 1):  # the first round warms up imports and connections
        started = time.perf_counter()
        plain_graph.invoke(payload)
        plain_s = time.perf_counter() - started

        config = {"configurable": {"thread_id": f"bench-{index}"}}
        started = time.perf_counter()
        durable_graph.invoke(payload, config)
        recorded_s = time.perf_counter() - started

        started = time.perf_counter()
        result = durable_graph.invoke(payload, config)
        served_s = time.perf_counter() - started
        assert result["messages"][-1].content == "Sum: 2+3=5", result["messages"][-1].content
        if index:
            plain.append(plain_s)
            recorded.append(recorded_s)
            served.append(served_s)
    return {"plain": _median_ms(plain), "durable": _median_ms(recorded), "served": _median_ms(served)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        kitaru_core.configure(
            store_url=f"sqlite:///{Path(directory) / 'bench.db'}",
            artifacts_url=str(Path(directory) / "artifacts"),
        )
        with ScriptedModelServer(SCRIPT) as server:
            figures = measure(server.base_url, options.runs)
    plain = figures["plain"]
    print(f"runs: {options.runs} (5 model calls + 1 tool call each), SQLite file store, scripted server")
    print(f"plain run              {plain:8.2f} ms")
    print(
        f"durable run (recorded) {figures['durable']:8.2f} ms  {figures['durable'] / plain:5.2f}x plain"
        f"  (+{figures['durable'] - plain:.2f} ms: open, lease and finish an execution, record 6 calls)"
    )
    print(f"served run (resumed)   {figures['served']:8.2f} ms  {figures['served'] / plain:5.2f}x plain")


if __name__ == "__main__":
    main()
