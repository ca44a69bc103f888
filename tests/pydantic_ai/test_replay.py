"""Replay of a real PydanticAI agent run from a middle call, with overrides and new inputs (issue 15).

A durable agent inside an importable `@flow` talks real HTTP to the scripted model server: three
model requests and two tool calls. Each replay serves the calls before the chosen one (no request
reaches the server), serves an override as the framework's own type (a tool's return value, a
`ModelResponse`), and runs the later calls live.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from typer.testing import CliRunner

from kitaru_adapters.pydantic_ai import durable
from kitaru_core import Client, flow, named_run
from kitaru_core.cli import app
from kitaru_core.errors import ConfigurationError
from kitaru_core.testing import Rule, Script, ScriptedModelServer, ScriptedToolCall

SCRIPT = Script(
    rules=[
        Rule(when_turn=0, tool_calls=(ScriptedToolCall("lookup_order", {"order_id": 7}, id="call_lookup"),)),
        Rule(
            when_turn=1,
            tool_calls=(ScriptedToolCall("refund", {"order_id": 7, "amount": 10}, id="call_refund"),),
        ),
        Rule(when_turn=2, text="Done: {last_tool_result}"),
    ],
    model_names=("gpt-4o-mini",),
)
SCOPE = "pydantic_ai:desk:0/"
MODEL_0, MODEL_1, MODEL_2 = (f"{SCOPE}model_request:{index}" for index in range(3))
LOOKUP, REFUND = f"{SCOPE}tool:lookup_order:call_lookup", f"{SCOPE}tool:refund:call_refund"

tool_runs: list[tuple[str, dict[str, Any]]] = []
base_url: list[str] = []


def desk_agent(client: openai.AsyncOpenAI) -> Agent[None, str]:
    agent = Agent(OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client)), name="desk")

    @agent.tool_plain
    def lookup_order(order_id: int) -> dict[str, Any]:
        """Look an order up."""
        tool_runs.append(("lookup_order", {"order_id": order_id}))
        return {"order_id": order_id, "status": "delivered", "paid": 10}

    @agent.tool_plain
    def refund(order_id: int, amount: int) -> str:
        """Refund an order."""
        tool_runs.append(("refund", {"order_id": order_id, "amount": amount}))
        return f"refunded {amount} on order {order_id}"

    return durable(agent)


def ask(prompt: str, *, stream: bool = False) -> str:
    async def go() -> str:
        client = openai.AsyncOpenAI(base_url=base_url[0], api_key="scripted", max_retries=0)
        agent = desk_agent(client)
        try:
            if stream:
                async with agent.run_stream(prompt) as result:
                    return await result.get_output()
            return (await agent.run(prompt)).output
        finally:
            await client.close()

    return asyncio.run(go())


@flow
def refund_desk(order_id: int, stream: bool = False) -> str:
    return ask(f"Refund order {order_id}", stream=stream)


@pytest.fixture
def server(sqlite_file_store: str) -> Iterator[ScriptedModelServer]:
    tool_runs.clear()
    with ScriptedModelServer(SCRIPT) as running:
        base_url[:] = [running.base_url]
        yield running


def last_tool_message(server: ScriptedModelServer) -> str:
    """The content of the last tool result the model was sent in the server's latest request."""
    messages = server.request_bodies[-1]["messages"]
    return [message["content"] for message in messages if message["role"] == "tool"][-1]


def original_run(server: ScriptedModelServer, **inputs: Any) -> str:
    assert refund_desk(7, **inputs) == "Done: refunded 10 on order 7"
    assert server.request_count == 3
    assert [name for name, _ in tool_runs] == ["lookup_order", "refund"]
    [original] = Client().list_executions()
    keys = [call.key for call in Client().get_execution(original.id).calls]
    assert keys == [MODEL_0, LOOKUP, MODEL_1, REFUND, MODEL_2]
    tool_runs.clear()
    return original.id


