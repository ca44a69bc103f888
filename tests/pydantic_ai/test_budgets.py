"""A real PydanticAI agent with a budget below its cost: stops at the budget wait, is raised from
the CLI, continues without repeating a model request, and completes (scripted server, real HTTP)."""

from __future__ import annotations

import asyncio

import openai
import pytest
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from kitaru_adapters.pydantic_ai import durable
from kitaru_core.errors import ExecutionCancelledError, ExecutionWaitingError
from kitaru_core.testing import ScriptedModelServer
from tests._budgets import (
    BUDGET,
    PRICED_MODEL,
    THREE_CALLS,
    check_cancelled_with_reason,
    check_completed_without_repeats,
    check_stopped_at_budget,
    lookup,
    raise_from_cli,
    stop_from_cli,
)


def ask(server: ScriptedModelServer) -> str:
    async def run() -> str:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="scripted", max_retries=0)
        model = OpenAIChatModel(PRICED_MODEL, provider=OpenAIProvider(openai_client=client))
        agent = Agent(model, name="budgeted", tools=[lookup])
        try:
            return (await durable(agent, budget=BUDGET).run("Look two things up")).output
        finally:
            await client.close()

    return asyncio.run(run())


def test_a_budget_below_the_cost_waits_is_raised_from_the_cli_and_completes(sqlite_file_store: str) -> None:
    with ScriptedModelServer(THREE_CALLS) as server:
        with pytest.raises(ExecutionWaitingError):
            ask(server)
        execution_id = check_stopped_at_budget(server, sqlite_file_store)
        raise_from_cli(sqlite_file_store, execution_id)
        assert ask(server) == "Done: found 2"
        check_completed_without_repeats(server, execution_id)


def test_a_stop_answer_from_the_cli_cancels_the_run_with_its_reason(sqlite_file_store: str) -> None:
    with ScriptedModelServer(THREE_CALLS) as server:
        with pytest.raises(ExecutionWaitingError):
            ask(server)
        execution_id = check_stopped_at_budget(server, sqlite_file_store)
        stop_from_cli(sqlite_file_store, execution_id)
        with pytest.raises(ExecutionCancelledError, match="over the limit"):
            ask(server)
        check_cancelled_with_reason(server, execution_id)
