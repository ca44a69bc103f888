"""Fixtures for the OpenAI Agents SDK adapter: the scripted model server and SDK settings."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("agents")

from agents import RunConfig, set_tracing_disabled
from agents.models.openai_provider import OpenAIProvider
from openai import AsyncOpenAI

from kitaru_core.testing import Script, ScriptedModelServer

HERE = Path(__file__).resolve().parent
REFUND_AGENTS = HERE / "refund_agents.py"

set_tracing_disabled(True)


@dataclass
class ModelServer:
    """A running scripted server and a run config whose provider talks to it."""

    server: ScriptedModelServer
    request_log: Path

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def client(self) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=self.base_url, api_key="scripted", max_retries=0)

    def provider(self) -> OpenAIProvider:
        return OpenAIProvider(openai_client=self.client(), use_responses=False)

    def run_config(self, **options: object) -> RunConfig:
        return RunConfig(model_provider=self.provider(), model="gpt-4o-mini", **options)  # type: ignore[arg-type]

    def requests(self) -> list[dict[str, object]]:
        from kitaru_core.testing import read_request_log

        return read_request_log(self.request_log)


@pytest.fixture
def model_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ModelServer]:
    """A scripted server running the script given by `@pytest.mark.parametrize('script', ...)` or `SCRIPT`."""
    script: Script = request.getfixturevalue("script")
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(script, request_log_path=log) as server:
        yield ModelServer(server, log)


@dataclass
class AgentProcess:
    """Runs `refund_agents.py` in a subprocess against one store and one model server."""

    base_url: str
    store_url: str
    counter_file: Path
    tmp_path: Path

    def run(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        environment = {
            **os.environ,
            "KITARU_STORE_URL": self.store_url,
            "KITARU_ARTIFACTS_URL": str(self.tmp_path / "artifacts"),
            "KITARU_INTERACTIVE": "false",
            "PYTHONDONTWRITEBYTECODE": "",
        }
        command = [
            sys.executable,
            str(REFUND_AGENTS),
            "--base-url",
            self.base_url,
            "--counter-file",
            str(self.counter_file),
            *arguments,
        ]
        return subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=120, check=False
        )

    def tool_runs(self) -> list[str]:
        if not self.counter_file.exists():
            return []
        return [line for line in self.counter_file.read_text().splitlines() if line]
