"""Async LangGraph runs (`ainvoke`, `astream`) never block the event loop on store I/O (issue 12, "Async").

Real LangGraph, ChatOpenAI over real HTTP to the scripted model server, an async node, and a
deliberately slow store (`tests/_loop_lag.py`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph

from kitaru_adapters.langgraph import KitaruSaver, durable
from kitaru_core import Client
from tests._loop_lag import LoopLagMeter, assert_loop_stayed_free, slow_store

from .conftest import ModelServer
from .test_adapter import QUESTIONS, Notes, graph_calls
from .test_adapter import script as script


def async_graph(server: ModelServer, checkpointer: Any = None) -> Any:
    model = server.chat_model()

    async def research(state: Notes) -> dict[str, list[str]]:
        return {"notes": [str((await model.ainvoke([HumanMessage(question)])).content) for question in QUESTIONS]}

    builder = StateGraph(Notes).add_node("research", research)
    builder.add_edge(START, "research").add_edge("research", END)
    return builder.compile(checkpointer=checkpointer, name="async_calls")


@pytest.mark.parametrize("entry", ["ainvoke", "astream"])
def test_async_entry_points_record_every_call_with_the_loop_free(
    model_server: ModelServer, sqlite_file_store: str, entry: str
) -> None:
    saver = KitaruSaver() if entry == "astream" else None
    graph = durable(async_graph(model_server, saver))

    async def run(thread_id: str) -> Any:
        config = {"configurable": {"thread_id": thread_id}}
        if entry == "ainvoke":
            return await graph.ainvoke({"notes": []}, config)
        return [item async for item in graph.astream({"notes": []}, config, stream_mode="values")][-1]

    async def measured() -> Any:
        async with LoopLagMeter() as meter:
            state = await run("async-io")
        assert_loop_stayed_free(meter, slow, at_least=5)  # open, 3 model calls, finish
        return state

    try:
        asyncio.run(run("warm-up"))  # first-use costs (schemas, imports) are CPU, not store I/O
        with slow_store() as slow:
            state = asyncio.run(measured())
        served = asyncio.run(run("async-io"))  # the same input on the thread again: served
    finally:
        if saver is not None:
            saver.close()
    assert state["notes"] == served["notes"] == ["plan: go by train", "facts: 3 hours", "risks: strikes"]
    detail = Client().get_execution("async-io")
    assert detail.status == "completed"
    assert [call.kind for call in graph_calls(detail)] == ["model", "model", "model"]
    assert len(model_server.requests()) == 6  # the warm-up and the measured run, nothing for the served one
