"""SIGKILL a durable OpenAI Agents run after every k-th checkpoint call; the re-run completes it.

The run (see `examples/openai_agents_refund_desk.py`): model → handoff (its callback draws a random ticket into the
context) → model → two parallel order lookups → model → refund (needs the ticket) → model. That
is 8 checkpoint calls and 4 model requests when nothing goes wrong.
"""

from __future__ import annotations

import re
import runpy
import signal
import sys
from pathlib import Path

import pytest

from kitaru_core import Client, configure
from kitaru_core.testing import read_request_log

from ..conftest import slow_beyond
from .conftest import REFUND_AGENTS, AgentProcess

sys.path.insert(0, str(REFUND_AGENTS.parent))
SCRIPT = runpy.run_path(str(REFUND_AGENTS))["SCRIPT"]

CALLS_PER_RUN = 8
MODEL_REQUESTS_PER_RUN = 4


@pytest.fixture
def script():
    return SCRIPT


def _ticket(stdout: str) -> int:
    match = re.search(r"ticket=(\d+)", stdout)
    assert match, stdout
    return int(match.group(1))


@pytest.mark.parametrize("mode", ["async", "sync", "stream"])
def test_uninterrupted_run_records_every_call(model_server, tmp_path: Path, mode: str) -> None:
    process = AgentProcess(
        model_server.base_url, f"sqlite:///{tmp_path / 'k.db'}", tmp_path / "tools", tmp_path
    )
    done = process.run("--mode", mode)
    assert done.returncode == 0, done.stderr
    assert "output=Done: refunded 25 USD for order 7 under ticket" in done.stdout
    assert len(model_server.requests()) == MODEL_REQUESTS_PER_RUN
    configure(store_url=process.store_url, reset=True)
    try:
        (summary,) = Client().list_executions()
        detail = Client().get_execution(summary.id)
    finally:
        configure(reset=True)
    assert summary.status == "completed"
    assert [call.kind for call in detail.calls] == [
        "model",
        "handoff",
        "model",
        "tool",
        "tool",
        "model",
        "tool",
        "model",
    ]
    assert detail.calls[1].key == "handoff:transfer_to_refunds:0"
    assert detail.totals.model_calls == MODEL_REQUESTS_PER_RUN
    assert detail.totals.cost_usd is not None


# The default run kills at three points (the handoff's, the parallel lookups'); `nox -s slow` at all.
@pytest.mark.parametrize(
    ("mode", "crash_after"),
    slow_beyond(
        [(mode, k) for k in range(1, CALLS_PER_RUN + 1) for mode in ("async", "stream")],
        keep=[("async", 2), ("stream", 4), ("async", 7)],
    ),
)
def test_killed_after_k_calls_resumes_without_repeating_them(
    model_server, tmp_path: Path, mode: str, crash_after: int
) -> None:
    process = AgentProcess(
        model_server.base_url, f"sqlite:///{tmp_path / 'k.db'}", tmp_path / "tools", tmp_path
    )
    crashed = process.run("--mode", mode, "--crash-after", str(crash_after))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    requests_before = len(model_server.requests())
    drawn = re.findall(r"drew ticket (\d+)", crashed.stdout)

    resumed = process.run("--mode", mode)
    assert resumed.returncode == 0, resumed.stderr
    assert "output=Done: refunded 25 USD for order 7 under ticket" in resumed.stdout
    assert "refunded=[7]" in resumed.stdout

    # No model request that completed before the kill is made again.
    assert len(read_request_log(model_server.request_log)) == MODEL_REQUESTS_PER_RUN
    assert requests_before <= MODEL_REQUESTS_PER_RUN
    # The handoff's random ticket is drawn once: once committed it is restored, never redrawn.
    if crash_after >= 2:
        assert drawn
        assert _ticket(resumed.stdout) == int(drawn[0])
        assert "drew ticket" not in resumed.stdout
    runs = process.tool_runs()
    assert runs.count("refund 7") == 1
    # A parallel sibling in flight at the kill may run again (at-least-once), nothing else does.
    assert runs.count("lookup_order 7") in (1, 2)
    assert runs.count("lookup_order 8") in (1, 2)
    if crash_after != 4:
        assert runs.count("lookup_order 7") == runs.count("lookup_order 8") == 1
