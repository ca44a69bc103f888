"""Fixtures for the CrewAI adapter: the scripted model server, the order desk, and subprocess runs."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("crewai")

from kitaru_core.testing import Script, ScriptedModelServer, read_request_log

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "examples"
ORDER_DESK = EXAMPLES / "crewai_order_desk.py"

sys.path.insert(0, str(EXAMPLES))
DESK: dict[str, Any] = runpy.run_path(str(ORDER_DESK))
"""The example module's globals: `SCRIPT`, `build_crew`, the tools, `TextOnlyLLM`."""


@dataclass
class ModelServer:
    """A running scripted server and its request log."""

    server: ScriptedModelServer
    request_log: Path

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def requests(self) -> list[dict[str, Any]]:
        return read_request_log(self.request_log)


@pytest.fixture
def script() -> Script:
    """The order desk's script; a test overrides it with its own `script` fixture or parametrization."""
    return DESK["SCRIPT"]


@pytest.fixture
def model_server(script: Script, tmp_path: Path) -> Iterator[ModelServer]:
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(script, request_log_path=log) as server:
        yield ModelServer(server, log)


@pytest.fixture
def tool_runs(tmp_path: Path) -> Iterator[Path]:
    """The order desk's tools append a line per real run to this file."""
    path = tmp_path / "tool-runs.txt"
    DESK["_count"].__globals__["COUNTER"] = path
    yield path
    DESK["_count"].__globals__["COUNTER"] = None


def lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line] if path.exists() else []


def store_environment(tmp_path: Path) -> dict[str, str]:
    """The environment of a subprocess that records into `tmp_path`'s SQLite store, non-interactive."""
    return {
        **os.environ,
        "KITARU_STORE_URL": f"sqlite:///{tmp_path / 'kitaru.db'}",
        "KITARU_ARTIFACTS_URL": str(tmp_path / "artifacts"),
        "KITARU_INTERACTIVE": "false",
    }


@dataclass
class DeskProcess:
    """Runs `examples/crewai_order_desk.py` in a subprocess against one store and one model server."""

    base_url: str
    store_url: str
    tmp_path: Path

    @property
    def counter_file(self) -> Path:
        return self.tmp_path / "tool-runs.txt"

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "KITARU_STORE_URL": self.store_url,
            "KITARU_ARTIFACTS_URL": str(self.tmp_path / "artifacts"),
            "KITARU_INTERACTIVE": "false",
            "PYTHONDONTWRITEBYTECODE": "",
        }

    def run(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable,
            str(ORDER_DESK),
            "--base-url",
            self.base_url,
            "--counter-file",
            str(self.counter_file),
            *arguments,
        ]
        return subprocess.run(
            command, env=self.environment(), capture_output=True, text=True, timeout=180, check=False
        )

    def cli(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "kitaru_core.cli", *arguments]
        return subprocess.run(
            command, env=self.environment(), capture_output=True, text=True, timeout=60, check=False
        )

    def tool_runs(self) -> list[str]:
        return lines(self.counter_file)


@pytest.fixture
def desk_process(model_server: ModelServer, tmp_path: Path) -> DeskProcess:
    return DeskProcess(model_server.base_url, f"sqlite:///{tmp_path / 'kitaru.db'}", tmp_path)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """CrewAI 1.15 reads its own deprecated `Agent` fields (`function_calling_llm`,
    `allow_code_execution`) in `Agent`'s validator, so every `Agent(...)` warns (the project turns
    warnings into errors). Upstream behaviour, not ours: ignore exactly those warnings here."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(
                pytest.mark.filterwarnings("ignore:function_calling_llm is deprecated:DeprecationWarning")
            )
            item.add_marker(pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning"))
