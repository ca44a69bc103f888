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
from kitaru_core import CallView, Client, ModelRetryPolicy, flow, model_retries
from kitaru_core.testing import Rule, Script, ScriptedModelServer

from .conftest import ModelServer

FAST = ModelRetryPolicy(initial_delay_s=0.05)


@pytest.fixture(autouse=True)
def _store(sqlite_file_store: str) -> Iterator[str]:
    return sqlite_file_store


@contextlib.contextmanager
def serving(script: Script, tmp_path: Path) -> Iterator[ModelServer]:
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(script, request_log_path=log) as server:
        yield ModelServer(server, log)


def model_call() -> CallView:
    (execution,) = Client().list_executions()
    calls = [call for call in Client().get_execution(execution.id).calls if call.kind == "model"]
    assert len(calls) == 1, calls
    return calls[0]


def statuses(model_server: ModelServer) -> list[object]:
    return [record["status"] for record in model_server.requests()]


def test_a_rate_limit_waits_for_retry_after_then_completes(tmp_path: Path) -> None:
    script = Script(
        [Rule(error_status=429, error_headers={"Retry-After": "1"}, error_times=1, text="Hello.")]
    )
    with serving(script, tmp_path) as model_server:
        agent = durable(Agent(name="limited", instructions="Greet."), model_retries=FAST)
        started = time.monotonic()
        result = Runner.run_sync(agent, "Say hello", run_config=model_server.run_config())
        waited_s = time.monotonic() - started
        assert statuses(model_server) == [429, 200]
    assert result.final_output == "Hello."
    assert waited_s >= 1.0
    call = model_call()
    assert (call.status, call.attempts) == ("completed", 2)
    assert call.details is not None
    (retry,) = call.details["retries"]
    assert (retry["attempt"], retry["error"], retry["delay_s"]) == (1, "rate_limit (RateLimitError)", 1.0)
    assert call.duration_s >= 1.0
    (execution,) = Client().list_executions()
    assert execution.status == "completed"


def test_an_authentication_error_fails_at_once_with_one_attempt(tmp_path: Path) -> None:
    with serving(Script([Rule(error_status=401)]), tmp_path) as model_server:
        agent = durable(Agent(name="unauthorised", instructions="Greet."), model_retries=FAST)
        with pytest.raises(openai.AuthenticationError) as raised:
            Runner.run_sync(agent, "Say hello", run_config=model_server.run_config())
        assert statuses(model_server) == [401]
    assert any("not retried: an authentication error" in note for note in raised.value.__notes__)
    call = model_call()
    assert (call.status, call.attempts) == ("failed", 1)
    assert call.error is not None
    assert "AuthenticationError" in call.error
    (execution,) = Client().list_executions()
    assert execution.status == "failed"


def test_a_server_error_is_retried_then_completes_in_a_streamed_run(tmp_path: Path) -> None:
    script = Script([Rule(error_status=500, error_times=2, text="Recovered.")])
    with serving(script, tmp_path) as model_server:
        runner = DurableRunner(model_retries=FAST)
        agent = Agent(name="flaky", instructions="Greet.")

        async def stream() -> str:
            result = runner.run_streamed(agent, "Say hello", run_config=model_server.run_config())
            async for _event in result.stream_events():
                pass
            return str(result.final_output)

        from .conftest import run_async

        assert run_async(stream()) == "Recovered."
        assert statuses(model_server) == [500, 500, 200]
    call = model_call()
    assert (call.status, call.attempts) == ("completed", 3)
    assert call.details is not None
    assert [retry["error"] for retry in call.details["retries"]] == ["server (InternalServerError)"] * 2


def test_a_flow_sets_the_policy_of_its_model_calls(tmp_path: Path) -> None:
    script = Script([Rule(error_status=503, error_times=1, text="Recovered.")])
    with serving(script, tmp_path) as model_server:
        agent = durable(Agent(name="in_a_flow", instructions="Greet."))

        @flow
        def desk() -> str:
            with model_retries(ModelRetryPolicy(max_attempts=1)):
                return str(
                    Runner.run_sync(agent, "Say hello", run_config=model_server.run_config()).final_output
                )

        with pytest.raises(openai.InternalServerError):
            desk()
        assert statuses(model_server) == [503]  # no retry under the flow's policy
    call = model_call()
    assert (call.status, call.attempts) == ("failed", 1)
