"""The author's own example agents (`pydantic-ai-examples` wheel), unchanged, run durably."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kitaru_core import Client, configure
from kitaru_core.testing import Script, ScriptedModelServer, read_request_log

pytest.importorskip("pydantic_ai_examples")

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "examples" / "run_pydantic_ai_example.py"
SCRIPTS = ROOT / "examples" / "scripts"


def _run(module: str, base_url: str, tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "KITARU_STORE_URL": f"sqlite:///{tmp_path / 'kitaru.db'}",
        "KITARU_ARTIFACTS_URL": str(tmp_path / "artifacts"),
        "KITARU_INTERACTIVE": "false",
    }
    command = [
        sys.executable,
        str(RUNNER),
        module,
        "--base-url",
        base_url,
        "--execution-id",
        "example",
        *options,
    ]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120, check=False)


def test_bank_support_runs_durably_and_a_rerun_pays_nothing(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(Script.from_json(SCRIPTS / "bank_support.json"), request_log_path=log) as server:
        first = _run("pydantic_ai_examples.bank_support", server.base_url, tmp_path)
        assert first.returncode == 0, first.stderr
        assert "support_advice='Hello John, your current account balance is $123.45.'" in first.stdout
        assert "block_card=True risk=8" in first.stdout
        assert len(read_request_log(log)) == 3
        again = _run("pydantic_ai_examples.bank_support", server.base_url, tmp_path)
        assert again.stdout == first.stdout
        assert len(read_request_log(log)) == 3
    configure(store_url=f"sqlite:///{tmp_path / 'kitaru.db'}", reset=True)
    detail = Client().get_execution("example")
    assert [call.kind for call in detail.calls] == ["model", "tool", "model", "model"]
    assert {call.source for call in detail.calls} == {"store"}
    assert detail.totals.cost_usd > 0
    configure(reset=True)


@pytest.mark.parametrize("kill_after", [1, 3, 5])
def test_roulette_wheel_streamed_runs_resume_after_sigkill(tmp_path: Path, kill_after: int) -> None:
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(
        Script.from_json(SCRIPTS / "roulette_wheel.json"), request_log_path=log
    ) as server:
        killed = _run(
            "pydantic_ai_examples.roulette_wheel", server.base_url, tmp_path, "--crash-after", str(kill_after)
        )
        assert killed.returncode == -signal.SIGKILL
        requests_at_kill = len(read_request_log(log))
        resumed = _run("pydantic_ai_examples.roulette_wheel", server.base_url, tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.splitlines() == ["Bet on 18: True", "Bet on 5: False"]
        # an uninterrupted run makes 4 model requests; none is repeated after the kill
        assert len(read_request_log(log)) == 4
        assert requests_at_kill < 4
        assert all(record["streamed"] for record in read_request_log(log))


def test_the_readme_demo_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pydantic_ai_demo.py")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "KITARU_INTERACTIVE": "false"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "model requests over both processes: 4 (an uninterrupted run makes 4)" in result.stdout
    assert "Answer refused" in result.stdout
    assert "model requests over both processes: 3 (uninterrupted: 3)" in result.stdout
