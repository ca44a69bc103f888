"""Installing and removing durability: `durable()` from many threads at once, and `undurable()`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from crewai import Crew
from crewai.flow.flow import Flow, start

from kitaru_adapters.crewai import DurableLLM, DurableTool, durable, is_durable, undurable
from kitaru_core import Client
from kitaru_core.errors import AdapterError

from ..concurrent_durable import run_concurrent_durable
from .conftest import DESK, ModelServer, lines

OUTPUT = "Done: refunded 25 USD for order 7"


def test_durable_from_many_threads_at_once_wraps_once(tmp_path: Path) -> None:
    run_concurrent_durable("crewai", tmp_path)


def test_undurable_returns_a_crew_to_its_plain_state(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path
) -> None:
    crew = DESK["build_crew"](model_server.base_url, "native")
    plain_llms = [vars(agent)["llm"] for agent in crew.agents]
    plain_tools = [list(agent.tools) for agent in crew.agents]

    durable(crew)
    assert crew.kickoff(inputs={"mode": "native"}).raw == OUTPUT
    assert len(Client().list_executions()) == 1

    assert undurable(crew) is crew
    assert type(crew) is Crew
    assert not is_durable(crew)
    assert [vars(agent)["llm"] for agent in crew.agents] == plain_llms
    assert [list(agent.tools) for agent in crew.agents] == plain_tools
    assert not any(isinstance(tool, DurableTool) for agent in crew.agents for tool in agent.tools)
    assert crew.kickoff(inputs={"mode": "native"}).raw == OUTPUT  # the same answer, recorded nowhere
    assert len(Client().list_executions()) == 1
    assert lines(tool_runs).count("refund 7") == 2

    durable(crew)
    assert all(isinstance(vars(agent)["llm"], DurableLLM) for agent in crew.agents)
    assert crew.kickoff(inputs={"mode": "native"}).raw == OUTPUT
    assert len(Client().list_executions()) == 2  # recorded again, as a new execution
    assert len(model_server.requests()) == 12
    for llm in plain_llms:
        client = getattr(llm, "_client", None)
        if client is not None:
            client.close()


def test_undurable_returns_a_flow_to_its_plain_class_and_refuses_classes() -> None:
    class Greeting(Flow[dict[str, Any]]):  # pyright: ignore[reportMissingTypeArgument]
        @start()
        def greet(self) -> str:
            return "hello"

    flow = Greeting()
    durable(flow)
    assert type(flow) is not Greeting
    assert is_durable(flow)
    assert undurable(flow) is flow
    assert type(flow) is Greeting
    assert not is_durable(flow)
    with pytest.raises(AdapterError, match="takes a Crew or Flow object"):
        undurable(Greeting)