def test_a_tool_result_override_reaches_the_model_and_later_calls_run_live(
    server: ScriptedModelServer,
) -> None:
    original = original_run(server)
    new_id = Client().replay(
        original, from_call=LOOKUP, overrides={LOOKUP: {"order_id": 7, "status": "lost", "paid": 25}}
    )
    assert Client().get_output(new_id) == "Done: refunded 10 on order 7"
    assert server.request_count == 5  # model_request:0 served; :1 and :2 live
    assert json.loads(server.request_bodies[3]["messages"][-1]["content"]) == {
        "order_id": 7,
        "status": "lost",
        "paid": 25,
    }
    assert tool_runs == [("refund", {"order_id": 7, "amount": 10})]  # lookup_order served, refund live
    calls = {call.key: call for call in Client().get_execution(new_id).calls}
    assert calls[LOOKUP].details.get("overridden") is True


def test_a_text_response_override_ends_the_run_without_a_request(server: ScriptedModelServer) -> None:
    original = original_run(server)
    new_id = Client().replay(
        original, from_call=MODEL_1, overrides={MODEL_1: "No refund: the order is fine."}
    )
    assert Client().get_output(new_id) == "No refund: the order is fine."
    assert (server.request_count, tool_runs) == (3, [])
    assert [call.key for call in Client().get_execution(new_id).calls] == [MODEL_0, LOOKUP, MODEL_1]


@pytest.mark.parametrize("stream", [False, True], ids=["run", "run_stream"])
def test_a_tool_call_override_runs_the_tool_live_with_its_arguments(
    server: ScriptedModelServer, stream: bool
) -> None:
    original = original_run(server, stream=stream)
    override = {"tool_calls": [{"name": "refund", "arguments": {"order_id": 7, "amount": 4}}]}
    new_id = Client().replay(original, from_call=MODEL_1, overrides={MODEL_1: override})
    assert Client().get_output(new_id) == "Done: refunded 4 on order 7"
    assert tool_runs == [("refund", {"order_id": 7, "amount": 4})]
    assert server.request_count == 4  # only model_request:2, which sees the refund of 4
    assert last_tool_message(server) == "refunded 4 on order 7"
    sent = server.request_bodies[-1]["messages"]
    [call] = sent[-2]["tool_calls"]  # the overridden response, as the model is shown it
    assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == (
        "refund",
        {"order_id": 7, "amount": 4},
    )
    calls = Client().get_execution(new_id).calls
    refund_key = [call.key for call in calls if "tool:refund:call_replay_" in call.key]
    assert len(refund_key) == 1  # the filled-in id, the same on every run of the replay
    overridden = next(call for call in calls if call.key == MODEL_1)
    assert (overridden.input_tokens, overridden.output_tokens, overridden.cost_usd) == (0, 0, 0.0)


def test_a_hostile_tool_call_id_in_an_override_reaches_the_model_and_its_key_as_given(
    server: ScriptedModelServer,
) -> None:
    original = original_run(server, stream=False)
    hostile = '../"<b>x</b>/..'
    override = {"tool_calls": [{"name": "refund", "arguments": {"order_id": 7, "amount": 4}, "id": hostile}]}
    new_id = Client().replay(original, from_call=MODEL_1, overrides={MODEL_1: override})
    assert Client().get_output(new_id) == "Done: refunded 4 on order 7"
    [call] = server.request_bodies[-1]["messages"][-2]["tool_calls"]
    assert call["id"] == hostile  # the model is shown the id as given
    keys = [call.key for call in Client().get_execution(new_id).calls]
    assert f"{SCOPE}tool:refund:{hostile}" in keys  # ids are data in keys (encoded where they meet paths)


def test_a_replay_with_new_inputs_runs_the_changed_calls_live(server: ScriptedModelServer) -> None:
    original = original_run(server)
    new_id = Client().replay(original, inputs={"order_id": 8})
    assert Client().get_output(new_id) == "Done: refunded 10 on order 7"  # the script refunds order 7
    assert server.request_count == 6
    assert server.request_bodies[3]["messages"][-1]["content"] == "Refund order 8"
    assert tool_runs == []  # the script asks the same tool calls: same ids, same arguments, served


