"""Golden keys and fingerprints of PydanticAI model requests and tool calls, plain and streamed.

If this test fails, a PydanticAI upgrade or a change of ours altered how the adapter keys or
fingerprints calls. Every execution already in flight would then run its calls again (a new key)
or supersede them (a new fingerprint) when resumed: the model is paid again and tools act twice.
Change the expected values only on purpose (say so in the release notes); when only a framework
release changes them, pin the new values for that release range next to the old ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

pytest.importorskip("pydantic_ai")

import openai
import pydantic_ai
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from kitaru_adapters.pydantic_ai import durable
from kitaru_core import Client, execution
from kitaru_core.testing import Rule, Script, ScriptedModelServer, ScriptedToolCall

SCRIPT = Script(
    rules=[
        Rule(when_last_tool_result_contains="sunny", text="It is {last_tool_result}."),
        Rule(
            when_tools_offered="get_weather", tool_calls=[ScriptedToolCall("get_weather", {"city": "Paris"})]
        ),
    ],
    model_names=("gpt-4o-mini",),
)
PROMPT = "How is the weather in Paris?"
# The scripted server derives the tool call id from the conversation, so it is the same everywhere.
TOOL_CALL_ID = "call_d7304eaf97d68201c9675233"

FIRST_REQUEST = "971e23a049e2892b2d391cbfb4f8fb057890471ee7677c5f3334ca824f41ba9a"
SECOND_REQUEST = "3f54cc7cd43dd4caece1ae76fe3499c0a97d7295143428e3ebe7c196e9cd0278"
TOOL_CALL = "54e32c985cdff799203a18d1ba62393cef5df2306c7b3878c35c4c493323c250"


def expected(scope: str) -> list[tuple[str, str]]:
    """The calls of one run, in order: (call key, input fingerprint)."""
    return [
        (f"{scope}model_request:0", FIRST_REQUEST),
        (f"{scope}tool:get_weather:{TOOL_CALL_ID}", TOOL_CALL),
        (f"{scope}model_request:1", SECOND_REQUEST),
    ]


@pytest.fixture
def server(sqlite_file_store: str) -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(SCRIPT) as running:
        yield running


def weather_agent(client: openai.AsyncOpenAI) -> Agent[None, str]:
    model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client))
    agent: Agent[None, str] = Agent(model, name="weather", instructions="Answer in one sentence.")

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    return durable(agent)


def recorded(execution_id: str) -> list[tuple[str, str | None]]:
    return [(call.call_key, call.fingerprint) for call in Client().store.load_calls(execution_id)]


def test_plain_run_keys_and_fingerprints(server: ScriptedModelServer) -> None:
    async def run() -> str:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="scripted", max_retries=0)
        try:
            return (await weather_agent(client).run(PROMPT)).output
        finally:
            await client.close()

    assert asyncio.run(run()) == "It is sunny in Paris."
    [summary] = Client().list_executions()
    assert summary.flow_name == "pydantic_ai:weather"
    assert recorded(summary.id) == expected(""), f"pydantic-ai {pydantic_ai.__version__}"


def test_streamed_run_inside_an_execution_keys_and_fingerprints(server: ScriptedModelServer) -> None:
    async def run() -> str:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="scripted", max_retries=0)
        try:
            with execution("golden-streamed"):
                async with weather_agent(client).run_stream(PROMPT) as result:
                    return await result.get_output()
        finally:
            await client.close()

    assert asyncio.run(run()) == "It is sunny in Paris."
    # Streamed requests fingerprint like plain ones: a run may resume in the other mode.
    assert recorded("golden-streamed") == expected("pydantic_ai:weather:0/"), (
        f"pydantic-ai {pydantic_ai.__version__}"
    )
