"""The re-run rule (docs/langgraph.md, "Running it again"), on a hand-built weather agent.

A run that names its thread is served when the thread's latest run had the same input and
completed (0 model requests, 0 tool runs, the same result); a different input on the thread is a
new turn and runs live (with a checkpointer LangGraph's state grows as in plain LangGraph); a run
without a thread is a new execution each time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from kitaru_adapters.langgraph import KitaruSaver, durable
from kitaru_core import Client
from kitaru_core.testing import Rule, Script, ScriptedToolCall

from .conftest import ModelServer


def paris() -> dict[str, Any]:
    return {
        "messages": [HumanMessage("Weather in Paris?")]
    }  # a new message object each call, as an app makes


def lyon() -> dict[str, Any]:
    return {"messages": [HumanMessage("Weather in Lyon?")]}


@pytest.fixture
def script() -> Script:
    return Script(
        [
            Rule(when_last_tool_result_contains="sunny", text="It is {last_tool_result}."),
            Rule(
                when_last_user_contains="Lyon", tool_calls=[ScriptedToolCall("get_weather", {"city": "Lyon"})]
            ),
            Rule(
                when_last_user_contains="Paris",
                tool_calls=[ScriptedToolCall("get_weather", {"city": "Paris"})],
            ),
        ],
        model_names=["gpt-4o-mini"],
    )


def weather_agent(server: ModelServer, checkpointer: Any, tool_runs: list[str]) -> Any:
    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        tool_runs.append(city)
        return f"sunny in {city}"

    model = server.chat_model().bind_tools([get_weather])
    builder = StateGraph(MessagesState)
    builder.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    builder.add_node("tools", ToolNode([get_weather]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=checkpointer, name="weather")


def _checkpointer(kind: str) -> Any:
    return {"none": lambda: None, "memory": InMemorySaver, "kitaru": KitaruSaver}[kind]()


def _contents(state: dict[str, Any]) -> list[str]:
    return [f"{message.type}:{message.content}" for message in state["messages"]]


@pytest.mark.parametrize("checkpointer", ["none", "memory", "kitaru"])
def test_a_thread_is_served_on_the_same_input_and_runs_a_new_input_live(
    model_server: ModelServer, sqlite_file_store: str, checkpointer: str
) -> None:
    tool_runs: list[str] = []
    graph = durable(weather_agent(model_server, _checkpointer(checkpointer), tool_runs))
    config = {"configurable": {"thread_id": "weather-7"}}

    first = graph.invoke(paris(), config)
    assert first["messages"][-1].content == "It is sunny in Paris."
    assert (len(model_server.requests()), tool_runs) == (2, ["Paris"])

    # the same input again, the latest run completed: served, nothing runs
    again = graph.invoke(paris(), config)
    assert _contents(again) == _contents(first)
    assert (len(model_server.requests()), tool_runs) == (2, ["Paris"])
    streamed = list(graph.stream(paris(), config, stream_mode="values"))
    assert _contents(streamed[-1]) == _contents(first)
    assert (len(model_server.requests()), tool_runs) == (2, ["Paris"])

    # a new input on the thread: a new turn, live
    in_lyon = graph.invoke(lyon(), config)
    assert in_lyon["messages"][-1].content == "It is sunny in Lyon."
    assert (len(model_server.requests()), tool_runs) == (4, ["Paris", "Lyon"])

    # Paris again: the latest run had another input, so this is a new turn too, live
    paris_again = graph.invoke(paris(), config)
    assert paris_again["messages"][-1].content == "It is sunny in Paris."
    assert (len(model_server.requests()), tool_runs) == (6, ["Paris", "Lyon", "Paris"])

    # one execution: the thread's
    assert [summary.id for summary in Client().list_executions()] == ["weather-7"]
    if checkpointer != "none":
        # LangGraph's state grew turn by turn, as it does without the adapter
        plain_runs: list[str] = []
        plain = weather_agent(model_server, InMemorySaver(), plain_runs)
        plain_config = {"configurable": {"thread_id": "plain"}}
        for payload in (paris, lyon, paris):
            expected = plain.invoke(payload(), plain_config)
        assert _contents(paris_again) == _contents(expected)
        assert len(paris_again["messages"]) == 12


def test_an_async_thread_with_a_checkpointer_is_served_on_the_same_input(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    tool_runs: list[str] = []
    graph = durable(weather_agent(model_server, KitaruSaver(), tool_runs))
    config = {"configurable": {"thread_id": "weather-async"}}

    async def turns() -> list[dict[str, Any]]:
        first = await graph.ainvoke(paris(), config)
        again = await graph.ainvoke(paris(), config)
        streamed = [item async for item in graph.astream(paris(), config, stream_mode="values")]
        return [first, again, streamed[-1]]

    first, again, streamed = asyncio.run(turns())
    assert _contents(again) == _contents(first) == _contents(streamed)
    assert (len(model_server.requests()), tool_runs) == (2, ["Paris"])


def test_an_anonymous_run_is_a_new_execution_each_time(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    tool_runs: list[str] = []
    graph = durable(weather_agent(model_server, None, tool_runs))
    for _ in range(2):
        assert graph.invoke(paris())["messages"][-1].content == "It is sunny in Paris."
    assert (len(model_server.requests()), tool_runs) == (4, ["Paris", "Paris"])
    executions = Client().list_executions()
    assert len(executions) == 2
    assert {summary.status for summary in executions} == {"completed"}
