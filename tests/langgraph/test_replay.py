"""Replay of a LangGraph agent run inside a `@flow`: overridden tool results and model responses, new inputs.

A refund agent (`create_agent` with ChatOpenAI over real HTTP to the scripted model server) makes three
model requests and two tool calls: look up the order, refund it, confirm. The server counts the requests
and keeps their bodies, so each replay shows which calls were served (no request) and what the model saw.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.tools import tool
from typer.testing import CliRunner

from kitaru_adapters.langgraph import KitaruSaver, durable
from kitaru_core import Client, flow, named_run
from kitaru_core.cli import app
from kitaru_core.errors import ConfigurationError
from kitaru_core.testing import Rule, Script, ScriptedToolCall

from .conftest import ModelServer

SERVER: list[ModelServer] = []
TOOL_RUNS: list[str] = []


@pytest.fixture
def script() -> Script:
    return Script(
        [
            Rule(when_last_tool_result_contains="refunded", text="Done: {last_tool_result}"),
            Rule(
                when_last_tool_result_contains="order 8:",
                tool_calls=[ScriptedToolCall("refund", {"order_id": 8, "amount": 40})],
            ),
            Rule(
                when_last_tool_result_contains="order 7:",
                tool_calls=[ScriptedToolCall("refund", {"order_id": 7, "amount": 25})],
            ),
            Rule(
                when_last_user_contains="order 8",
                tool_calls=[ScriptedToolCall("lookup_order", {"order_id": 8})],
            ),
            Rule(when_turn=0, tool_calls=[ScriptedToolCall("lookup_order", {"order_id": 7})]),
            Rule(text="I do not know what to do."),
        ],
        model_names=["gpt-4o-mini"],
    )


@pytest.fixture(autouse=True)
def _server(model_server: ModelServer, sqlite_file_store: str) -> Iterator[None]:
    SERVER.append(model_server)
    TOOL_RUNS.clear()
    yield
    SERVER.clear()


@tool
def lookup_order(order_id: int) -> str:
    """Look up an order's amount."""
    TOOL_RUNS.append(f"lookup {order_id}")
    return f"order {order_id}: {25 if order_id == 7 else 40} USD, delivered"


@tool
def refund(order_id: int, amount: int) -> str:
    """Refund an order."""
    TOOL_RUNS.append(f"refund {order_id} {amount}")
    return f"refunded {amount} USD for order {order_id}"


def refund_agent(streaming: bool = False) -> Any:
    return durable(
        create_agent(SERVER[0].chat_model(streaming=streaming), [lookup_order, refund], name="refund_desk")
    )


@flow
def refund_desk(order_id: int) -> str:
    result = refund_agent().invoke({"messages": [HumanMessage(f"Refund order {order_id}")]})
    return str(result["messages"][-1].content)


@flow
def streamed_refund_desk(order_id: int) -> list[str]:
    """The same agent, streamed: the texts of the model's streamed chunks (LangGraph's `messages` mode)."""
    agent = refund_agent(streaming=True)
    texts: list[str] = []
    for chunk, _metadata in agent.stream(
        {"messages": [HumanMessage(f"Refund order {order_id}")]}, stream_mode="messages"
    ):
        if isinstance(chunk, AIMessageChunk) and chunk.content:
            texts.append(str(chunk.content))
    return texts


def calls_of(execution_id: str) -> tuple[list[Any], list[Any]]:
    """An execution's model calls and tool calls, in order."""
    calls = Client().get_execution(execution_id).calls
    return [call for call in calls if call.kind == "model"], [call for call in calls if call.kind == "tool"]


def original_run() -> tuple[str, list[Any], list[Any]]:
    assert refund_desk(7) == "Done: refunded 25 USD for order 7"
    [summary] = Client().list_executions()
    models, tools = calls_of(summary.id)
    assert len(models) == 3
    assert [call.name for call in tools] == ["tool:lookup_order", "tool:refund"]
    assert len(SERVER[0].requests()) == 3
    assert TOOL_RUNS == ["lookup 7", "refund 7 25"]
    return summary.id, models, tools


def bodies_since(count: int) -> list[dict[str, Any]]:
    return SERVER[0].server.request_bodies[count:]


def test_replay_with_an_overridden_tool_result_serves_earlier_calls_and_shows_the_model_the_override() -> (
    None
):
    original, _models, tools = original_run()
    before = SERVER[0].server.request_count
    replay = Client().replay(
        original,
        from_call=tools[0].key,
        overrides={tools[0].key: {"found": "order 7: 99 USD, damaged"}},
    )
    assert Client().get_output(replay) == "Done: refunded 25 USD for order 7"
    # the first model call is served (no request); the lookup is overridden; the rest run live
    sent = bodies_since(before)
    assert len(sent) == 2
    assert TOOL_RUNS == ["lookup 7", "refund 7 25", "refund 7 25"]
    tool_message = sent[0]["messages"][-1]
    assert tool_message["role"] == "tool"
    assert json.loads(tool_message["content"]) == {"found": "order 7: 99 USD, damaged"}
    first_call_id = sent[0]["messages"][-2]["tool_calls"][0]["id"]
    assert tool_message["tool_call_id"] == first_call_id
    new_models, new_tools = calls_of(replay)
    assert [call.source for call in new_models] == ["store", "live", "live"]
    assert [call.source for call in new_tools] == ["store", "live"]
    assert new_tools[0].details["overridden"] is True


