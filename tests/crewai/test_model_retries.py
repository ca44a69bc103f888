"""LLM calls retried by error class, over real HTTP to the scripted model server.

The LLM is built with `max_retries=0` (no openai SDK retries) and CrewAI's own rate-limit retry is
off inside recorded calls, so every retry seen here is the adapter's, inside the LLM call's
checkpoint call. The agent's `max_retry_limit=0` keeps CrewAI from running a failed task again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from crewai import LLM, Agent, Crew, Task

from kitaru_adapters.crewai import durable
from kitaru_core import CallView, Client, ModelRetryPolicy, flow, model_retries
from kitaru_core.testing import Rule, Script, ScriptedModelServer

from .conftest import ModelServer

FAST = ModelRetryPolicy(initial_delay_s=0.05)


@pytest.fixture(autouse=True)
def _store(sqlite_file_store: str) -> Iterator[str]:
    return sqlite_file_store


LLMS: list[LLM] = []


@contextlib.contextmanager
def serving(script: Script, tmp_path: Path) -> Iterator[ModelServer]:
    """The scripted server for one test; the LLMs' HTTP clients are closed afterwards (an unclosed
    connection collected later warns, an error here)."""
    log = tmp_path / "requests.jsonl"
    try:
        with ScriptedModelServer(script, request_log_path=log) as server:
            yield ModelServer(server, log)
    finally:
        for llm in LLMS:
            client = getattr(llm, "_client", None)
            if client is not None:
                client.close()
        LLMS.clear()


def crew_for(model_server: ModelServer) -> Crew:
    llm = LLM(model="openai/gpt-4o-mini", base_url=model_server.base_url, api_key="scripted", max_retries=0)
    LLMS.append(llm)
    greeter = Agent(
        role="Greeter", goal="Greet", backstory="You greet.", llm=llm, max_retry_limit=0, verbose=False
    )
    task = Task(name="greet", description="Say hello.", expected_output="A greeting.", agent=greeter)
    return Crew(name="greeting", agents=[greeter], tasks=[task], verbose=False)


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
        crew = durable(crew_for(model_server), model_retries=FAST)
        started = time.monotonic()
        output = crew.kickoff()
        waited_s = time.monotonic() - started
        assert statuses(model_server) == [429, 200]
    assert output.raw == "Hello."
    assert waited_s >= 1.0
    call = model_call()
    assert (call.status, call.attempts) == ("completed", 2)
    assert call.details is not None
    (retry,) = call.details["retries"]
    assert (retry["attempt"], retry["delay_s"]) == (1, 1.0)
    assert retry["error"].startswith("rate_limit (")
    assert call.duration_s >= 1.0
    (execution,) = Client().list_executions()
    assert execution.status == "completed"


def test_an_authentication_error_fails_at_once_with_one_attempt(tmp_path: Path) -> None:
    with serving(Script([Rule(error_status=401)]), tmp_path) as model_server:
        crew = durable(crew_for(model_server), model_retries=FAST)
        with pytest.raises(openai.AuthenticationError) as raised:
            crew.kickoff()
        assert statuses(model_server) == [401]
    assert any("not retried: an authentication error" in note for note in raised.value.__notes__)
    call = model_call()
    assert (call.status, call.attempts) == ("failed", 1)
    assert call.error is not None
    assert "AuthenticationError" in call.error
    (execution,) = Client().list_executions()
    assert execution.status == "failed"


def test_a_server_error_is_retried_then_completes(tmp_path: Path) -> None:
    script = Script([Rule(error_status=500, error_times=2, text="Recovered.")])
    with serving(script, tmp_path) as model_server:
        output = durable(crew_for(model_server), model_retries=FAST).kickoff()
        assert statuses(model_server) == [500, 500, 200]
    assert output.raw == "Recovered."
    call = model_call()
    assert (call.status, call.attempts) == ("completed", 3)
    assert call.details is not None
    assert [retry["error"].split()[0] for retry in call.details["retries"]] == ["server", "server"]


def test_a_flow_sets_the_policy_of_its_llm_calls(tmp_path: Path) -> None:
    script = Script([Rule(error_status=503, error_times=1, text="Recovered.")])
    with serving(script, tmp_path) as model_server:
        crew = durable(crew_for(model_server))

        @flow
        def desk() -> str:
            with model_retries(ModelRetryPolicy(max_attempts=1)):
                return str(crew.kickoff().raw)

        with pytest.raises(openai.InternalServerError):
            desk()
        assert statuses(model_server) == [503]  # no retry under the flow's policy
    call = model_call()
    assert (call.status, call.attempts) == ("failed", 1)
