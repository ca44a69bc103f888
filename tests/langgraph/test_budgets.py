"""A real LangGraph agent (`create_agent`) with a budget below its cost: stops at the budget wait, is
raised from the CLI, continues without repeating a chat model call, and completes (scripted
server, real HTTP, no checkpointer)."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain.agents import create_agent
from langchain_core.tools import tool

from kitaru_adapters.langgraph import durable
from kitaru_core.errors import ExecutionWaitingError
from kitaru_core.testing import ScriptedModelServer
from tests._budgets import (
    BUDGET,
    THREE_CALLS,
    check_completed_without_repeats,
    check_stopped_at_budget,
    lookup,
    raise_from_cli,
)

from .conftest import ModelServer


def test_a_budget_below_the_cost_waits_is_raised_from_the_cli_and_completes(
    sqlite_file_store: str, tmp_path: Path
) -> None:
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(THREE_CALLS, request_log_path=log) as server:
        model_server = ModelServer(server, log)  # its chat model is gpt-4o-mini (PRICED_MODEL)

        def run() -> str:
            agent = durable(create_agent(model_server.chat_model(), [tool(lookup)]), name="budgeted", budget=BUDGET)
            result = agent.invoke({"messages": [("user", "Look two things up")]})
            return str(result["messages"][-1].content)

        with pytest.raises(ExecutionWaitingError):
            run()
        execution_id = check_stopped_at_budget(server, sqlite_file_store)
        raise_from_cli(sqlite_file_store, execution_id)
        assert run() == "Done: found 2"
        check_completed_without_repeats(server, execution_id)
