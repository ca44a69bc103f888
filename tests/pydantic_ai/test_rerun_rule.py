"""The re-run rule for PydanticAI runs: named runs (`named_run`) and anonymous ones, over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic_ai import Agent

from kitaru_adapters.pydantic_ai import durable
from kitaru_core import Client, named_run
from kitaru_core.errors import ExecutionWaitingError
from kitaru_core.testing import Rule, Script, ScriptedModelServer, ScriptedToolCall

SCRIPT = Script(
    rules=[
        Rule(
            when_last_user_contains="Refund",
            when_last_tool_result_contains="",
            text="Done: {last_tool_result}",
        ),
        Rule(when_last_user_contains="Refund", tool_calls=(ScriptedToolCall("refund", {"order_id": 42}),)),
        Rule(text="Hello back"),
    ],
    model_names=("gpt-4o",),
)


@pytest.fixture
def server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_file_store: str
) -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(SCRIPT, request_log_path=tmp_path / "requests.jsonl") as running:
        monkeypatch.setenv("OPENAI_BASE_URL", running.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "scripted")
        yield running


class Desk:
    def __init__(self, approve: list[str] | None = None) -> None:
        self.refunds: list[int] = []
        self.agent = durable(Agent("openai:gpt-4o", name="support"), approve=approve)

        @self.agent.tool_plain
        def refund(order_id: int) -> str:
            """Refund an order."""
            self.refunds.append(order_id)
            return f"refunded order {order_id}"

    def run(self, prompt: str) -> str:
        async def go() -> str:
            try:
                return (await self.agent.run(prompt)).output
            finally:
                client = getattr(self.agent.model, "client", None)
                if client is not None:
                    await client.close()

        return asyncio.run(go())


def statuses() -> dict[str, str]:
    return {summary.id: summary.status for summary in Client().list_executions()}


def test_a_completed_named_run_run_again_is_served(server: ScriptedModelServer) -> None:
    desk = Desk()
    with named_run("ticket-42"):
        assert desk.run("Refund order 42") == "Done: refunded order 42"
        assert (server.request_count, desk.refunds) == (2, [42])
        assert desk.run("Refund order 42") == "Done: refunded order 42"
    assert (server.request_count, desk.refunds) == (2, [42])  # 0 requests on the wire, no tool run
    assert statuses() == {"ticket-42": "completed"}

    with named_run("ticket-42"):
        assert desk.run("Hello") == "Hello back"  # another input under the identity: a new turn, live
    assert server.request_count == 3
    assert statuses() == {"ticket-42": "completed", "ticket-42~2": "completed"}


def test_a_waiting_named_run_resumes_and_then_is_served(server: ScriptedModelServer) -> None:
    desk = Desk(approve=["refund"])
    with named_run("ticket-7"), pytest.raises(ExecutionWaitingError) as waiting:
        desk.run("Refund order 42")
    assert waiting.value.execution_id == "ticket-7"
    [wait_name] = waiting.value.wait_names
    Client().answer("ticket-7", wait_name, {"approved": True})
    with named_run("ticket-7"):
        assert desk.run("Refund order 42") == "Done: refunded order 42"
        assert desk.run("Refund order 42") == "Done: refunded order 42"
    assert (server.request_count, desk.refunds) == (2, [42])
    assert statuses() == {"ticket-7": "completed"}


def test_an_anonymous_completed_run_is_a_new_execution(server: ScriptedModelServer) -> None:
    desk = Desk()
    desk.run("Refund order 42")
    desk.run("Refund order 42")
    assert (server.request_count, desk.refunds) == (4, [42, 42])
    assert sorted(statuses().values()) == ["completed", "completed"]
