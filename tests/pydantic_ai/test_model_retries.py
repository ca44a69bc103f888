"""Model requests retried by error class, over real HTTP to the scripted model server.

The OpenAI client is built with `max_retries=0`, so every retry seen here is the adapter's, inside
the model request's checkpoint call (through PydanticAI's `on_model_request_error`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import openai
import pytest
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from kitaru_adapters.pydantic_ai import durable
from kitaru_core import ModelRetryPolicy, flow, model_retries
from kitaru_core.testing import ScriptedModelServer
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


def ask(server: ScriptedModelServer, name: str, policy: ModelRetryPolicy | None = None) -> str:
    """One durable run of a fresh agent on a client without the SDK's own retries, closed afterwards."""

    async def run() -> str:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="scripted", max_retries=0)
        model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client))
        try:
            return (await durable(Agent(model, name=name), model_retries=policy).run("Say hello")).output
        finally:
            await client.close()

    return asyncio.run(run())


def test_a_rate_limit_waits_for_retry_after_then_completes() -> None:
    with ScriptedModelServer(RATE_LIMITED_ONCE) as server:
        started = time.monotonic()
        assert ask(server, "limited", FAST) == "Hello."
        check_rate_limit_waited(server, time.monotonic() - started)


def test_an_authentication_error_fails_at_once_with_one_attempt() -> None:
    with ScriptedModelServer(UNAUTHORISED) as server:
        with pytest.raises(ModelHTTPError) as raised:
            ask(server, "unauthorised", FAST)
        assert raised.value.status_code == 401
        check_failed_at_once(server, raised.value)


def test_a_server_error_is_retried_then_completes() -> None:
    with ScriptedModelServer(SERVER_ERRORS_TWICE) as server:
        assert ask(server, "flaky", FAST) == "Recovered."
        check_server_errors_retried(server)


def test_a_flow_sets_the_policy_of_its_model_requests() -> None:
    with ScriptedModelServer(UNAVAILABLE_ONCE) as server:

        @flow
        def desk() -> str:
            with model_retries(ModelRetryPolicy(max_attempts=1)):
                return ask(server, "in_a_flow")

        with pytest.raises(ModelHTTPError):
            desk()
        check_not_retried(server)
