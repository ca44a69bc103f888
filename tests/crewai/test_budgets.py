"""A real CrewAI crew with a budget below its cost: stops at the budget wait, is raised from the
CLI, continues without repeating an LLM call, and completes (scripted server, real HTTP)."""

from __future__ import annotations

import pytest
from crewai import LLM, Agent, Crew, Task
from crewai.tools import tool

from kitaru_adapters.crewai import durable
from kitaru_core.errors import ExecutionWaitingError
from kitaru_core.testing import ScriptedModelServer
from tests._budgets import (
    BUDGET,
    PRICED_MODEL,
    THREE_CALLS,
    check_completed_without_repeats,
    check_stopped_at_budget,
    lookup,
    raise_from_cli,
)

crew_lookup = tool("lookup")(lookup)


def test_a_budget_below_the_cost_waits_is_raised_from_the_cli_and_completes(sqlite_file_store: str) -> None:
    with ScriptedModelServer(THREE_CALLS) as server:
        llms: list[LLM] = []

        def run() -> str:
            llm = LLM(model=f"openai/{PRICED_MODEL}", base_url=server.base_url, api_key="scripted", max_retries=0)
            llms.append(llm)
            clerk = Agent(
                role="Clerk", goal="Look up", backstory="Careful.", llm=llm, tools=[crew_lookup],
                max_retry_limit=0, verbose=False,
            )
            task = Task(name="lookup", description="Look two things up.", expected_output="x", agent=clerk)
            crew = Crew(name="budgeted", agents=[clerk], tasks=[task], verbose=False)
            return str(durable(crew, budget=BUDGET).kickoff().raw)

        try:
            with pytest.raises(ExecutionWaitingError):
                run()
            execution_id = check_stopped_at_budget(server, sqlite_file_store)
            raise_from_cli(sqlite_file_store, execution_id)
            assert run() == "Done: found 2"
            check_completed_without_repeats(server, execution_id)
        finally:
            for llm in llms:
                client = getattr(llm, "_client", None)
                if client is not None:
                    client.close()
