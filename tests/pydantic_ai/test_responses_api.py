"""PydanticAI's `openai:` models (the OpenAI Responses API) against the scripted model server, offline."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent

from kitaru_adapters.pydantic_ai import durable
from kitaru_core import Client
from kitaru_core.testing import Rule, Script, ScriptedModelServer, ScriptedToolCall, read_request_log

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = Script(
    rules=[
        Rule(when_last_user_contains="Refund order 42", text="Order 42 is refunded."),
        Rule(
            when_last_user_contains="stock",
            when_turn=0,
            tool_calls=(ScriptedToolCall("stock", {"item": "lamp"}),),
        ),
        Rule(when_last_user_contains="stock", when_turn=1, text="In stock: {last_tool_result}"),
        Rule(when_last_user_contains="Describe", text='{"name": "lamp", "count": 3}'),
    ],
    model_names=("gpt-4o",),
)


@pytest.fixture
def responses_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedModelServer]:
    """The scripted server, reached through `OPENAI_BASE_URL` as an `openai:` model reaches OpenAI."""
    with ScriptedModelServer(SCRIPT, request_log_path=tmp_path / "requests.jsonl") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "scripted")
        yield server


async def close_clients(*agents: Agent[None, object]) -> None:
    """Close the OpenAI clients `openai:` models made, so no connection is left to the collector."""
    for agent in agents:
        client = getattr(agent.model, "client", None)
        if client is not None:
            await client.close()


def readme_first_snippet() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```python\n(.*?)```", readme, re.DOTALL)
    assert match is not None, "README.md has no python snippet"
    return match.group(1)


def test_the_readme_snippet_runs_against_the_scripted_responses_server(
    responses_server: ScriptedModelServer, tmp_path: Path, sqlite_file_store: str
) -> None:
    snippet = readme_first_snippet()
    assert 'Agent("openai:gpt-4o", name="support")' in snippet
    program = tmp_path / "readme_snippet.py"
    program.write_text(snippet + "print(result.output)\n", encoding="utf-8")
    environment = {
        **os.environ,
        "KITARU_STORE_URL": sqlite_file_store,
        "KITARU_ARTIFACTS_URL": str(tmp_path / "artifacts"),
        "KITARU_INTERACTIVE": "false",
    }
    done = subprocess.run(
        [sys.executable, str(program)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Order 42 is refunded."
    [record] = read_request_log(responses_server.request_log_path or "")
    assert record["path"] == "/v1/responses"
    assert record["model"] == "gpt-4o"
    [summary] = Client().list_executions()
    assert summary.flow_name == "pydantic_ai:support"
    assert summary.status == "completed"


def test_openai_responses_model_tools_streaming_and_structured_output(
    responses_server: ScriptedModelServer, sqlite_file_store: str
) -> None:
    runs: list[str] = []

    class Item(BaseModel):
        name: str
        count: int

    agent = durable(Agent("openai:gpt-4o", name="shop"))

    @agent.tool_plain
    def stock(item: str) -> str:
        """How many of an item are in stock."""
        runs.append(item)
        return f"3 x {item}"

    describer = durable(Agent("openai:gpt-4o", name="describer", output_type=Item))

    async def scenario() -> tuple[str, list[str], Item]:
        plain = await agent.run("How much stock of lamps?")
        async with agent.run_stream("Is there stock, streamed?") as streamed:
            pieces = [piece async for piece in streamed.stream_text(delta=True, debounce_by=None)]
        structured = await describer.run("Describe the lamp")
        await close_clients(agent, describer)
        return plain.output, pieces, structured.output

    text, pieces, item = asyncio.run(scenario())
    assert text == "In stock: 3 x lamp"
    assert "".join(pieces) == "In stock: 3 x lamp"
    assert len(pieces) > 1  # deltas, not one block
    assert item == Item(name="lamp", count=3)
    assert runs == ["lamp", "lamp"]
    records = responses_server.request_records
    assert {record["path"] for record in records} == {"/v1/responses"}
    assert [record["streamed"] for record in records] == [False, False, True, True, False]
    calls = [
        call for summary in Client().list_executions() for call in Client().get_execution(summary.id).calls
    ]
    assert sum(call.kind == "model" for call in calls) == 5
    assert sum(call.kind == "tool" for call in calls) == 2
