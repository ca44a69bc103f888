"""SIGKILL a durable CrewAI kickoff after every k-th checkpoint call; the re-run completes it.

The kickoff (see `examples/crewai_order_desk.py`): a clerk's task looks up orders 7 and 8, then a
refund agent's task refunds order 7. In native tool-calling mode that is 7 checkpoint calls
(LLM → two parallel lookups → LLM; LLM → refund → LLM) and 4 model requests; in ReAct text mode
8 calls (LLM → lookup 7 → LLM → lookup 8 → LLM; LLM → refund → LLM) and 5 model requests.
"""

from __future__ import annotations

import signal

import pytest

from kitaru_core import Client, configure

from ..conftest import slow_beyond
from .conftest import DeskProcess, ModelServer

CALLS = {"native": 7, "react": 8}
MODEL_REQUESTS = {"native": 4, "react": 5}
OUTPUT = {
    "native": "output=Done: refunded 25 USD for order 7",
    "react": "output=Done: refund finished for order 7.",
}


def _keys(process: DeskProcess) -> list[str]:
    configure(store_url=process.store_url, reset=True)
    try:
        (summary,) = Client().list_executions()
        detail = Client().get_execution(summary.id)
    finally:
        configure(reset=True)
    assert detail.status == "completed"
    return sorted(call.key for call in detail.calls if call.status == "completed")


@pytest.mark.parametrize("mode", ["native", "react"])
def test_uninterrupted_kickoff_records_every_call(
    desk_process: DeskProcess, model_server: ModelServer, mode: str
) -> None:
    done = desk_process.run("--mode", mode)
    assert done.returncode == 0, done.stderr
    assert OUTPUT[mode] in done.stdout
    assert len(model_server.requests()) == MODEL_REQUESTS[mode]
    assert len(_keys(desk_process)) == CALLS[mode]
    assert sorted(desk_process.tool_runs()) == ["lookup_order 7", "lookup_order 8", "refund 7"]


# The default run kills at three points (the parallel lookups' first commit among them); `nox -s slow` at all.
@pytest.mark.parametrize(
    ("mode", "crash_after"),
    slow_beyond(
        [(mode, k) for mode in ("native", "react") for k in range(1, CALLS[mode] + 1)],
        keep=[("native", 2), ("native", 6), ("react", 4)],
    ),
)
def test_killed_after_k_calls_resumes_without_repeating_them(
    desk_process: DeskProcess, model_server: ModelServer, mode: str, crash_after: int
) -> None:
    crashed = desk_process.run("--mode", mode, "--crash-after", str(crash_after))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    requests_before = len(model_server.requests())
    runs_before = desk_process.tool_runs()

    resumed = desk_process.run("--mode", mode)
    assert resumed.returncode == 0, resumed.stderr
    assert OUTPUT[mode] in resumed.stdout  # the same final output as an uninterrupted run

    # No model request that completed before the kill is made again: the crashed run made
    # `requests_before`, the two runs together made exactly one uninterrupted run's worth.
    assert requests_before <= MODEL_REQUESTS[mode]
    assert len(model_server.requests()) == MODEL_REQUESTS[mode]
    runs = desk_process.tool_runs()
    assert runs[: len(runs_before)] == runs_before
    # Every tool ran once; only a parallel sibling in flight at the kill may run again (at least once).
    assert runs.count("refund 7") == 1
    if mode == "react" or crash_after != 2:
        assert runs.count("lookup_order 7") == runs.count("lookup_order 8") == 1
    else:
        assert runs.count("lookup_order 7") in (1, 2)
        assert runs.count("lookup_order 8") in (1, 2)
    assert len(_keys(desk_process)) == CALLS[mode]
