"""The re-run rule for OpenAI Agents SDK runs: named runs (a session, an execution id) and anonymous ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from agents import Agent, Runner, SQLiteSession, function_tool

from kitaru_adapters.openai_agents import DurableRunner, durable
from kitaru_core import Client, named_run
from kitaru_core.testing import Rule, Script, ScriptedToolCall

from .conftest import ModelServer, run_async

SCRIPT = Script(
    rules=[
        Rule(
            when_last_user_contains="Add", when_last_tool_result_contains="", text="Sum: {last_tool_result}"
        ),
        Rule(when_last_user_contains="Add", tool_calls=(ScriptedToolCall("add", {"a": 2, "b": 3}),)),
        Rule(text="Hello back"),
    ],
    model_names=("gpt-4o-mini",),
)


@pytest.fixture
def script() -> Script:
    return SCRIPT


@pytest.fixture(autouse=True)
def _store(sqlite_file_store: str) -> Iterator[str]:
    return sqlite_file_store


class Desk:
    """An agent whose tool counts its runs, and the wire's request count."""

    def __init__(self, model_server: ModelServer) -> None:
        self.model_server = model_server
        self.tool_runs = 0

        @function_tool
        def add(a: int, b: int) -> int:
            """Add two numbers."""
            self.tool_runs += 1
            return a + b

        self.agent = Agent(name="adder", instructions="Add numbers.", tools=[add])

    def requests(self) -> int:
        return len(self.model_server.requests())


def statuses() -> dict[str, str]:
    return {summary.id: summary.status for summary in Client().list_executions()}


def test_a_completed_session_run_run_again_is_served_and_a_new_input_is_a_new_turn(
    model_server: ModelServer,
) -> None:
    desk = Desk(model_server)
    agent = durable(desk.agent)
    session = SQLiteSession("customer-7")
    config = model_server.run_config()

    first = Runner.run_sync(agent, "Add 2 and 3", session=session, run_config=config)
    assert first.final_output == "Sum: 5"
    assert (desk.requests(), desk.tool_runs) == (2, 1)
    history = run_async(session.get_items())
    [first_execution] = statuses()

    again = Runner.run_sync(agent, "Add 2 and 3", session=session, run_config=config)
    assert again.final_output == "Sum: 5"
    assert (desk.requests(), desk.tool_runs) == (2, 1)  # 0 requests on the wire, 0 tool runs
    assert run_async(session.get_items()) == history  # a served run adds nothing to the session
    assert statuses() == {first_execution: "completed"}

    hello = Runner.run_sync(agent, "Hi there", session=session, run_config=config)
    assert hello.final_output == "Hello back"
    assert desk.requests() == 3  # a new input under the same session runs live
    assert statuses() == {first_execution: "completed", f"{first_execution}~2": "completed"}

    # The latest run under the session had another input: the same first input is a new turn, live.
    Runner.run_sync(agent, "Add 2 and 3", session=session, run_config=config)
    assert (desk.requests(), desk.tool_runs) == (5, 2)
    assert f"{first_execution}~3" in statuses()
    session.close()


def test_a_streamed_session_run_run_again_is_served(model_server: ModelServer) -> None:
    desk = Desk(model_server)
    agent = durable(desk.agent)
    session = SQLiteSession("customer-8")

    async def stream() -> tuple[str, list[str]]:
        result = Runner.run_streamed(
            agent, "Add 2 and 3", session=session, run_config=model_server.run_config()
        )
        kinds = [event.type async for event in result.stream_events()]
        return str(result.final_output), kinds

    output, _kinds = run_async(stream())
    assert output == "Sum: 5"
    assert (desk.requests(), desk.tool_runs) == (2, 1)
    history = run_async(session.get_items())
    output, _kinds = run_async(stream())
    assert output == "Sum: 5"
    assert (desk.requests(), desk.tool_runs) == (2, 1)
    assert run_async(session.get_items()) == history
    session.close()


def test_an_explicit_execution_id_names_the_run(model_server: ModelServer) -> None:
    desk = Desk(model_server)
    runner = DurableRunner()
    config = model_server.run_config()

    first = runner.run_sync(desk.agent, "Add 2 and 3", run_config=config, execution_id="ticket-42")
    again = run_async(runner.run(desk.agent, "Add 2 and 3", run_config=config, execution_id="ticket-42"))
    assert first.final_output == again.final_output == "Sum: 5"
    assert (desk.requests(), desk.tool_runs) == (2, 1)
    assert statuses() == {"ticket-42": "completed"}

    other = runner.run_sync(desk.agent, "Hi there", run_config=config, execution_id="ticket-42")
    assert other.final_output == "Hello back"
    assert desk.requests() == 3
    assert statuses() == {"ticket-42": "completed", "ticket-42~2": "completed"}

    # durable(agent) with Runner.run names its run with kitaru_core.named_run.
    agent = durable(desk.agent)
    with named_run("ticket-43"):
        Runner.run_sync(agent, "Add 2 and 3", run_config=config)
        Runner.run_sync(agent, "Add 2 and 3", run_config=config)
    assert (desk.requests(), desk.tool_runs) == (5, 2)
    assert statuses()["ticket-43"] == "completed"


def test_an_anonymous_completed_run_is_a_new_execution(model_server: ModelServer) -> None:
    desk = Desk(model_server)
    agent = durable(desk.agent)
    config = model_server.run_config()
    Runner.run_sync(agent, "Add 2 and 3", run_config=config)
    Runner.run_sync(agent, "Add 2 and 3", run_config=config)
    assert (desk.requests(), desk.tool_runs) == (4, 2)
    assert sorted(statuses().values()) == ["completed", "completed"]


def test_a_stream_served_from_a_non_streamed_record_replays_rebuilt_deltas(model_server: ModelServer) -> None:
    """Records without raw events (a plain run's, or older ones) replay as a stream of the same shape."""
    desk = Desk(model_server)
    runner = DurableRunner()
    config = model_server.run_config()
    runner.run_sync(desk.agent, "Add 2 and 3", run_config=config, execution_id="plain-then-streamed")

    async def stream() -> tuple[str, list[Any]]:
        result = runner.run_streamed(
            desk.agent, "Add 2 and 3", run_config=config, execution_id="plain-then-streamed"
        )
        raw = [event.data async for event in result.stream_events() if event.type == "raw_response_event"]
        return str(result.final_output), raw

    output, raw = run_async(stream())
    assert output == "Sum: 5"
    assert (desk.requests(), desk.tool_runs) == (2, 1)
    kinds = [event.type for event in raw]
    assert kinds.count("response.created") == kinds.count("response.completed") == 2
    assert "".join(event.delta for event in raw if event.type == "response.output_text.delta") == "Sum: 5"
    assert kinds.count("response.output_text.delta") == 2  # word pieces, as a live stream sends them
    arguments = "".join(
        event.delta for event in raw if event.type == "response.function_call_arguments.delta"
    )
    assert json.loads(arguments) == {"a": 2, "b": 3}
    assert kinds.index("response.output_item.added") < kinds.index("response.function_call_arguments.delta")
