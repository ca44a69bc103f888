"""Crash matrix: SIGKILL the agent process right after its k-th checkpoint call commits, for every k.

Across the killed process and the re-run, every model request and every tool body runs exactly
once, except a tool whose parallel sibling's commit was the kill point: it may have been running
(in flight) and then runs again (at-least-once for the call in flight). The final output equals an
uninterrupted run's.
"""

from __future__ import annotations

import collections
import signal
from pathlib import Path

import pytest

from kitaru_core import Client, configure

from .conftest import AgentProcess

# model 0, lookup 1 | lookup 2 (parallel), model 1, refund 1 | refund 2 (parallel), model 2
CALLS_IN_RUN = 7
MODEL_REQUESTS_IN_RUN = 3
EXPECTED_TOOL_RUNS = {"lookup_order:1": 1, "lookup_order:2": 1, "refund:1:10": 1, "refund:2:20": 1}
# Kill points right after the first commit of a parallel pair: the sibling may be in flight.
PARALLEL_FIRST_COMMITS = {2: ("lookup_order:1", "lookup_order:2"), 5: ("refund:1:10", "refund:2:20")}
# The default run kills at two points per mode (each parallel pair's first commit once); `nox -s slow` at all.
KILL_POINTS = {"sync": (2, 4), "stream": (5, 7)}


def _uninterrupted_output(agent: AgentProcess, mode: str) -> str:
    result = agent.run("--mode", mode)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    "every_point", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["two-points", "every-point"]
)
@pytest.mark.parametrize("mode", ["sync", "stream"])
def test_kill_after_each_checkpoint_call_then_rerun(
    agent_for_mode: AgentProcess, mode: str, tmp_path: Path, every_point: bool
) -> None:
    reference = _uninterrupted_output(agent_for_mode, mode)
    assert "OUTPUT: Done. Last result: refunded 20 for order 2" in reference
    assert agent_for_mode.model_requests() == MODEL_REQUESTS_IN_RUN
    assert collections.Counter(agent_for_mode.tool_runs()) == EXPECTED_TOOL_RUNS

    for kill_after in range(1, CALLS_IN_RUN + 1) if every_point else KILL_POINTS[mode]:
        case_dir = tmp_path / f"k{kill_after}"
        case_dir.mkdir()
        agent = AgentProcess(
            base_url=agent_for_mode.base_url,
            store_url=f"sqlite:///{case_dir / 'kitaru.db'}",
            counter_file=case_dir / "tool-runs.txt",
            request_log=agent_for_mode.request_log,
            tmp_path=case_dir,
        )
        requests_before = agent.model_requests()
        killed = agent.run("--mode", mode, "--crash-after", str(kill_after))
        assert killed.returncode == -signal.SIGKILL, f"k={kill_after}: {killed.stdout}{killed.stderr}"
        assert "OUTPUT" not in killed.stdout

        configure(store_url=agent.store_url, reset=True)
        client = Client()
        [crashed] = client.list_executions()
        assert crashed.status == "running"
        assert not crashed.runner_alive
        assert len(client.get_execution(crashed.id).calls) == kill_after

        resumed = agent.run("--mode", mode)
        assert resumed.returncode == 0, f"k={kill_after}: {resumed.stderr}"
        assert resumed.stdout == reference, f"k={kill_after}"

        # Model requests run one at a time, and the kill lands between them: none ran twice.
        assert agent.model_requests() - requests_before == MODEL_REQUESTS_IN_RUN, f"k={kill_after}"
        runs = collections.Counter(agent.tool_runs())
        expected = dict(EXPECTED_TOOL_RUNS)
        if kill_after in PARALLEL_FIRST_COMMITS:
            # The sibling of the committed call may have been in flight at the kill: it ran at most twice.
            for sibling in PARALLEL_FIRST_COMMITS[kill_after]:
                assert runs[sibling] in (1, 2), f"k={kill_after}: {sibling} ran {runs[sibling]} times"
                expected[sibling] = runs[sibling]
            assert sum(runs[name] for name in PARALLEL_FIRST_COMMITS[kill_after]) <= 3
        assert dict(runs) == expected, f"k={kill_after}: {dict(runs)}"

        detail = client.get_execution(crashed.id)
        assert detail.status == "completed"
        assert detail.run_count == 2
        live_keys = [call.key for call in detail.calls if call.status == "completed"]
        assert len(live_keys) == CALLS_IN_RUN == len(set(live_keys))
        assert [call.source for call in detail.calls[:kill_after]] == ["store"] * kill_after
        assert all(call.source == "live" for call in detail.calls[kill_after:])
        configure(reset=True)


@pytest.fixture
def agent_for_mode(refund_agent: AgentProcess) -> AgentProcess:
    return refund_agent
