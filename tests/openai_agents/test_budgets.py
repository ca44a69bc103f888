"""A real OpenAI Agents SDK agent with a budget below its cost: stops at the budget wait, is raised
from the CLI, continues without repeating a model call, and completes (scripted server, real HTTP).
`durable(agent, budget=...)` and `DurableRunner(budget=...)` both."""

from __future__ import annotations

from pathlib import Path

import pytest
from agents import Agent, Runner, function_tool

from kitaru_adapters.openai_agents import DurableRunner, durable
from kitaru_core.errors import ExecutionCancelledError, ExecutionWaitingError
from kitaru_core.testing import ScriptedModelServer
from tests._budgets import (
    BUDGET,
    THREE_CALLS,
    check_cancelled_with_reason,
    check_completed_without_repeats,
    check_stopped_at_budget,
    lookup,
    raise_from_cli,
    stop_from_cli,
)

from .conftest import ModelServer


@pytest.mark.parametrize("how", ["durable", "DurableRunner"])
def test_a_budget_below_the_cost_waits_is_raised_from_the_cli_and_completes(
    sqlite_file_store: str, tmp_path: Path, how: str
) -> None:
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(THREE_CALLS, request_log_path=log) as server:
        model_server = ModelServer(server, log)

        def run() -> str:
            agent = Agent(name="budgeted", instructions="Look things up.", tools=[function_tool(lookup)])
            config = model_server.run_config()  # model: PRICED_MODEL
            if how == "durable":
                result = Runner.run_sync(durable(agent, budget=BUDGET), "Look two things up", run_config=config)
            else:
                result = DurableRunner(budget=BUDGET).run_sync(agent, "Look two things up", run_config=config)
            return str(result.final_output)

        with pytest.raises(ExecutionWaitingError):
            run()
        execution_id = check_stopped_at_budget(server, sqlite_file_store)
        raise_from_cli(sqlite_file_store, execution_id)
        assert run() == "Done: found 2"
        check_completed_without_repeats(server, execution_id)


def test_a_stop_answer_from_the_cli_cancels_the_run_with_its_reason(sqlite_file_store: str, tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(THREE_CALLS, request_log_path=log) as server:
        model_server = ModelServer(server, log)

        def run() -> None:
            agent = Agent(name="stopped", instructions="Look things up.", tools=[function_tool(lookup)])
            Runner.run_sync(durable(agent, budget=BUDGET), "Look two things up", run_config=model_server.run_config())

        with pytest.raises(ExecutionWaitingError):
            run()
        execution_id = check_stopped_at_budget(server, sqlite_file_store)
        stop_from_cli(sqlite_file_store, execution_id)
        with pytest.raises(ExecutionCancelledError, match="over the limit"):
            run()
        check_cancelled_with_reason(server, execution_id)
