"""A served streamed model call streams its stored chunks again, as the live call streamed them.

`graph.stream(stream_mode="messages")` gets a model's reply chunk by chunk (text deltas, tool-call
deltas, the closing chunk). The first run of the graph fails after its model calls; the re-run is
served every model call from the store, and the `messages` stream must yield the same chunks, in the
same order and shape, as the live run did. So must a node's direct `model.stream()` / `astream()`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, message_to_dict
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from kitaru_adapters.langgraph import durable
from kitaru_core import Client
from kitaru_core.testing import Rule, Script, ScriptedToolCall

from .conftest import ModelServer


@pytest.fixture
def script() -> Script:
    return Script(
        [
            Rule(
                when_last_tool_result_contains="sunny",
                text="It is {last_tool_result}, enjoy the walk along the river.",
            ),
            Rule(
                when_tools_offered="get_weather",
                tool_calls=[
                    ScriptedToolCall("get_weather", {"city": "Paris"}),
                    ScriptedToolCall("get_weather", {"city": "Lyon"}),
                ],
            ),
            Rule(text="It is sunny in Paris today, a fine day for a walk along the river."),
        ],
        model_names=["gpt-4o-mini"],
    )


class Crash(Exception):
    """The first run's failure after the model calls."""


def weather_graph(server: ModelServer, tool_runs: list[str], failures: list[str]) -> Any:
    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        tool_runs.append(city)
        return f"sunny in {city}"

    model = server.chat_model().bind_tools([get_weather])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    async def aagent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    def finish(state: MessagesState) -> dict[str, Any]:
        if failures:
            raise Crash(failures.pop())
        return {}

    builder = StateGraph(MessagesState)
    # sync under stream(), async under astream(): both model nodes stream their replies
    builder.add_node("agent", RunnableLambda(agent, afunc=aagent))
    builder.add_node("answer", RunnableLambda(agent, afunc=aagent))
    builder.add_node("tools", ToolNode([get_weather]))
    builder.add_node("finish", finish)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, {"tools": "tools", "__end__": "finish"})
    builder.add_edge("tools", "answer")
    builder.add_edge("answer", "finish")
    return durable(builder.compile(), name="weather")


def _shape(items: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (metadata["langgraph_node"], message_to_dict(message))
        for message, metadata in items
        if isinstance(message, AIMessageChunk)
    ]


def test_messages_stream_served_equals_the_live_stream(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    tool_runs: list[str] = []
    graph = weather_graph(model_server, tool_runs, failures=["after the model calls"])
    config = {"configurable": {"thread_id": "weather-stream"}}
    payload = {"messages": [HumanMessage("Weather in Paris and Lyon?")]}
    live: list[Any] = []

    def consume() -> None:
        for item in graph.stream(payload, config, stream_mode="messages"):
            live.append(item)

    with pytest.raises(Crash):
        consume()
    assert len(model_server.requests()) == 2
    assert Client().get_execution("weather-stream").status == "failed"

    served = list(graph.stream(payload, config, stream_mode="messages"))
    assert len(model_server.requests()) == 2  # every model call served
    assert tool_runs == ["Paris", "Lyon"]
    shape = _shape(live)
    assert _shape(served) == shape
    # the live stream was deltas: tool-call chunks for the first reply, text pieces for the second
    first = [chunk for node, chunk in shape if node == "agent"]
    second = [chunk for node, chunk in shape if node == "answer"]
    assert sum(1 for chunk in first if chunk["data"]["tool_call_chunks"]) >= 2
    assert sum(1 for chunk in second if chunk["data"]["content"]) > 3


def test_async_messages_stream_served_equals_the_live_stream(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    tool_runs: list[str] = []
    graph = weather_graph(model_server, tool_runs, failures=["after the model calls"])
    config = {"configurable": {"thread_id": "weather-astream"}}
    payload = {"messages": [HumanMessage("Weather in Paris and Lyon?")]}

    async def collect() -> tuple[list[Any], BaseException | None]:
        items: list[Any] = []
        try:
            async for item in graph.astream(payload, config, stream_mode="messages"):
                items.append(item)
        except Crash as error:
            return items, error
        return items, None

    live, error = asyncio.run(collect())
    assert isinstance(error, Crash)
    served, error = asyncio.run(collect())
    assert error is None
    assert len(model_server.requests()) == 2
    assert _shape(served) == _shape(live)
    assert len(_shape(live)) > 6


def test_direct_astream_served_equals_the_live_stream(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    model = model_server.chat_model()
    seen: list[list[dict[str, Any]]] = []
    failures = ["after the stream"]

    async def write(state: MessagesState) -> dict[str, Any]:
        chunks = [chunk async for chunk in model.astream("Weather in Paris?")]
        seen.append([message_to_dict(chunk) for chunk in chunks])
        if failures:
            raise Crash(failures.pop())
        return {}

    graph = durable(StateGraph(MessagesState).add_node("write", write).add_edge(START, "write").compile())
    with pytest.raises(Crash):
        asyncio.run(graph.ainvoke({"messages": []}))
    asyncio.run(graph.ainvoke({"messages": []}))  # the same anonymous call again: resumes the failed one
    assert len(model_server.requests()) == 1
    assert len(seen[0]) > 2
    assert seen[1] == seen[0]


def test_records_made_before_chunks_were_kept_still_load() -> None:
    """Old records: a direct stream stored as one added-up message, a chat result without chunks."""
    import json

    from langchain_core.messages import AIMessage

    from kitaru_adapters.langgraph._model import (
        CHAT_RESULT_FORMAT,
        MESSAGE_FORMAT,
        ChatResultCodec,
        MessageCodec,
    )

    old_stream = json.dumps(message_to_dict(AIMessageChunk(content="roses are red"))).encode()
    (chunk,) = MessageCodec().decode(MESSAGE_FORMAT, old_stream)
    assert isinstance(chunk, AIMessageChunk)
    assert chunk.content == "roses are red"
    old_result = {
        "generations": [{"message": message_to_dict(AIMessage(content="hello")), "info": None}],
        "llm_output": None,
    }
    recorded = ChatResultCodec().decode(CHAT_RESULT_FORMAT, json.dumps(old_result).encode())
    assert recorded.chunks is None
    assert recorded.result.generations[0].message.content == "hello"
