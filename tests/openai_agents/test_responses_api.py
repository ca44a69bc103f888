"""The Agents SDK's default model (`OpenAIResponsesModel`, the Responses API) against the scripted server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agents import Agent, Runner, function_tool
from agents.models import get_default_model
from openai.types.responses import ResponseFunctionCallArgumentsDeltaEvent, ResponseTextDeltaEvent

from kitaru_adapters.openai_agents import durable
from kitaru_core import Client
from kitaru_core.testing import Rule, Script, ScriptedModelServer, ScriptedToolCall

from .conftest import run_async

SCRIPT = Script(
    rules=[
        Rule(
            when_last_user_contains="weather",
            when_turn=0,
            tool_calls=(ScriptedToolCall("get_weather", {"city": "Paris"}),),
        ),
        Rule(when_last_user_contains="weather", when_turn=1, text="It is {last_tool_result} in Paris."),
    ]
)


@pytest.fixture
def responses_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedModelServer]:
    """The scripted server, reached through `OPENAI_BASE_URL` as the SDK's default client reaches OpenAI."""
    with ScriptedModelServer(SCRIPT, request_log_path=tmp_path / "requests.jsonl") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "scripted")
        yield server


def test_the_default_model_runs_durably_over_the_responses_api(
    responses_server: ScriptedModelServer, sqlite_file_store: str
) -> None:
    runs: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather of a city."""
        runs.append(city)
        return "sunny"

    agent = durable(Agent(name="weather", instructions="Answer about the weather.", tools=[get_weather]))

    async def scenario() -> tuple[str, str, list[str], list[str]]:
        plain = await Runner.run(agent, "What is the weather?")
        streamed = Runner.run_streamed(agent, "And the weather, streamed?")
        text_deltas: list[str] = []
        argument_deltas: list[str] = []
        async for event in streamed.stream_events():
            if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent):
                text_deltas.append(event.data.delta)
            if event.type == "raw_response_event" and isinstance(
                event.data, ResponseFunctionCallArgumentsDeltaEvent
            ):
                argument_deltas.append(event.data.delta)
        return str(plain.final_output), str(streamed.final_output), text_deltas, argument_deltas

    plain, streamed, text_deltas, argument_deltas = run_async(scenario())
    assert plain == streamed == "It is sunny in Paris."
    assert len(text_deltas) > 1
    assert "".join(text_deltas) == streamed
    assert "".join(argument_deltas) == '{"city": "Paris"}'
    assert runs == ["Paris", "Paris"]
    records = responses_server.request_records
    assert [record["path"] for record in records] == ["/v1/responses"] * 4
    assert [record["model"] for record in records] == [get_default_model()] * 4
    assert [record["streamed"] for record in records] == [False, False, True, True]
    executions = Client().list_executions()
    assert len(executions) == 2
    for summary in executions:
        detail = Client().get_execution(summary.id)
        assert detail.status == "completed"
        assert [call.kind for call in detail.calls].count("model") == 2
