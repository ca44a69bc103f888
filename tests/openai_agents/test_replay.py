"""Replay of a real OpenAI Agents SDK run from a middle call, with overrides and new inputs (issue 15).

A durable agent inside an importable `@flow` (the SDK's real `Runner`) talks real HTTP to the
scripted model server: three model calls and two tool calls. Each replay serves the calls before
the chosen one (no request reaches the server), serves an override as the SDK's own types (a
`ModelResponse` of output items, a tool's return value), and runs the later calls live.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, RunConfig, Runner, function_tool
from agents.mcp import MCPServerStdio
from agents.models.openai_provider import OpenAIProvider
from typer.testing import CliRunner

from kitaru_adapters.openai_agents import DurableRunner, durable
from kitaru_core import Client, execution, flow
from kitaru_core.cli import app
from kitaru_core.errors import ConfigurationError
from kitaru_core.testing import Rule, Script, ScriptedToolCall

from .conftest import ModelServer, run_async

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
SCOPE = "openai_agents:desk:0/"
LOOKUP, REFUND = f"{SCOPE}tool:lookup_order:call_lookup", f"{SCOPE}tool:refund:call_refund"

tool_runs: list[tuple[str, dict[str, Any]]] = []
servers: list[ModelServer] = []


@function_tool
def lookup_order(order_id: int) -> dict[str, Any]:
    """Look an order up."""
    tool_runs.append(("lookup_order", {"order_id": order_id}))
    return {"order_id": order_id, "status": "delivered", "paid": 10}


@function_tool
def refund(order_id: int, amount: int) -> str:
    """Refund an order."""
    tool_runs.append(("refund", {"order_id": order_id, "amount": amount}))
    return f"refunded {amount} on order {order_id}"


def desk() -> Agent[Any]:
    return Agent(name="desk", instructions="Refund orders.", tools=[lookup_order, refund])


def config(api: str) -> RunConfig:
    provider = OpenAIProvider(openai_client=servers[0].client(), use_responses=api == "responses")
    return RunConfig(model_provider=provider, model="gpt-4o-mini")


def ask(prompt: str, *, stream: bool = False, api: str = "chat", execution_id: str | None = None) -> str:
    agent = durable(desk())
    if stream:

        async def streamed() -> str:
            result = Runner.run_streamed(agent, prompt, run_config=config(api))
            deltas = [event async for event in result.stream_events() if event.type == "raw_response_event"]
            assert deltas  # a served call streams its events too
            return str(result.final_output)

        return run_async(streamed())
    if execution_id is not None:
        return str(
            DurableRunner()
            .run_sync(desk(), prompt, run_config=config(api), execution_id=execution_id)
            .final_output
        )
    return str(Runner.run_sync(agent, prompt, run_config=config(api)).final_output)


@flow
def agents_refund_desk(order_id: int, stream: bool = False, api: str = "chat") -> str:
    return ask(f"Refund order {order_id}", stream=stream, api=api)


@pytest.fixture
def script() -> Script:
    return SCRIPT


@pytest.fixture
def server(model_server: ModelServer, sqlite_file_store: str) -> Iterator[ModelServer]:
    tool_runs.clear()
    servers[:] = [model_server]
    yield model_server
    servers.clear()


def requests(server: ModelServer) -> int:
    return server.server.request_count


def sent(server: ModelServer, index: int = -1) -> list[dict[str, Any]]:
    """The messages (chat) or input items (Responses API) of a request the server received."""
    body = server.server.request_bodies[index]
    return body["messages"] if "messages" in body else body["input"]


def tool_result_sent(server: ModelServer, index: int = -1) -> str:
    """The last tool result the model was sent in a request (chat or Responses API)."""
    items = sent(server, index)
    results = [
        item for item in items if item.get("role") == "tool" or item.get("type") == "function_call_output"
    ]
    last = results[-1]
    return str(last.get("content", last.get("output")))


def original_run(server: ModelServer, **inputs: Any) -> tuple[str, list[str]]:
    assert agents_refund_desk(7, **inputs) == "Done: refunded 10 on order 7"
    assert requests(server) == 3
    assert [name for name, _ in tool_runs] == ["lookup_order", "refund"]
    [original] = Client().list_executions()
    keys = [call.key for call in Client().get_execution(original.id).calls]
    assert keys[1::2] == [LOOKUP, REFUND]
    assert all(key.startswith(f"{SCOPE}model:") for key in keys[0::2])
    tool_runs.clear()
    return original.id, keys[0::2]  # the model calls' keys: model:<input fingerprint>


def test_a_tool_result_override_reaches_the_model_and_later_calls_run_live(server: ModelServer) -> None:
    original, _models = original_run(server)
    new_id = Client().replay(
        original, from_call=LOOKUP, overrides={LOOKUP: {"order_id": 7, "status": "lost"}}
    )
    assert Client().get_output(new_id) == "Done: refunded 10 on order 7"
    assert requests(server) == 5  # the first model call served; the other two live
    assert "lost" in tool_result_sent(server, 3)
    assert tool_runs == [("refund", {"order_id": 7, "amount": 10})]  # lookup_order served, refund live


def test_a_text_response_override_ends_the_run_without_a_request(server: ModelServer) -> None:
    original, models = original_run(server)
    new_id = Client().replay(
        original, from_call=models[1], overrides={models[1]: "No refund: the order is fine."}
    )
    assert Client().get_output(new_id) == "No refund: the order is fine."
    assert (requests(server), tool_runs) == (3, [])
    assert [call.key for call in Client().get_execution(new_id).calls] == [models[0], LOOKUP, models[1]]


@pytest.mark.parametrize(
    ("stream", "api"),
    [(False, "chat"), (True, "chat"), (True, "responses")],
    ids=["run", "streamed", "responses"],
)
def test_a_tool_call_override_runs_the_tool_live_with_its_arguments(
    server: ModelServer, stream: bool, api: str
) -> None:
    original, models = original_run(server, stream=stream, api=api)
    override = {
        "text": "Refunding part.",
        "tool_calls": [{"name": "refund", "arguments": {"order_id": 7, "amount": 4}}],
    }
    new_id = Client().replay(original, from_call=models[1], overrides={models[1]: override})
    assert Client().get_output(new_id) == "Done: refunded 4 on order 7"
    assert tool_runs == [("refund", {"order_id": 7, "amount": 4})]
    assert requests(server) == 4  # only the last model call, which sees the refund of 4
    assert tool_result_sent(server) == "refunded 4 on order 7"
    assert "Refunding part." in json.dumps(sent(server))  # the overridden response, as the model is shown it
    refund_keys = [call.key for call in Client().get_execution(new_id).calls if "tool:refund:" in call.key]
    assert len(refund_keys) == 1
    assert refund_keys[0].startswith(f"{SCOPE}tool:refund:call_replay_")  # the id the core filled in


def test_a_replay_with_new_inputs_runs_the_changed_calls_live(server: ModelServer) -> None:
    original, _models = original_run(server)
    new_id = Client().replay(original, inputs={"order_id": 8})
    assert Client().get_output(new_id) == "Done: refunded 10 on order 7"  # the script refunds order 7
    assert requests(server) == 6
    assert "Refund order 8" in json.dumps(sent(server, 3))
    assert tool_runs == []  # the script asks the same tool calls: same ids, same arguments, served


def test_replay_from_the_cli_with_an_override_then_diff(server: ModelServer, sqlite_file_store: str) -> None:
    original, models = original_run(server)

    def invoke(*args: str) -> str:
        result = CliRunner().invoke(app, ["--store-url", sqlite_file_store, *args])
        assert result.exit_code == 0, result.output
        return result.stdout

    override = json.dumps({"order_id": 7, "status": "lost"})
    replayed = json.loads(
        invoke(
            "executions", "replay", original, "--from", LOOKUP, "--override", f"{LOOKUP}={override}", "--json"
        )
    )
    new_id = replayed["execution_id"]
    assert (replayed["replay_of"], requests(server)) == (original, 5)
    diff = json.loads(invoke("executions", "diff", original, new_id, "--json"))
    new_models = [row["key"] for row in diff["rows"] if row["change"] == "new"]
    assert len(new_models) == 2  # the model saw another tool result: new inputs, new keys
    assert {row["key"]: row["change"] for row in diff["rows"]} == {
        models[0]: "same",
        LOOKUP: "changed",  # the override
        REFUND: "same",  # run live again, with the same arguments and the same result
        **dict.fromkeys(new_models, "new"),
        models[1]: "missing",
        models[2]: "missing",
    }
    table = " ".join(invoke("executions", "diff", original, new_id).split())
    assert "2 same, 1 changed, 2 new, 2 missing" in table


def test_a_prepared_replay_of_a_top_level_run_is_run_by_the_runner_under_its_id(server: ModelServer) -> None:
    assert ask("Refund order 7") == "Done: refunded 10 on order 7"
    [original] = Client().list_executions()
    lookup_key = "tool:lookup_order:call_lookup"
    tool_runs.clear()
    overrides = {lookup_key: {"order_id": 7, "status": "lost"}}
    with pytest.raises(ConfigurationError, match="not started by an importable @flow"):
        Client().replay(original.id, from_call=lookup_key, overrides=overrides)
    new_id = Client().replay(original.id, from_call=lookup_key, overrides=overrides, run=False)
    assert ask("Refund order 7", execution_id=new_id) == "Done: refunded 10 on order 7"
    assert Client().get_execution(new_id).status == "completed"
    assert requests(server) == 5
    assert "lost" in tool_result_sent(server, 3)
    assert tool_runs == [("refund", {"order_id": 7, "amount": 10})]


MCP_SCRIPT = Script(
    rules=[
        Rule(when_turn=0, tool_calls=(ScriptedToolCall("stock", {"item": "apples"}, id="call_stock"),)),
        Rule(when_turn=1, text="In stock: {last_tool_result}"),
    ],
    model_names=("gpt-4o-mini",),
)


@pytest.mark.parametrize("script", [MCP_SCRIPT])
def test_an_mcp_tool_result_override_reaches_the_model(
    script: Script, model_server: ModelServer, sqlite_file_store: str, tmp_path: Path
) -> None:
    counter = tmp_path / "mcp-calls.txt"
    mcp_server = Path(__file__).resolve().parents[1] / "pydantic_ai" / "mcp_inventory_server.py"

    async def original_and_replay() -> list[str]:
        server = MCPServerStdio(
            params={"command": sys.executable, "args": [str(mcp_server), str(counter)]},
            cache_tools_list=True,
            name="inventory",
        )
        outputs: list[str] = []
        async with server:  # one MCP server process for both runs
            agent = durable(Agent(name="stockkeeper", instructions="Check stock.", mcp_servers=[server]))
            with execution("stock-check"):
                result = await Runner.run(agent, "How many apples?", run_config=model_server.run_config())
            outputs.append(str(result.final_output))
            [stock] = [call for call in Client().get_execution("stock-check").calls if call.kind == "mcp"]
            new_id = Client().replay("stock-check", from_call=stock.key, overrides={stock.key: 0}, run=False)
            with execution(new_id):  # a prepared replay of an `execution(...)` block: entered by its id
                result = await Runner.run(agent, "How many apples?", run_config=model_server.run_config())
            outputs.append(str(result.final_output))
        return outputs

    assert run_async(original_and_replay()) == ["In stock: 7", "In stock: 0"]
    assert counter.read_text().splitlines() == ["stock:apples"]  # the MCP tool ran once, in the original
    assert len(model_server.requests()) == 3  # the replay's first model call served, its last one live


def test_the_docs_replay_example_runs_as_written(
    sqlite_file_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    markdown = (Path(__file__).resolve().parents[2] / "docs" / "openai-agents.md").read_text(encoding="utf-8")
    [block] = [
        block
        for block in re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)
        if "# replay_agents_example.py" in block
    ]
    exec(compile(block, "replay_agents_example.py", "exec"), {"__name__": "replay_agents_example"})
    assert capsys.readouterr().out.splitlines() == ["Status: order 7: lost"]
    assert {summary.status for summary in Client().list_executions()} == {"completed"}


def test_an_override_of_the_wrong_kind_or_of_a_handoff_is_refused_by_name() -> None:
    from kitaru_adapters.openai_agents._model import ModelResponseCodec
    from kitaru_adapters.openai_agents._tools import HandoffCodec, ToolOutcomeCodec
    from kitaru_core.adapters import MODEL_RESPONSE_OVERRIDE_FORMAT, TOOL_RESULT_OVERRIDE_FORMAT
    from kitaru_core.errors import SerializationError

    result = (TOOL_RESULT_OVERRIDE_FORMAT, b'{"value": "billing"}')
    response = (MODEL_RESPONSE_OVERRIDE_FORMAT, b'{"text": "hi", "tool_calls": []}')
    with pytest.raises(SerializationError, match="a model call takes a response override"):
        ModelResponseCodec().decode(*result)
    with pytest.raises(SerializationError, match="a tool call takes its result as plain JSON"):
        ToolOutcomeCodec().decode(*response)
    with pytest.raises(SerializationError, match="A handoff's result cannot be overridden"):
        HandoffCodec().decode(*result)