def test_replay_from_the_cli_with_an_override_then_diff(
    server: ScriptedModelServer, sqlite_file_store: str
) -> None:
    original = original_run(server)

    def invoke(*args: str) -> str:
        result = CliRunner().invoke(app, ["--store-url", sqlite_file_store, *args])
        assert result.exit_code == 0, result.output
        return result.stdout

    override = json.dumps({"tool_calls": [{"name": "refund", "arguments": {"order_id": 7, "amount": 4}}]})
    replayed = json.loads(
        invoke(
            "executions",
            "replay",
            original,
            "--from",
            MODEL_1,
            "--override",
            f"{MODEL_1}={override}",
            "--json",
        )
    )
    new_id = replayed["execution_id"]
    assert (replayed["replay_of"], server.request_count, tool_runs) == (
        original,
        4,
        [("refund", {"order_id": 7, "amount": 4})],
    )
    diff = json.loads(invoke("executions", "diff", original, new_id, "--json"))
    [new_refund] = [row["key"] for row in diff["rows"] if row["change"] == "new"]
    assert new_refund.startswith(f"{SCOPE}tool:refund:call_replay_")  # the override's filled-in id
    assert {row["key"]: row["change"] for row in diff["rows"]} == {
        MODEL_0: "same",
        LOOKUP: "same",
        MODEL_1: "changed",  # the override
        new_refund: "new",  # the tool call it asked for, run live
        MODEL_2: "changed",  # live again: another response (its text and per-run ids)
        REFUND: "missing",  # the original's refund was never asked for
    }
    table = " ".join(invoke("executions", "diff", original, new_id).split())
    assert "2 same, 2 changed, 1 new, 1 missing" in table


def test_a_prepared_replay_of_a_top_level_run_is_run_by_running_the_agent_under_its_id(
    server: ScriptedModelServer,
) -> None:
    assert ask("Refund order 7") == "Done: refunded 10 on order 7"
    [original] = Client().list_executions()
    keys = [call.key for call in Client().get_execution(original.id).calls]
    lookup_key = next(key for key in keys if key.startswith("tool:lookup_order:"))
    tool_runs.clear()
    overrides = {lookup_key: {"order_id": 7, "status": "lost"}}
    with pytest.raises(
        ConfigurationError, match=r"replay cannot run here\. Prepare the replay with run=False"
    ):
        Client().replay(original.id, from_call=lookup_key, overrides=overrides)
    new_id = Client().replay(original.id, from_call=lookup_key, overrides=overrides, run=False)
    assert Client().get_execution(new_id).status == "queued"
    with pytest.raises(
        ConfigurationError, match=rf"is a replay of .*`with named_run\({re.escape(repr(new_id))}\):`"
    ):
        Client().resume(new_id)
    with named_run(new_id):
        assert ask("Refund order 7") == "Done: refunded 10 on order 7"
    assert Client().get_execution(new_id).status == "completed"
    assert server.request_count == 5
    assert "lost" in server.request_bodies[3]["messages"][-1]["content"]
    assert tool_runs == [("refund", {"order_id": 7, "amount": 10})]


def test_the_docs_replay_example_runs_as_written(
    sqlite_file_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    markdown = (Path(__file__).resolve().parents[2] / "docs" / "pydantic-ai.md").read_text(encoding="utf-8")
    [block] = [
        block
        for block in re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)
        if "# replay_example.py" in block
    ]
    try:
        exec(compile(block, "replay_example.py", "exec"), {"__name__": "replay_example"})
    finally:  # run_sync left its event loop set as this thread's loop (pydantic_graph does): close it
        asyncio.get_event_loop_policy().get_event_loop().close()
        asyncio.set_event_loop(None)
    keys, output = capsys.readouterr().out.splitlines()
    assert keys.startswith("['model_request:0', 'tool:lookup_order:pyd_ai_")
    assert output == '{"lookup_order":"order 7: lost"}'
    assert [summary.status for summary in Client().list_executions()] == ["completed", "completed"]


def test_an_override_of_the_wrong_kind_is_refused_by_name() -> None:
    from kitaru_adapters.pydantic_ai._capability import ModelResponseCodec, ToolOutcomeCodec
    from kitaru_core.adapters import MODEL_RESPONSE_OVERRIDE_FORMAT, TOOL_RESULT_OVERRIDE_FORMAT
    from kitaru_core.errors import SerializationError

    with pytest.raises(SerializationError, match="a model call takes a response override"):
        ModelResponseCodec().decode(TOOL_RESULT_OVERRIDE_FORMAT, b'{"value": 1}')
    with pytest.raises(SerializationError, match="a tool call takes its result as plain JSON"):
        ToolOutcomeCodec().decode(MODEL_RESPONSE_OVERRIDE_FORMAT, b'{"text": "hi", "tool_calls": []}')
