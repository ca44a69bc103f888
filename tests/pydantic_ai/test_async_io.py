"""Async PydanticAI runs never block the event loop on store I/O, approvals included (issue 12, "Async")."""

from __future__ import annotations

import asyncio

import pytest

import kitaru_core
from kitaru_core import Client
from kitaru_core.errors import ExecutionWaitingError
from tests._loop_lag import LoopLagMeter, assert_loop_stayed_free, slow_store
from tests.pydantic_ai.test_adapter import TWO_TOOLS, Recorder, bank_agent


def test_async_run_records_every_call_with_the_loop_free(sqlite_file_store: str) -> None:
    recorder, counts = Recorder(TWO_TOOLS), {}
    agent = bank_agent(recorder, counts)

    asyncio.run(agent.run("warm up"))  # first-use costs (schemas, imports) are CPU, not store I/O

    async def run() -> str:
        async with LoopLagMeter() as meter:
            result = await agent.run("hi")
        assert_loop_stayed_free(meter, slow, at_least=6)  # open, 4 calls, finish
        return result.output

    with slow_store() as slow:
        assert asyncio.run(run()) == "100 | sent 5"
    executions = Client().list_executions()
    assert [execution.status for execution in executions] == ["completed", "completed"]
    kinds = [[call.kind for call in Client().get_execution(execution.id).calls] for execution in executions]
    assert kinds == [["model", "tool", "tool", "model"]] * 2
    assert (recorder.requests, counts) == (4, {"balance": 2, "transfer": 2})  # the warm-up and the run


def test_approval_poll_runs_off_the_loop(sqlite_file_store: str) -> None:
    kitaru_core.configure(wait_poll_interval_s=0.05)
    agent = bank_agent(Recorder(TWO_TOOLS), {}, approve=["transfer"], approval_timeout=0.5)
    with pytest.raises(ExecutionWaitingError):
        asyncio.run(agent.run("warm up"))

    async def run() -> None:
        async with LoopLagMeter() as meter:
            with pytest.raises(ExecutionWaitingError):
                await agent.run("hi")
        assert_loop_stayed_free(meter, slow, at_least=6)  # the waits' polls are store reads too

    with slow_store() as slow:
        asyncio.run(run())
    assert [wait.name for wait in Client().pending_waits()] == ["approve:transfer:t2"] * 2
