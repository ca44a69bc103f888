"""`durable(agent, side_effects=["refund"])` on the OpenAI Agents SDK: a tool call killed inside its body.

A real agent in a subprocess against the scripted model server (requests counted on the wire);
its `refund` body is killed with SIGKILL halfway (after it counted its run, while it sleeps). With
`ask` the re-run stops at the interrupted call's wait; answered from the `kitaru-adapters` command
line with the tool's result, the next re-run completes without running the refund again and without
repeating the completed model request. `fail` fails the run until the wait is answered; the
default (`retry`) runs the refund again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kitaru_core import Client, configure
from kitaru_core.testing import ScriptedModelServer, read_request_log
from tests._kill_inside import kill_when_inside

HERE = Path(__file__).resolve().parent
AGENT = HERE / "side_effect_agent.py"
sys.path.insert(0, str(HERE))
from side_effect_agent import SCRIPT  # noqa: E402


@dataclass
class Desk:
    base_url: str
    tmp_path: Path

    @property
    def store_url(self) -> str:
        return f"sqlite:///{self.tmp_path / 'kitaru.db'}"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "KITARU_STORE_URL": self.store_url,
            "KITARU_ARTIFACTS_URL": str(self.tmp_path / "artifacts"),
            "KITARU_INTERACTIVE": "false",
            **extra,
        }

    def command(self, mode: str) -> list[str]:
        counter = str(self.tmp_path / "tool-runs.txt")
        return [
            sys.executable,
            str(AGENT),
            "--base-url",
            self.base_url,
            "--counter-file",
            counter,
            "--side-effect",
            f"refund={mode}",
        ]

    def kill_inside_refund(self, mode: str) -> None:
        kill_when_inside(self.command(mode), env=self.env(HANG_IN_REFUND="1"))

    def run(self, mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(mode), env=self.env(), capture_output=True, text=True, timeout=120, check=False
        )

    def cli(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        script = Path(sys.executable).with_name("kitaru-adapters")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "kitaru_core.cli"]
        return subprocess.run(
            [*command, *arguments], env=self.env(), capture_output=True, text=True, timeout=60, check=False
        )

    def refund_runs(self) -> int:
        counter = self.tmp_path / "tool-runs.txt"
        return counter.read_text().split().count("refund") if counter.exists() else 0

    def model_requests(self) -> int:
        return len(read_request_log(self.tmp_path / "requests.jsonl"))


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    with ScriptedModelServer(SCRIPT, request_log_path=tmp_path / "requests.jsonl") as server:
        made = Desk(server.base_url, tmp_path)
        configure(store_url=made.store_url, artifacts_url=str(tmp_path / "artifacts"), reset=True)
        try:
            yield made
        finally:
            configure(reset=True)


def test_ask_answered_with_the_tools_result(desk: Desk) -> None:
    desk.kill_inside_refund("ask")
    assert (desk.refund_runs(), desk.model_requests()) == (1, 1)

    stopped = desk.run("ask")
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    document = json.loads(stopped.stdout.splitlines()[0])
    [wait_name] = document["waits"]
    execution_id = document["execution_id"]
    assert wait_name.startswith("interrupted:")
    assert desk.model_requests() == 1  # the model's tool call was served from the store
    [pending] = Client().pending_waits(execution_id)
    assert pending.question.startswith("`refund(order_id=7, amount=25)` started at ")

    refused = desk.cli("executions", "answer", execution_id, wait_name, "--value", '{"result": "x"}')
    assert refused.returncode != 0
    assert [wait.name for wait in Client().pending_waits(execution_id)] == [wait_name]

    given = json.dumps({"action": "result", "result": "refunded 25 USD for order 7 (confirmed by the bank)"})
    answered = desk.cli("executions", "answer", execution_id, wait_name, "--value", given)
    assert answered.returncode == 0, answered.stderr

    done = desk.run("ask")
    assert done.returncode == 0, done.stderr
    assert "output=Done: refunded 25 USD for order 7 (confirmed by the bank)" in done.stdout
    assert desk.refund_runs() == 1  # the refund did not run again
    assert desk.model_requests() == 2  # the first model request was not repeated; the second ran once
    detail = Client().get_execution(execution_id)
    assert detail.status == "completed"
    assert [(call.kind, call.status) for call in detail.calls] == [
        ("model", "completed"),
        ("tool", "superseded"),
        ("tool", "completed"),
        ("model", "completed"),
    ]
    assert detail.calls[2].details["given_by"] == "person"


def test_fail_and_retry(desk: Desk) -> None:
    desk.kill_inside_refund("fail")
    failed = desk.run("fail")
    assert failed.returncode == 4, failed.stdout + failed.stderr
    assert "refund(order_id=7, amount=25)" in failed.stderr
    assert "kitaru-adapters executions answer" in failed.stderr
    assert desk.refund_runs() == 1
    (summary,) = Client().list_executions()
    assert summary.status == "failed"
    [pending] = Client().pending_waits(summary.id)
    answered = desk.cli("executions", "answer", summary.id, pending.name, "--value", '{"action": "retry"}')
    assert answered.returncode == 0, answered.stderr
    done = desk.run("fail")
    assert done.returncode == 0, done.stderr
    assert "output=Done: refunded 25 USD for order 7" in done.stdout
    assert desk.refund_runs() == 2  # run again, as the answer said
    assert desk.model_requests() == 2
