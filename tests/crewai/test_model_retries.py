"""LLM calls retried by error class, over real HTTP to the scripted model server.

The LLM is built with `max_retries=0` (no openai SDK retries) and CrewAI's own rate-limit retry is
off inside recorded calls, so every retry seen here is the adapter's, inside the LLM call's
checkpoint call. The agent's `max_retry_limit=0` keeps CrewAI from running a failed task again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import openai
import pytest
from crewai import LLM, Agent, Crew, Task

from kitaru_adapters.crewai import durable
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


@pytest.fixture(autouse=True)
def _store(sqlite_file_store: str) -> Iterator[str]:
    return sqlite_file_store


@contextlib.contextmanager
def crew_on(script: Script) -> Iterator[tuple[ScriptedModelServer, Crew]]:
    """A one-agent crew on the scripted server; its LLM's HTTP client is closed afterwards (an
    unclosed connection collected later warns, an error here)."""
    with ScriptedModelServer(script) as server:
        llm = LLM(model="openai/gpt-4o-mini", base_url=server.base_url, api_key="scripted", max_retries=0)
        greeter = Agent(
            role="Greeter", goal="Greet", backstory="You greet.", llm=llm, max_retry_limit=0, verbose=False
        )
        task = Task(name="greet", description="Say hello.", expected_output="A greeting.", agent=greeter)
        try:
            yield server, Crew(name="greeting", agents=[greeter], tasks=[task], verbose=False)
        finally:
            client = getattr(llm, "_client", None)
            if client is not None:
                client.close()


def test_a_rate_limit_waits_for_retry_after_then_completes() -> None:
    with crew_on(RATE_LIMITED_ONCE) as (server, crew):
        started = time.monotonic()
        assert durable(crew, model_retries=FAST).kickoff().raw == "Hello."
        check_rate_limit_waited(server, time.monotonic() - started)


def test_an_authentication_error_fails_at_once_with_one_attempt() -> None:
    with crew_on(UNAUTHORISED) as (server, crew):
        with pytest.raises(openai.AuthenticationError) as raised:
            durable(crew, model_retries=FAST).kickoff()
        check_failed_at_once(server, raised.value)


def test_a_server_error_is_retried_then_completes() -> None:
    with crew_on(SERVER_ERRORS_TWICE) as (server, crew):
        assert durable(crew, model_retries=FAST).kickoff().raw == "Recovered."
        check_server_errors_retried(server)


def test_a_flow_sets_the_policy_of_its_llm_calls() -> None:
    with crew_on(UNAVAILABLE_ONCE) as (server, crew):
        durable(crew)

        @flow
        def desk() -> str:
            with model_retries(ModelRetryPolicy(max_attempts=1)):
                return str(crew.kickoff().raw)

        with pytest.raises(openai.InternalServerError):
            desk()
        check_not_retried(server)