def test_replay_with_an_overridden_model_response_text_or_tool_call() -> None:
    original, models, _tools = original_run()
    before = SERVER[0].server.request_count
    said = Client().replay(
        original, from_call=models[1].key, overrides={models[1].key: "No refund: order 7 is fine."}
    )
    assert Client().get_output(said) == "No refund: order 7 is fine."
    assert SERVER[0].server.request_count == before  # served up to the override, and the agent stops there
    assert TOOL_RUNS == ["lookup 7", "refund 7 25"]
    overridden = calls_of(said)[0][1]
    assert (overridden.input_tokens, overridden.output_tokens, overridden.cost_usd) == (0, 0, 0.0)

    calling = Client().replay(
        original,
        from_call=models[1].key,
        overrides={
            models[1].key: {"tool_calls": [{"name": "refund", "arguments": {"order_id": 7, "amount": 5}}]}
        },
    )
    assert Client().get_output(calling) == "Done: refunded 5 USD for order 7"
    assert TOOL_RUNS == [
        "lookup 7",
        "refund 7 25",
        "refund 7 5",
    ]  # the tool ran live with the given arguments
    [sent] = bodies_since(before)
    asked, answered = sent["messages"][-2:]
    assert asked["tool_calls"][0]["function"] == {
        "name": "refund",
        "arguments": '{"order_id": 7, "amount": 5}',
    }
    assert asked["tool_calls"][0]["id"].startswith("call_replay_")
    assert answered == {
        "role": "tool",
        "content": "refunded 5 USD for order 7",
        "tool_call_id": asked["tool_calls"][0]["id"],
    }


def test_a_streamed_run_streams_the_overridden_response() -> None:
    streamed = streamed_refund_desk(7)
    assert len(streamed) > 1  # the scripted server streams word by word
    assert "".join(streamed) == "Done: refunded 25 USD for order 7"
    [summary] = Client().list_executions()
    models, _tools = calls_of(summary.id)
    before = SERVER[0].server.request_count
    replay = Client().replay(summary.id, overrides={models[2].key: "Done, said the override."})
    assert Client().get_output(replay) == ["Done, said the override."]
    assert SERVER[0].server.request_count == before


def test_replay_with_changed_inputs_runs_the_changed_calls_live() -> None:
    original, _models, _tools = original_run()
    before = SERVER[0].server.request_count
    replay = Client().replay(original, inputs={"order_id": 8})
    assert Client().get_output(replay) == "Done: refunded 40 USD for order 8"
    assert SERVER[0].server.request_count == before + 3
    assert TOOL_RUNS == ["lookup 7", "refund 7 25", "lookup 8", "refund 8 40"]


def test_replay_and_diff_from_the_cli(sqlite_file_store: str) -> None:
    original, models, tools = original_run()
    runner = CliRunner()
    replayed = runner.invoke(
        app,
        [
            "--store-url",
            sqlite_file_store,
            "executions",
            "replay",
            original,
            "--from",
            tools[1].key,
            "--override",
            f"{tools[1].key}=" + json.dumps("refund refused by the bank"),
            "--json",
        ],
    )
    assert replayed.exit_code == 0, replayed.output
    replay = json.loads(replayed.stdout)["execution_id"]
    assert Client().get_output(replay) == "I do not know what to do."
    assert TOOL_RUNS == ["lookup 7", "refund 7 25"]
    diffed = runner.invoke(
        app, ["--store-url", sqlite_file_store, "executions", "diff", original, replay, "--json"]
    )
    assert diffed.exit_code == 0, diffed.output
    rows = [(row["key"], row["change"]) for row in json.loads(diffed.stdout)["rows"]]
    # the last model request saw another tool result: another request, so another key
    replayed_last = calls_of(replay)[0][2]
    assert replayed_last.key != models[2].key
    assert rows == [
        (models[0].key, "same"),
        (tools[0].key, "same"),
        (models[1].key, "same"),
        (tools[1].key, "changed"),
        (replayed_last.key, "new"),
        (models[2].key, "missing"),
    ]
    table = runner.invoke(app, ["--store-url", sqlite_file_store, "executions", "diff", original, replay])
    assert "3 same, 1 changed, 1 new, 1 missing" in " ".join(table.stdout.split())


def docs_snippet(marker: str) -> str:
    markdown = (Path(__file__).parents[2] / "docs" / "langgraph.md").read_text()
    [block] = [
        block for block in re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL) if marker in block
    ]
    return block


