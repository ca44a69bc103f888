"""Tool calls to an MCP server (a real stdio subprocess) are checkpoint calls too."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from kitaru_adapters.pydantic_ai import durable
from kitaru_core import Client, execution

pytest.importorskip("pydantic_ai.mcp")
transports = pytest.importorskip("fastmcp.client.transports")

SERVER = Path(__file__).resolve().parent / "mcp_inventory_server.py"


def test_mcp_tool_calls_are_served_from_the_store(sqlite_file_store: str, tmp_path: Path) -> None:
    from pydantic_ai.mcp import MCPToolset

    counter = tmp_path / "mcp-tool-runs.txt"
    requests: list[int] = []

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        requests.append(len(messages))
        returns = [part for part in messages[-1].parts if isinstance(part, ToolReturnPart)]
        if not returns:
            return ModelResponse(parts=[ToolCallPart("stock", {"item": "apple"}, tool_call_id="s1")])
        return ModelResponse(parts=[TextPart(f"in stock: {returns[0].content}")])

    transport = transports.StdioTransport(command=sys.executable, args=[str(SERVER), str(counter)])
    agent = durable(Agent(FunctionModel(respond), toolsets=[MCPToolset(transport)], name="inventory"))

    async def ask() -> str:
        with execution("mcp-1"):
            return (await agent.run("How many apples?")).output

    assert asyncio.run(ask()) == "in stock: 7"
    assert asyncio.run(ask()) == "in stock: 7"
    assert counter.read_text().splitlines() == ["stock:apple"]
    assert len(requests) == 2
    calls = Client().get_execution("mcp-1").calls
    assert [(call.key, call.kind, call.source) for call in calls] == [
        ("pydantic_ai:inventory:0/model_request:0", "model", "store"),
        ("pydantic_ai:inventory:0/tool:stock:s1", "tool", "store"),
        ("pydantic_ai:inventory:0/model_request:1", "model", "store"),
    ]
