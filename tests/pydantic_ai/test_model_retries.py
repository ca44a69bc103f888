"""Model requests retried by error class, over real HTTP to the scripted model server.

The OpenAI client is built with `max_retries=0`, so every retry seen here is the adapter's, inside
the model request's checkpoint call.
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
from kitaru_core import CallView, Client, ModelRetryPolicy, flow, model_retries
from kitaru_core.testing import Rule, Script, ScriptedModelServer

FAST = ModelRetryPolicy(initial_delay_s=0.05)


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


def model_call() -> CallView:
    (execution,) = Client().list_executions()
    calls = [call for call in Client().get_execution(execution.id).calls if call.kind == "model"]
    assert len(calls) == 1, calls
    return calls[0]


def test_a_rate_limit_waits_for_retry_after_then_completes() -> None:
    script = Script(
        [Rule(error_status=429, error_headers={"Retry-After": "1"}, error_times=1, text="Hello.")]
    )
    with ScriptedModelServer(script) as server:
        started = time.monotonic()
        output = ask(server, "limited", FAST)
        waited_s = time.monotonic() - started
        statuses = [record["status"] for record in server.request_records]
    assert output == "Hello."
    assert statuses == [429, 200]
    assert waited_s >= 1.0
    call = model_call()
    assert (call.status, call.attempts) == ("completed", 2)
    assert call.details is not None
    (retry,) = call.details["retries"]
    assert (retry["attempt"], retry["delay_s"]) == (1, 1.0)
    assert retry["error"].startswith("rate_limit (Model")  # ModelHTTPError, or its ModelRateLimitError
    assert call.duration_s >= 1.0
    (execution,) = Client().list_executions()
    assert execution.status == "completed"


def test_an_authentication_error_fails_at_once_with_one_attempt() -> None:
    with ScriptedModelServer(Script([Rule(error_status=401)])) as server:
        with pytest.raises(ModelHTTPError) as raised:
            ask(server, "unauthorised", FAST)
        assert server.request_count == 1
    assert raised.value.status_code == 401
    assert any("not retried: an authentication error" in note for note in raised.value.__notes__)
    call = model_call()
    assert (call.status, call.attempts) == ("failed", 1)
    assert call.error is not None
    assert "401" in call.error
    (execution,) = Client().list_executions()
    assert execution.status == "failed"


def test_a_server_error_is_retried_then_completes() -> None:
    script = Script([Rule(error_status=500, error_times=2, text="Recovered.")])
    with ScriptedModelServer(script) as server:
        output = ask(server, "flaky", FAST)
        assert [record["status"] for record in server.request_records] == [500, 500, 200]
    assert output == "Recovered."
    call = model_call()
    assert (call.status, call.attempts) == ("completed", 3)
    assert call.details is not None
    assert [retry["error"].split()[0] for retry in call.details["retries"]] == ["server", "server"]


def test_a_flow_sets_the_policy_of_its_model_calls() -> None:
    script = Script([Rule(error_status=503, error_times=1, text="Recovered.")])
    with ScriptedModelServer(script) as server:

        @flow
        def desk() -> str:
            with model_retries(ModelRetryPolicy(max_attempts=1)):
                return ask(server, "in_a_flow")

        with pytest.raises(ModelHTTPError):
            desk()
        assert server.request_count == 1  # no retry under the flow's policy
    call = model_call()
    assert (call.status, call.attempts) == ("failed", 1)