def test_a_prepared_replay_of_a_top_level_run_runs_on_its_own_thread() -> None:
    saver = KitaruSaver()
    try:
        agent = durable(
            create_agent(
                SERVER[0].chat_model(), [lookup_order, refund], name="refund_desk", checkpointer=saver
            )
        )
        config = {"configurable": {"thread_id": "ticket-7"}}
        question = {"messages": [HumanMessage("Refund order 7")]}
        agent.invoke(question, config)
        with pytest.raises(ConfigurationError, match=r"run=False.*named_run"):
            Client().replay("ticket-7")  # no @flow to import: refused before anything is created
        before = SERVER[0].server.request_count
        namespace: dict[str, Any] = {"agent": agent, "question": question}
        exec(docs_snippet("# replay a run on a thread"), namespace)  # docs/langgraph.md, as written
        done = namespace["result"]
        # a fresh thread, served up to the override: the model's first request and the lookup send nothing
        assert done["messages"][-1].content == "Done: refunded 25 USD for order 7"
        assert SERVER[0].server.request_count == before + 2
        assert [message.type for message in done["messages"]] == ["human", "ai", "tool", "ai", "tool", "ai"]
        assert done["messages"][2].content == "order 7: 30 USD"
        replay = Client().get_execution(namespace["replay_id"])
        assert (replay.status, replay.replay_of) == ("completed", "ticket-7")
        original_thread = agent.get_state(config).values["messages"]
        assert original_thread[2].content == "order 7: 25 USD, delivered"  # the original thread is untouched
        assert len(original_thread) == 6
        assert Client().count_executions() == 2
    finally:
        saver.close()


def test_a_prepared_replay_of_a_run_without_a_thread_runs_inside_named_run(sqlite_file_store: str) -> None:
    agent = refund_agent()
    question = {"messages": [HumanMessage("Refund order 7")]}
    agent.invoke(question)
    [original] = Client().list_executions()
    models, _tools = calls_of(original.id)
    override = f"{models[2].key}=" + json.dumps("Refund done, said the override.")
    prepared = CliRunner().invoke(
        app,
        [
            "--store-url",
            sqlite_file_store,
            "executions",
            "replay",
            original.id,
            "--override",
            override,
            "--no-run",
        ],
    )
    assert prepared.exit_code == 0, prepared.output
    printed = " ".join(prepared.stdout.split())
    replay = printed.split("replay execution: ")[1].split()[0]
    assert f"inside `with kitaru_core.named_run('{replay}'):`" in printed
    assert Client().get_execution(replay).status == "queued"
    before = SERVER[0].server.request_count
    with named_run(replay):
        done = agent.invoke(question)
    assert done["messages"][-1].content == "Refund done, said the override."
    assert SERVER[0].server.request_count == before  # every call served, the last one overridden
    assert TOOL_RUNS == ["lookup 7", "refund 7 25"]
    assert Client().get_execution(replay).status == "completed"
    assert Client().count_executions() == 2


def test_each_codec_converts_a_stored_override_into_langchain_types() -> None:
    from kitaru_adapters.langgraph._model import ChatResultCodec, MessageCodec
    from kitaru_adapters.langgraph._tools import ToolOutputCodec
    from kitaru_core.adapters import (
        MODEL_RESPONSE_OVERRIDE_FORMAT,
        TOOL_RESULT_OVERRIDE_FORMAT,
        ModelResponseOverride,
        ToolCallOverride,
    )

    said = ModelResponseOverride(
        text="checking", tool_calls=(ToolCallOverride(name="refund", arguments={"x": 1}, id="c1"),)
    )
    payload = said.model_dump_json().encode()
    recorded = ChatResultCodec().decode(MODEL_RESPONSE_OVERRIDE_FORMAT, payload)
    [generation] = recorded.result.generations
    assert generation.message.content == "checking"
    assert generation.message.tool_calls == [
        {"name": "refund", "args": {"x": 1}, "id": "c1", "type": "tool_call"}
    ]
    assert generation.message.usage_metadata == {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    [chunk] = recorded.chunks
    assert isinstance(chunk, AIMessageChunk)
    assert chunk.tool_calls == generation.message.tool_calls
    [streamed] = MessageCodec().decode(MODEL_RESPONSE_OVERRIDE_FORMAT, payload)  # a direct `model.stream()`
    assert (streamed.content, streamed.tool_calls) == ("checking", generation.message.tool_calls)

    result = json.dumps({"value": {"rows": [1, "é"]}}).encode()
    message = ToolOutputCodec("lookup_order", "call_9").decode(TOOL_RESULT_OVERRIDE_FORMAT, result)
    assert (message.content, message.tool_call_id, message.name) == (
        '{"rows": [1, "é"]}',
        "call_9",
        "lookup_order",
    )
    assert ToolOutputCodec("lookup_order").decode(TOOL_RESULT_OVERRIDE_FORMAT, result) == {"rows": [1, "é"]}
    text = ToolOutputCodec("lookup_order", "call_9").decode(
        TOOL_RESULT_OVERRIDE_FORMAT, b'{"value": "plain"}'
    )
    assert text.content == "plain"
