"""Installing and removing durability: `durable()` from many threads at once, and `undurable()`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool

from kitaru_adapters.langgraph import durable, is_durable, undurable
from kitaru_core import Client
from kitaru_core.testing import Rule, Script, ScriptedToolCall

from ..concurrent_durable import run_concurrent_durable
from .conftest import ModelServer

PROMPT = "How is the weather in Paris?"


@pytest.fixture
def script() -> Script:
    return Script(
        [
            Rule(when_last_tool_result_contains="sunny", text="It is {last_tool_result}."),
            Rule(
                when_tools_offered="get_weather",
                tool_calls=[ScriptedToolCall("get_weather", {"city": "Paris"})],
            ),
        ],
        model_names=["gpt-4o-mini"],
    )


def test_durable_from_many_threads_at_once_wraps_once(tmp_path: Path) -> None:
    run_concurrent_durable("langgraph", tmp_path)


def test_undurable_returns_the_graph_to_its_plain_state(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    runs: list[str] = []

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        runs.append(city)
        return f"sunny in {city}"

    graph = create_agent(model_server.chat_model(), [get_weather], name="weather")
    plain_class = type(graph)

    def ask(thread_id: str) -> Any:
        config: Any = {"configurable": {"thread_id": thread_id}}
        return graph.invoke({"messages": [HumanMessage(PROMPT)]}, config)["messages"][-1].content

    durable(graph)
    assert ask("first") == "It is sunny in Paris."
    assert [summary.id for summary in Client().list_executions()] == ["first"]

    assert undurable(graph) is graph
    assert type(graph) is plain_class
    assert not is_durable(graph)
    assert ask("second") == "It is sunny in Paris."  # the same answer, recorded nowhere
    assert [summary.id for summary in Client().list_executions()] == ["first"]

    durable(graph)
    assert ask("third") == "It is sunny in Paris."
    assert sorted(summary.id for summary in Client().list_executions()) == ["first", "third"]
    assert runs == ["Paris", "Paris", "Paris"]
    assert len(model_server.requests()) == 6
