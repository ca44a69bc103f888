"""30 crews kicked off at once (`kickoff_async`) in one step of a durable Flow.

`examples/crewai_lead_scoring.py` runs in a fresh interpreter (where first imports happen on the
crews' threads). The durable run completes with the same requests as the plain one; a run killed
with SIGKILL after K committed checkpoint calls and run again makes only the requests that had not
completed. More kill points: `KITARU_CREWAI_KILL_POINTS=3,12,25` (`nox -s crash_crewai`).
"""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kitaru_core import Client, configure
from kitaru_core.testing import ScriptedModelServer, read_request_log

from .conftest import EXAMPLES, store_environment

# The oldest_* sessions run this only under `nox -s slow` (`nox -s crash_crewai`: more kill points).
pytestmark = pytest.mark.newest

PROGRAM = EXAMPLES / "crewai_lead_scoring.py"
LEADS = 30
KILL_POINTS = [int(k) for k in os.environ.get("KITARU_CREWAI_KILL_POINTS", "12").split(",")]
SCORING: dict[str, Any] = runpy.run_path(str(PROGRAM))


def _run(base_url: str, tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = store_environment(tmp_path)
    command = [sys.executable, str(PROGRAM), "--base-url", base_url, "--leads", str(LEADS), *arguments]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300, check=False)


def _completed_model_calls(tmp_path: Path) -> int:
    configure(store_url=f"sqlite:///{tmp_path / 'kitaru.db'}", reset=True)
    try:
        (summary,) = Client().list_executions()
        calls = Client().get_execution(summary.id).calls
    finally:
        configure(reset=True)
    return sum(1 for call in calls if call.kind == "model" and call.status == "completed")


def _leads(log: Path) -> list[str]:
    return sorted(
        str(request["last_user"]).split("Score lead ")[1].split(".")[0] for request in read_request_log(log)
    )


def test_thirty_parallel_crews_in_a_durable_flow_make_the_same_requests_as_plain(tmp_path: Path) -> None:
    plain_log, durable_log = tmp_path / "plain.jsonl", tmp_path / "durable.jsonl"
    with ScriptedModelServer(SCORING["SCRIPT"], request_log_path=plain_log) as server:
        SCORING["BASE_URL"]["url"] = server.base_url
        assert len(SCORING["LeadFlow"]().kickoff(inputs={"leads": LEADS})) == LEADS
    with ScriptedModelServer(SCORING["SCRIPT"], request_log_path=durable_log) as server:
        done = _run(server.base_url, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"scored={LEADS}" in done.stdout
    assert "partially initialized module" not in done.stderr
    assert _leads(durable_log) == _leads(plain_log)
    assert len(_leads(plain_log)) == LEADS
    assert _completed_model_calls(tmp_path) == LEADS


@pytest.mark.parametrize("kill_after", KILL_POINTS)
def test_thirty_parallel_crews_killed_and_rerun_repeat_no_completed_request(
    tmp_path: Path, kill_after: int
) -> None:
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(SCORING["SCRIPT"], request_log_path=log) as server:
        crashed = _run(server.base_url, tmp_path, "--crash-after", str(kill_after))
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
        completed_before = _completed_model_calls(tmp_path)
        assert completed_before >= kill_after
        requests_before = len(read_request_log(log))

        resumed = _run(server.base_url, tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"scored={LEADS}" in resumed.stdout
    # The re-run asked only for the leads whose request had not completed before the kill.
    assert len(read_request_log(log)) - requests_before == LEADS - completed_before
    assert sorted(set(_leads(log))) == sorted(str(lead) for lead in range(LEADS))
    assert _completed_model_calls(tmp_path) == LEADS
