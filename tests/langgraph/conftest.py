"""Fixtures for the LangGraph adapter: the scripted model server, ChatOpenAI pointed at it, the example."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph")
pytest.importorskip("langchain_openai")

import httpx
from langchain_openai import ChatOpenAI

from kitaru_core.testing import Script, ScriptedModelServer, read_request_log

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parents[1] / "examples" / "langgraph_refund_desk.py"


@dataclass
class ModelServer:
    """A running scripted server, and chat models that talk to it."""

    server: ScriptedModelServer
    request_log: Path

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def chat_model(self, **options: Any) -> ChatOpenAI:
        # No keep-alive: a pooled connection left open at the end of a test would surface as a
        # ResourceWarning (an error here) when it is collected.
        limits = httpx.Limits(max_keepalive_connections=0)
        return ChatOpenAI(
            model="gpt-4o-mini",
            base_url=self.base_url,
            api_key="scripted",  # pyright: ignore[reportArgumentType]
            max_retries=0,
            http_client=httpx.Client(limits=limits),
            http_async_client=httpx.AsyncClient(limits=limits),
            **options,
        )

    def requests(self) -> list[dict[str, Any]]:
        return read_request_log(self.request_log)


@pytest.fixture
def model_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ModelServer]:
    """A scripted server running the test module's `script` fixture."""
    script: Script = request.getfixturevalue("script")
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(script, request_log_path=log) as server:
        yield ModelServer(server, log)


@dataclass
class DeskProcess:
    """Runs `examples/langgraph_refund_desk.py` in a subprocess against one store and one server."""

    base_url: str
    tmp_path: Path

    @property
    def store_url(self) -> str:
        return f"sqlite:///{self.tmp_path / 'kitaru.db'}"

    @property
    def counter_file(self) -> Path:
        return self.tmp_path / "tools.txt"

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "KITARU_STORE_URL": self.store_url,
            "KITARU_ARTIFACTS_URL": str(self.tmp_path / "artifacts"),
            "KITARU_INTERACTIVE": "false",
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def run(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable,
            str(EXAMPLE),
            "--base-url",
            self.base_url,
            "--counter-file",
            str(self.counter_file),
            "--graph-db",
            str(self.tmp_path / "graph.db"),
            *arguments,
        ]
        return subprocess.run(
            command, env=self.environment(), capture_output=True, text=True, timeout=120, check=False
        )

    def cli(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "kitaru_core.cli", *arguments]
        return subprocess.run(
            command, env=self.environment(), capture_output=True, text=True, timeout=60, check=False
        )

    def tool_runs(self) -> list[str]:
        if not self.counter_file.exists():
            return []
        return [line for line in self.counter_file.read_text().splitlines() if line]


def desk_script_of_example() -> Script:
    """The refund desk example's scripted model replies."""
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        import langgraph_refund_desk
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    return langgraph_refund_desk.SCRIPT


@pytest.fixture
def desk_script() -> Script:
    return desk_script_of_example()


@pytest.fixture
def desk(desk_script: Script, tmp_path: Path) -> Iterator[tuple[DeskProcess, ModelServer]]:
    """The refund desk example and its own scripted server (kept alive across killed runs)."""
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(desk_script, request_log_path=log) as server:
        yield DeskProcess(server.base_url, tmp_path), ModelServer(server, log)
