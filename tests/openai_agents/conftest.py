"""Fixtures for the OpenAI Agents SDK adapter: the scripted model server and SDK settings."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytest.importorskip("agents")

import httpx
from agents import RunConfig, set_tracing_disabled
from agents.models.openai_provider import OpenAIProvider
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from kitaru_core.testing import Script, ScriptedModelServer

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
REFUND_AGENTS = HERE.parents[1] / "examples" / "openai_agents_refund_desk.py"

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
        # No keep-alive: the SDK's `run_sync` loop outlives a test, and a pooled connection left
        # open in it would surface as a ResourceWarning (an error here) when it is collected.
        http_client = DefaultAsyncHttpxClient(limits=httpx.Limits(max_keepalive_connections=0))
        return AsyncOpenAI(base_url=self.base_url, api_key="scripted", max_retries=0, http_client=http_client)

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


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on the loop `Runner.run_sync` uses, instead of `asyncio.run`'s own loop.

    `asyncio.run` unsets the thread's loop when it ends, so the loop `run_sync` made before would be
    dropped unclosed.
    """
    policy = asyncio.get_event_loop_policy()
    try:
        loop = policy.get_event_loop()
    except RuntimeError:
        loop = policy.new_event_loop()
        policy.set_event_loop(loop)
    if loop.is_closed():
        loop = policy.new_event_loop()
        policy.set_event_loop(loop)
    return loop.run_until_complete(coroutine)


@pytest.fixture(autouse=True)
def _close_the_sdks_event_loop() -> Iterator[None]:
    """`Runner.run_sync` keeps a loop open for later runs (see `AgentRunner.run_sync`); close it after
    each test, so it is not left for the garbage collector (a ResourceWarning, an error here)."""
    yield
    policy = asyncio.get_event_loop_policy()
    try:
        loop = policy.get_event_loop()
    except RuntimeError:
        return
    if not loop.is_running() and not loop.is_closed():
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    policy.set_event_loop(None)


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The SDK's `run_sync` shuts down async generators of its loop after each run; httpx's auth
    flow generator of a request cut short by a failing tool is then finalized late, which Python
    reports as a ResourceWarning (the project turns warnings into errors). Upstream behaviour,
    not ours: ignore exactly that warning in these tests."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(
                pytest.mark.filterwarnings(
                    "ignore:asynchronous generator .*was scheduled after loop.shutdown_asyncgens:ResourceWarning"
                )
            )
