"""Golden keys and fingerprints of OpenAI Agents SDK model calls and tool calls, plain and streamed.

If this test fails, an Agents SDK upgrade or a change of ours altered how the adapter keys or
fingerprints calls. Every execution already in flight would then run its calls again (a new key)
or supersede them (a new fingerprint) when resumed: the model is paid again and tools act twice.
Change the expected values only on purpose (say so in the release notes); when only a framework
release changes them, pin the new values for that release range next to the old ones.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import pytest
from agents import Agent, Runner, function_tool

from kitaru_adapters.openai_agents import durable
from kitaru_core import Client, execution
from kitaru_core.testing import Rule, Script, ScriptedToolCall

from .conftest import ModelServer, run_async

PROMPT = "How is the weather in Paris?"
# The scripted server derives the tool call id from the conversation, so it is the same everywhere.
TOOL_CALL_ID = "call_d7304eaf97d68201c9675233"
FIRST_MODEL_CALL = "96059f6cbda6a6cb84dab8e1d81b2a4f1ae9c13edb1b180c696f01354631643e"
SECOND_MODEL_CALL = "5d4b70406bb4a2237eb53c6144d9e1f30ca38b89f8d75bea06469bcc23c9d1a4"
TOOL_CALL = "54e32c985cdff799203a18d1ba62393cef5df2306c7b3878c35c4c493323c250"


@pytest.fixture
def script() -> Script:
    return Script(
        rules=[
            Rule(when_last_tool_result_contains="sunny", text="It is {last_tool_result}."),
            Rule(
                when_tools_offered="get_weather",
                tool_calls=[ScriptedToolCall("get_weather", {"city": "Paris"})],
            ),
        ],
        model_names=("gpt-4o-mini",),
    )


def expected(scope: str) -> list[tuple[str, str]]:
    """The calls of one run, in order: (call key, input fingerprint)."""
    return [
        (f"{scope}model:{FIRST_MODEL_CALL[:16]}", FIRST_MODEL_CALL),
        (f"{scope}tool:get_weather:{TOOL_CALL_ID}", TOOL_CALL),
        (f"{scope}model:{SECOND_MODEL_CALL[:16]}", SECOND_MODEL_CALL),
    ]


def weather_agent() -> Agent[Any]:
    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    return durable(Agent(name="weather", instructions="Answer in one sentence.", tools=[get_weather]))


def recorded(execution_id: str) -> list[tuple[str, str | None]]:
    return [(call.call_key, call.fingerprint) for call in Client().store.load_calls(execution_id)]


def test_plain_run_keys_and_fingerprints(sqlite_file_store: str, model_server: ModelServer) -> None:
    result = Runner.run_sync(weather_agent(), PROMPT, run_config=model_server.run_config())
    assert result.final_output == "It is sunny in Paris."
    [summary] = Client().list_executions()
    assert summary.flow_name == "openai_agents:weather"
    assert recorded(summary.id) == expected(""), f"openai-agents {version('openai-agents')}"


def test_streamed_run_inside_an_execution_keys_and_fingerprints(
    sqlite_file_store: str, model_server: ModelServer
) -> None:
    async def streamed() -> Any:
        result = Runner.run_streamed(weather_agent(), PROMPT, run_config=model_server.run_config())
        async for _ in result.stream_events():
            pass
        return result.final_output

    with execution("golden-streamed"):
        assert run_async(streamed()) == "It is sunny in Paris."
    # Streamed calls key and fingerprint like plain ones: a run may resume in the other mode.
    assert recorded("golden-streamed") == expected("openai_agents:weather:0/"), (
        f"openai-agents {version('openai-agents')}"
    )
