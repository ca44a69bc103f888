"""Installing and removing durability: `durable()` from many threads at once, and `undurable()`."""

from __future__ import annotations

from pathlib import Path

import pytest
from agents import Agent, Runner, function_tool
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel

from kitaru_adapters.openai_agents import DurableModel, durable, is_durable, undurable
from kitaru_core import Client
from kitaru_core.testing import Rule, Script, ScriptedToolCall

from ..concurrent_durable import run_concurrent_durable
from .conftest import ModelServer

PROMPT = "How is the weather in Paris?"


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


def test_durable_from_many_threads_at_once_wraps_once(tmp_path: Path) -> None:
    run_concurrent_durable("openai_agents", tmp_path)


def test_undurable_returns_the_agent_and_its_handoffs_to_their_plain_state(
    sqlite_file_store: str, model_server: ModelServer
) -> None:
    runs: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        runs.append(city)
        return f"sunny in {city}"

    model = OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=model_server.client())
    helper = Agent(name="helper", instructions="Help.")
    agent = Agent(name="weather", model=model, tools=[get_weather], handoffs=[helper])
    plain_handoffs = list(agent.handoffs)
    config = model_server.run_config()

    durable(agent)
    assert isinstance(agent.model, DurableModel)
    assert is_durable(helper)
    assert Runner.run_sync(agent, PROMPT, run_config=config).final_output == "It is sunny in Paris."
    [summary] = Client().list_executions()
    assert [call.kind for call in Client().get_execution(summary.id).calls] == ["model", "tool", "model"]

    assert undurable(agent) is agent
    assert type(agent) is Agent
    assert type(helper) is Agent
    assert agent.model is model
    assert agent.handoffs == plain_handoffs
    assert not is_durable(agent)
    assert not is_durable(helper)
    assert Runner.run_sync(agent, PROMPT, run_config=config).final_output == "It is sunny in Paris."
    assert len(Client().list_executions()) == 1  # recorded nowhere
    assert runs == ["Paris", "Paris"]

    durable(agent)
    assert Runner.run_sync(agent, PROMPT, run_config=config).final_output == "It is sunny in Paris."
    assert len(Client().list_executions()) == 2  # recorded again, as a new execution
    assert len(model_server.requests()) == 6
