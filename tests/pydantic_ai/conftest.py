"""Fixtures for PydanticAI adapter tests: a scripted model server and subprocess helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("pydantic_ai")

from kitaru_core.testing import Rule, Script, ScriptedModelServer, ScriptedToolCall

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REFUND_AGENT = HERE / "refund_agent.py"

REFUND_SCRIPT = Script(
    rules=[
        Rule(
            when_last_user_contains="Refund order 1 and order 2",
            when_turn=0,
            tool_calls=(
                ScriptedToolCall("lookup_order", {"order_id": 1}),
                ScriptedToolCall("lookup_order", {"order_id": 2}),
            ),
        ),
        Rule(
            when_turn=1,
            tool_calls=(
                ScriptedToolCall("refund", {"order_id": 1, "amount": 10}),
                ScriptedToolCall("refund", {"order_id": 2, "amount": 20}),
            ),
        ),
        Rule(when_turn=2, text="Done. Last result: {last_tool_result}"),
    ],
    model_names=("gpt-4o-mini",),
)


@dataclass
class AgentProcess:
    """How to run the refund agent in a subprocess against one store and one model server."""

    base_url: str
    store_url: str
    counter_file: Path
    request_log: Path
    tmp_path: Path

    def env(self) -> dict[str, str]:
        environment = dict(os.environ)
        environment.update(
            {
                "KITARU_STORE_URL": self.store_url,
                "KITARU_ARTIFACTS_URL": str(self.tmp_path / "artifacts"),
                "KITARU_INTERACTIVE": "false",
                "PYTHONDONTWRITEBYTECODE": "",
            }
        )
        return environment

    def run(self, *arguments: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                str(REFUND_AGENT),
                "--base-url",
                self.base_url,
                "--counter-file",
                str(self.counter_file),
                *arguments,
            ],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def cli(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kitaru_core.cli", *arguments],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def tool_runs(self) -> list[str]:
        if not self.counter_file.exists():
            return []
        return self.counter_file.read_text().splitlines()

    def model_requests(self) -> int:
        from kitaru_core.testing import read_request_log

        return len(read_request_log(self.request_log))


@pytest.fixture
def refund_server(tmp_path: Path) -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(REFUND_SCRIPT, request_log_path=tmp_path / "requests.jsonl") as server:
        yield server


@pytest.fixture
def refund_agent(refund_server: ScriptedModelServer, tmp_path: Path) -> AgentProcess:
    return AgentProcess(
        base_url=refund_server.base_url,
        store_url=f"sqlite:///{tmp_path / 'kitaru.db'}",
        counter_file=tmp_path / "tool-runs.txt",
        request_log=tmp_path / "requests.jsonl",
        tmp_path=tmp_path,
    )
