"""Replay of a CrewAI crew run inside a `@flow`: overridden tool results and LLM responses, new inputs.

The order desk's two agents (native tool calling, over real HTTP to the scripted model server) make
four LLM requests and three tool calls: the clerk looks up orders 7 and 8 (in parallel), then the
refund agent refunds one. The server counts the requests and keeps their bodies, so each replay shows
which calls were served (no request) and what the model saw. CrewAI is slow to import and to kick off,
so the cases share few tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crewai import LLM, Agent, Crew, Task
from typer.testing import CliRunner

from kitaru_adapters.crewai import durable
from kitaru_core import Client, flow
from kitaru_core.cli import app
from kitaru_core.errors import ConfigurationError
from kitaru_core.testing import Rule, Script, ScriptedToolCall

from .conftest import DESK, ModelServer, lines

SERVER: list[ModelServer] = []


@pytest.fixture
def script() -> Script:
    return Script(
        [
            Rule(
                when_tools_offered="refund",
                when_conversation_contains="Refund order 8",
                when_turn=0,
                tool_calls=(ScriptedToolCall("refund", {"order_id": 8, "amount": 40}),),
            ),
            *DESK["NATIVE_SCRIPT"],
        ],
        model_names=("gpt-4o-mini",),
    )


@pytest.fixture(autouse=True)
def _server(model_server: ModelServer, sqlite_file_store: str, tool_runs: Path) -> Iterator[None]:
    SERVER.append(model_server)
    yield
    SERVER.clear()


def desk_crew(refund_order: int) -> Crew:
    llm = LLM(model="openai/gpt-4o-mini", base_url=SERVER[0].base_url, api_key="scripted", max_retries=0)
    clerk = Agent(
        role="Order clerk",
        goal="Find order amounts",
        backstory="You know the order system.",
        llm=llm,
        tools=[DESK["lookup_order"]],
    )
    refunder = Agent(
        role="Refund agent",
        goal="Refund orders correctly",
        backstory="You move money carefully.",
        llm=llm,
        tools=[DESK["refund"]],
    )
    lookup = Task(name="lookup", description=DESK["LOOKUP_TASK"], expected_output="The amounts.", agent=clerk)
    refund = Task(
        name="refund",
        description=f"Refund order {refund_order} in full, using the amounts found.",
        expected_output="A confirmation.",
        agent=refunder,
    )
    return Crew(name="order_desk", agents=[clerk, refunder], tasks=[lookup, refund])


@flow
def crew_refund_desk(refund_order: int) -> str:
    return durable(desk_crew(refund_order)).kickoff().raw


def model_calls(execution_id: str) -> list[Any]:
    """An execution's LLM calls, in order."""
    return [call for call in Client().get_execution(execution_id).calls if call.kind == "model"]


def requests_since(count: int) -> list[dict[str, Any]]:
    return SERVER[0].server.request_bodies[count:]


def conversation(body: dict[str, Any]) -> str:
    return json.dumps(body["messages"])


def original_run(tool_runs: Path) -> tuple[str, list[Any], dict[str, Any]]:
    assert crew_refund_desk(7) == "Done: refunded 25 USD for order 7"
    [summary] = Client().list_executions()
    calls = Client().get_execution(summary.id).calls
    models = [call for call in calls if call.kind == "model"]
    assert len(models) == 4
    assert SERVER[0].server.request_count == 4
    assert sorted(lines(tool_runs)) == ["lookup_order 7", "lookup_order 8", "refund 7"]
    tools = {call.output_preview: call for call in calls if call.kind == "tool"}
    assert len(tools) == 3
    return summary.id, models, tools


def cli(store_url: str, *arguments: str) -> Any:
    result = CliRunner().invoke(app, ["--store-url", store_url, *arguments])
    assert result.exit_code == 0, result.output
    return result


