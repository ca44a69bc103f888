"""What every adapter's model-retry test checks (`tests/<framework>/test_model_retries.py`).

Each adapter's test runs its framework against the scripted model server with one of these
scripts, over real HTTP, with the provider client's own retries off; the checks read the store.
Imports only `kitaru_core`, so every framework's environment can use it.
"""

from __future__ import annotations

from kitaru_core import CallView, Client, ExecutionSummary, ModelRetryPolicy
from kitaru_core.testing import Rule, Script, ScriptedModelServer

FAST = ModelRetryPolicy(initial_delay_s=0.05)
"""The default policy with short backoff delays (a `Retry-After` is still waited in full)."""

RATE_LIMITED_ONCE = Script(
    [Rule(error_status=429, error_headers={"Retry-After": "1"}, error_times=1, text="Hello.")]
)
UNAUTHORISED = Script([Rule(error_status=401)])
SERVER_ERRORS_TWICE = Script([Rule(error_status=500, error_times=2, text="Recovered.")])
UNAVAILABLE_ONCE = Script([Rule(error_status=503, error_times=1, text="Recovered.")])


def statuses(server: ScriptedModelServer) -> list[object]:
    """The HTTP status of each model request the server answered, in order."""
    return [record["status"] for record in server.request_records]


def only_execution() -> ExecutionSummary:
    (execution,) = Client().list_executions()
    return execution


def only_model_call() -> CallView:
    calls = [call for call in Client().get_execution(only_execution().id).calls if call.kind == "model"]
    assert len(calls) == 1, calls
    return calls[0]


def check_rate_limit_waited(server: ScriptedModelServer, waited_s: float) -> None:
    """`RATE_LIMITED_ONCE`: one call, 2 attempts, the second after the 1 s the server asked for."""
    assert statuses(server) == [429, 200]
    assert waited_s >= 1.0
    call = only_model_call()
    assert (call.status, call.attempts) == ("completed", 2)
    assert call.duration_s >= 1.0
    assert call.details is not None
    (retry,) = call.details["retries"]
    assert (retry["attempt"], retry["delay_s"]) == (1, 1.0)
    assert retry["error"].startswith("rate_limit (")  # the framework's own exception type follows
    assert only_execution().status == "completed"


def check_failed_at_once(server: ScriptedModelServer, error: BaseException) -> None:
    """`UNAUTHORISED`: one request, one attempt, a failed run, and a note on the error saying why."""
    assert statuses(server) == [401]
    assert any("was not retried: an authentication error" in note for note in getattr(error, "__notes__", []))
    call = only_model_call()
    assert (call.status, call.attempts) == ("failed", 1)
    assert call.error is not None
    assert "401" in call.error
    assert only_execution().status == "failed"


def check_server_errors_retried(server: ScriptedModelServer) -> None:
    """`SERVER_ERRORS_TWICE`: one call, 3 attempts, both retries noted as server errors."""
    assert statuses(server) == [500, 500, 200]
    call = only_model_call()
    assert (call.status, call.attempts) == ("completed", 3)
    assert call.details is not None
    assert [retry["error"].split()[0] for retry in call.details["retries"]] == ["server", "server"]


def check_not_retried(server: ScriptedModelServer) -> None:
    """`UNAVAILABLE_ONCE` under `ModelRetryPolicy(max_attempts=1)`: one request, a failed call."""
    assert statuses(server) == [503]
    call = only_model_call()
    assert (call.status, call.attempts) == ("failed", 1)
