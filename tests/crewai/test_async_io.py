"""CrewAI's native async kickoff (`akickoff`) never blocks the event loop on store I/O (issue 12, "Async").

`Crew.kickoff_async` runs the synchronous `kickoff` on a worker thread (CrewAI's own design), so
its store I/O is off the loop already; `akickoff` runs the crew on the loop and is measured here,
against a deliberately slow store (`tests/_loop_lag.py`) and real HTTP to the scripted model server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kitaru_adapters.crewai import durable
from kitaru_core import Client
from tests._loop_lag import LoopLagMeter, assert_loop_stayed_free, slow_store

from .conftest import DESK, ModelServer
from .test_adapter import NATIVE_KINDS, OUTPUT


def test_akickoff_records_every_call_with_the_loop_free(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path
) -> None:
    inputs = {"mode": "native"}
    asyncio.run(durable(DESK["build_crew"](model_server.base_url, "native")).akickoff(inputs={"mode": "warm up"}))

    crew = durable(DESK["build_crew"](model_server.base_url, "native"))  # its HTTP clients: CPU, not store I/O

    async def run() -> Any:
        async with LoopLagMeter() as meter:
            result = await crew.akickoff(inputs=inputs)
        assert_loop_stayed_free(meter, slow, at_least=len(NATIVE_KINDS) + 2)  # open, the calls, finish
        return result

    with slow_store() as slow:
        assert asyncio.run(run()).raw == OUTPUT
    executions = Client().list_executions()
    assert [execution.status for execution in executions] == ["completed", "completed"]
    assert [call.kind for call in Client().get_execution(executions[0].id).calls] == NATIVE_KINDS