def test_a_flow_replayed_with_overridden_tool_results_llm_responses_and_inputs(
    sqlite_file_store: str, tool_runs: Path
) -> None:
    original, models, tools = original_run(tool_runs)
    lookup_8 = tools['"order 8: 40 USD, delivered"']

    # a. from the CLI: a lookup's result overridden, replayed from the clerk's second request
    before = SERVER[0].server.request_count
    override = f"{lookup_8.key}=" + json.dumps("order 8: 99 USD, lost in transit")
    replayed = cli(
        sqlite_file_store,
        "executions",
        "replay",
        original,
        "--from",
        models[1].key,
        "--override",
        override,
        "--json",
    )
    replay = json.loads(replayed.stdout)["execution_id"]
    assert Client().get_output(replay) == "Done: refunded 25 USD for order 7"
    sent = requests_since(before)
    assert len(sent) == 3  # the clerk's first request is served; its second and the refund agent's run live
    assert "order 8: 99 USD, lost in transit" in conversation(sent[0])  # the clerk sees the override
    assert "order 8: 40 USD" not in conversation(sent[0])
    assert sorted(lines(tool_runs)) == ["lookup_order 7", "lookup_order 8", "refund 7", "refund 7"]
    rows = {
        row["key"]: row["change"]
        for row in json.loads(
            cli(sqlite_file_store, "executions", "diff", original, replay, "--json").stdout
        )["rows"]
    }
    [new_key] = [call.key for call in model_calls(replay) if call.key not in rows or rows[call.key] == "new"]
    assert rows == {
        **{
            call.key: "same"
            for call in [models[0], models[2], models[3], *tools.values()]
            if call is not lookup_8
        },
        lookup_8.key: "changed",
        models[
            1
        ].key: "missing",  # the clerk's second request saw another result: another request, another key
        new_key: "new",
    }
    table = cli(sqlite_file_store, "executions", "diff", original, replay)
    assert "5 same, 1 changed, 1 new, 1 missing" in " ".join(table.stdout.split())

    # b. the clerk's answer overridden (text): the refund agent's requests carry it, live
    before = SERVER[0].server.request_count
    said = Client().replay(
        original, from_call=models[1].key, overrides={models[1].key: "Order 7: 30 USD. Order 8: 40 USD."}
    )
    assert Client().get_output(said) == "Done: refunded 25 USD for order 7"
    sent = requests_since(before)
    assert len(sent) == 2
    assert "Order 7: 30 USD" in conversation(sent[0])
    said_answer = model_calls(said)[1]
    assert (said_answer.input_tokens, said_answer.output_tokens, said_answer.cost_usd) == (0, 0, 0.0)

    # b. the refund agent's first answer overridden with a tool call: the tool runs live with its arguments
    before = SERVER[0].server.request_count
    calling = Client().replay(
        original,
        from_call=models[2].key,
        overrides={
            models[2].key: {"tool_calls": [{"name": "refund", "arguments": {"order_id": 7, "amount": 5}}]}
        },
    )
    assert Client().get_output(calling) == "Done: refunded 5 USD for order 7"
    [sent_last] = requests_since(before)
    asked, answered = sent_last["messages"][-2:]
    assert asked["tool_calls"][0]["function"] == {
        "name": "refund",
        "arguments": '{"order_id": 7, "amount": 5}',
    }
    assert answered["tool_call_id"] == asked["tool_calls"][0]["id"]
    assert answered["tool_call_id"].startswith("call_replay_")
    assert answered["content"] == "refunded 5 USD for order 7"
    assert lines(tool_runs)[-1] == "refund 7"

    # c. new inputs: the lookup task's calls are the same requests (served), the refund task's run live
    before = SERVER[0].server.request_count
    runs_before = len(lines(tool_runs))
    other = Client().replay(original, inputs={"refund_order": 8})
    assert Client().get_output(other) == "Done: refunded 40 USD for order 8"
    assert SERVER[0].server.request_count == before + 2
    assert lines(tool_runs)[runs_before:] == ["refund 8"]
    sources = {call.key: call.source for call in Client().get_execution(other).calls}
    assert [sources[call.key] for call in models] == ["store", "store", "not reached", "not reached"]


def docs_snippet(marker: str) -> str:
    markdown = (Path(__file__).parents[2] / "docs" / "crewai.md").read_text()
    [block] = [
        block for block in re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL) if marker in block
    ]
    return block


def test_a_prepared_replay_of_a_top_level_kickoff_runs_inside_named_run(tool_runs: Path) -> None:
    crew = durable(desk_crew(7))
    assert crew.kickoff().raw == "Done: refunded 25 USD for order 7"
    [original] = Client().list_executions()
    with pytest.raises(ConfigurationError, match=r"run=False.*named_run"):
        Client().replay(original.id)  # no @flow to import: refused before anything is created
    assert Client().count_executions() == 1
    namespace: dict[str, Any] = {"crew": crew}
    exec(docs_snippet("# replay a top-level kickoff"), namespace)  # docs/crewai.md, as written
    assert namespace["result"].raw == "Done: refund refused: card expired"
    assert SERVER[0].server.request_count == 5  # only the refund agent's last request ran again
    assert sorted(lines(tool_runs)) == ["lookup_order 7", "lookup_order 8", "refund 7"]
    replay = Client().get_execution(namespace["replay_id"])
    assert (replay.status, replay.replay_of) == ("completed", original.id)
    assert Client().count_executions() == 2  # the kickoff ran the prepared replay, not a new execution


def test_the_llm_codec_converts_a_stored_override_into_crewai_answers() -> None:
    from pydantic import BaseModel

    from kitaru_adapters.crewai._llm import LLMResponseCodec
    from kitaru_core.adapters import MODEL_RESPONSE_OVERRIDE_FORMAT, ModelResponseOverride, ToolCallOverride
    from kitaru_core.errors import SerializationError

    class Amounts(BaseModel):
        order_7: int

    def stored(**fields: Any) -> bytes:
        return ModelResponseOverride(**fields).model_dump_json().encode()

    calls = stored(
        text="ignored", tool_calls=(ToolCallOverride(name="refund", arguments={"order_id": 7}, id="c1"),)
    )
    assert LLMResponseCodec().decode(MODEL_RESPONSE_OVERRIDE_FORMAT, calls) == [
        {"id": "c1", "type": "function", "function": {"name": "refund", "arguments": '{"order_id": 7}'}}
    ]
    assert LLMResponseCodec().decode(MODEL_RESPONSE_OVERRIDE_FORMAT, stored(text="Final Answer: 25")) == (
        "Final Answer: 25"
    )
    structured = LLMResponseCodec(Amounts).decode(
        MODEL_RESPONSE_OVERRIDE_FORMAT, stored(text='{"order_7": 30}')
    )
    assert structured == Amounts(order_7=30)
    with pytest.raises(SerializationError, match="response_model Amounts is not its JSON"):
        LLMResponseCodec(Amounts).decode(MODEL_RESPONSE_OVERRIDE_FORMAT, stored(text="thirty"))
