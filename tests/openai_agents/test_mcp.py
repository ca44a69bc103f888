"""MCP tool calls of a durable OpenAI Agents run are checkpoint calls (a real stdio MCP server)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from agents import Agent, Runner
from agents.mcp import MCPServerStdio

from kitaru_adapters.openai_agents import durable
from kitaru_core import Client, execution
from kitaru_core.testing import Rule, Script, ScriptedToolCall

from .conftest import run_async

MCP_SERVER = Path(__file__).resolve().parents[1] / "pydantic_ai" / "mcp_inventory_server.py"


@pytest.fixture
def script() -> Script:
    return Script(
        rules=[
            Rule(
                when_tools_offered="stock",
                when_turn=0,
                tool_calls=(ScriptedToolCall("stock", {"item": "apples"}),),
            ),
            Rule(when_turn=1, text="In stock: {last_tool_result}"),
        ],
        model_names=("gpt-4o-mini",),
    )


def test_mcp_tool_calls_are_recorded_and_served(sqlite_file_store: str, model_server, tmp_path: Path) -> None:
    counter = tmp_path / "mcp-calls.txt"

    async def ask_twice() -> list[str]:
        server = MCPServerStdio(
            params={"command": sys.executable, "args": [str(MCP_SERVER), str(counter)]},
            cache_tools_list=True,
            name="inventory",
        )
        outputs: list[str] = []
        async with server:
            agent = durable(Agent(name="stockkeeper", instructions="Check stock.", mcp_servers=[server]))
            for _ in range(2):  # the second time, the recorded execution is entered again: all served
                with execution("stock-check"):
                    result = await Runner.run(agent, "How many apples?", run_config=model_server.run_config())
                outputs.append(result.final_output)
        return outputs

    assert run_async(ask_twice()) == ["In stock: 7", "In stock: 7"]
    assert counter.read_text().splitlines() == ["stock:apples"]  # the MCP tool body ran once
    assert len(model_server.requests()) == 2
    calls = Client().get_execution("stock-check").calls
    assert [call.kind for call in calls] == ["model", "mcp", "model"]
    assert calls[1].key.split("/")[-1].startswith("tool:stock:call_")
    assert {call.source for call in calls} == {"store"}
