"""Async OpenAI Agents runs never block the event loop on store I/O (issue 12, "Async").

Real SDK, real HTTP to the scripted model server, a deliberately slow store (`tests/_loop_lag.py`).
"""

from __future__ import annotations

from typing import Any

import pytest
from agents import Agent, Runner

from kitaru_adapters.openai_agents import durable
from kitaru_core import Client
from kitaru_core.testing import Script
from tests._loop_lag import LoopLagMeter, assert_loop_stayed_free, slow_store

from .conftest import run_async
from .test_adapter import SCRIPT, Tools


@pytest.fixture
def script() -> Script:
    return SCRIPT


async def _run(agent: Agent[Any], prompt: str, run_config: Any, *, streamed: bool) -> str:
    if not streamed:
        return str((await Runner.run(agent, prompt, run_config=run_config)).final_output)
    result = Runner.run_streamed(agent, prompt, run_config=run_config)  # sync: the run starts in a task
    events = [event async for event in result.stream_events()]
    assert any(event.type == "raw_response_event" for event in events)
    return str(result.final_output)


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_runner_records_every_call_with_the_loop_free(sqlite_file_store: str, model_server: Any, streamed: bool) -> None:
    """`Runner.run`, and `Runner.run_streamed` (whose execution opens and closes in the run's task)."""
    tools = Tools()
    agent = durable(Agent(name="calculator", instructions="Add.", tools=[tools.add]))
    config = model_server.run_config()
    assert run_async(_run(agent, "Add 1+1 and 4+5", config, streamed=streamed)) == "Sums: 9"  # warm up

    async def measured() -> str:
        async with LoopLagMeter() as meter:
            output = await _run(agent, "Add 2+3 and 4+5", config, streamed=streamed)
        assert_loop_stayed_free(meter, slow, at_least=6)  # open, 4 calls, finish
        return output

    with slow_store() as slow:
        assert run_async(measured()) == "Sums: 9"
    executions = Client().list_executions()
    assert [execution.status for execution in executions] == ["completed", "completed"]
    for execution in executions:
        assert [call.kind for call in Client().get_execution(execution.id).calls] == ["model", "tool", "tool", "model"]
    assert tools.runs == ["add 2 3", "add 4 5"] * 2  # the scripted model asks for the same calls
