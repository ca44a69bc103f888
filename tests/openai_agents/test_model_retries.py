"""Model calls retried by error class, over real HTTP to the scripted model server.

The OpenAI client is built with `max_retries=0` (and the SDK's own runner retries are off by
default), so every retry seen here is the adapter's, inside the model call's checkpoint call.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from agents import Agent, Runner

from kitaru_adapters.openai_agents import DurableRunner, durable
from kitaru_core import ModelRetryPolicy, flow, model_retries
from kitaru_core.testing import Script, ScriptedModelServer
from tests._model_retries import (
    FAST,
    RATE_LIMITED_ONCE,
    SERVER_ERRORS_TWICE,
    UNAUTHORISED,
    UNAVAILABLE_ONCE,
    check_failed_at_once,
    check_not_retried,
    check_rate_limit_waited,
    check_server_errors_retried,
)

from .conftest import ModelServer, run_async


@pytest.fixture(autouse=True)
def _store(sqlite_file_store: str) -> Iterator[str]:
    return sqlite_file_store


@contextlib.contextmanager
def serving(script: Script, tmp_path: Path) -> Iterator[ModelServer]:
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(script, request_log_path=log) as server:
        yield ModelServer(server, log)


def test_a_rate_limit_waits_for_retry_after_then_completes(tmp_path: Path) -> None:
    with serving(RATE_LIMITED_ONCE, tmp_path) as model_server:
        agent = durable(Agent(name="limited", instructions="Greet."), model_retries=FAST)
        started = time.monotonic()
        result = Runner.run_sync(agent, "Say hello", run_config=model_server.run_config())
        check_rate_limit_waited(model_server.server, time.monotonic() - started)
    assert result.final_output == "Hello."


def test_an_authentication_error_fails_at_once_with_one_attempt(tmp_path: Path) -> None:
    with serving(UNAUTHORISED, tmp_path) as model_server:
        agent = durable(Agent(name="unauthorised", instructions="Greet."), model_retries=FAST)
        with pytest.raises(openai.AuthenticationError) as raised:
            Runner.run_sync(agent, "Say hello", run_config=model_server.run_config())
        check_failed_at_once(model_server.server, raised.value)


def test_a_server_error_is_retried_then_completes_in_a_streamed_run(tmp_path: Path) -> None:
    with serving(SERVER_ERRORS_TWICE, tmp_path) as model_server:
        runner = DurableRunner(model_retries=FAST)
        agent = Agent(name="flaky", instructions="Greet.")
        config = model_server.run_config()

        async def stream() -> str:
            result = runner.run_streamed(agent, "Say hello", run_config=config)
            async for _event in result.stream_events():
                pass
            return str(result.final_output)

        assert run_async(stream()) == "Recovered."
        check_server_errors_retried(model_server.server)


def test_a_flow_sets_the_policy_of_its_model_calls(tmp_path: Path) -> None:
    with serving(UNAVAILABLE_ONCE, tmp_path) as model_server:
        agent = durable(Agent(name="in_a_flow", instructions="Greet."))
        config = model_server.run_config()

        @flow
        def desk() -> str:
            with model_retries(ModelRetryPolicy(max_attempts=1)):
                return str(Runner.run_sync(agent, "Say hello", run_config=config).final_output)

        with pytest.raises(openai.InternalServerError):
            desk()
        check_not_retried(model_server.server)
