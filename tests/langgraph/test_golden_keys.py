"""Golden keys and fingerprints of LangGraph chat model calls and tool calls, plain and streamed.

If this test fails, a LangGraph or LangChain upgrade or a change of ours altered how the adapter
keys or fingerprints calls. Every execution already in flight would then run its calls again (a
new key) or supersede them (a new fingerprint) when resumed: the model is paid again and tools act
twice. Change the expected values only on purpose (say so in the release notes); when only a
framework release changes them, pin the new values for that release range next to the old ones.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool

from kitaru_adapters.langgraph import durable
from kitaru_core import Client
from kitaru_core.testing import Rule, Script, ScriptedToolCall

from .conftest import ModelServer

PROMPT = "How is the weather in Paris?"
# The thread's turn marker, then model, tool, model (keys: logical position, request digest, index).
EXPECTED = [
    ("langgraph:turn:1.83b422c1ba7fbce8", "74234e98afe7498fb5daf1f36ac2d78acc339464f950703b8c019892f982b90b"),
    (
        "model:model@1/pull.model/1caa084fb3133e83.0",
        "1caa084fb3133e8377bc0e36e9c62aedc58824fff49e064e9bed983d02034717",
    ),
    (
        "tool:get_weather:tools@2/call_80a6d02c1c494929e85dc9af",
        "54e32c985cdff799203a18d1ba62393cef5df2306c7b3878c35c4c493323c250",
    ),
    (
        "model:model@3/pull.model/ae8dec2f5d2fb423.0",
        "ae8dec2f5d2fb42338b61c3ae91c94b84c345c24a1020f32c1b1093f8ea10d3a",
    ),
]


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


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def versions() -> str:
    return f"langgraph {version('langgraph')}, langchain-core {version('langchain-core')}"


def recorded(execution_id: str) -> list[tuple[str, str | None]]:
    return [(call.call_key, call.fingerprint) for call in Client().store.load_calls(execution_id)]


def test_plain_invoke_keys_and_fingerprints(model_server: ModelServer, sqlite_file_store: str) -> None:
    agent = durable(create_agent(model_server.chat_model(), [get_weather], name="weather"))
    config: Any = {"configurable": {"thread_id": "golden"}}
    result = agent.invoke({"messages": [HumanMessage(PROMPT)]}, config)
    assert result["messages"][-1].content == "It is sunny in Paris."
    assert recorded("golden") == EXPECTED, versions()


def test_streamed_run_keys_and_fingerprints(model_server: ModelServer, sqlite_file_store: str) -> None:
    agent = durable(create_agent(model_server.chat_model(), [get_weather], name="weather"))
    config: Any = {"configurable": {"thread_id": "golden"}}
    chunks = list(agent.stream({"messages": [HumanMessage(PROMPT)]}, config, stream_mode="messages"))
    assert len(chunks) > 3  # the model streamed its answer token by token
    # Streamed model calls key and fingerprint like plain ones: a run may resume in the other mode.
    assert recorded("golden") == EXPECTED, versions()
