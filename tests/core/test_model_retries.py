"""Retries by error class: `RetryPolicy` jitter and server delays, `ModelRetryPolicy`, the classifier,
and the scripted model server's error rules (real HTTP, real httpx errors)."""

from __future__ import annotations

import email.utils
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kitaru_core import (
    Client,
    ModelRetryPolicy,
    RetryPolicy,
    checkpoint,
    classify_model_error,
    flow,
    model_retries,
    model_retry_policy,
)
from kitaru_core._model_retries import DEFAULT_MODEL_RETRIES, model_retry_after_s, parse_retry_after_s
from kitaru_core.errors import ConfigurationError
from kitaru_core.testing import Rule, Script, ScriptedModelServer

# -- errors shaped like the openai SDK's, without importing it (the core never does) ---------------


class APIStatusError(Exception):
    def __init__(self, status_code: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"Error code: {status_code}")
        self.status_code = status_code
        self.response = httpx.Response(status_code, headers=headers or {})


class RateLimitError(APIStatusError):
    pass


class APIConnectionError(Exception):
    pass


class APITimeoutError(APIConnectionError):
    pass


class AuthenticationError(APIStatusError):
    pass


class ModelHTTPError(Exception):
    """PydanticAI's shape: a status code, raised from the SDK's error."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"status_code: {status_code}")
        self.status_code = status_code


def http_status_error(status_code: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx.Response(status_code, headers=headers or {}, request=request)
    return httpx.HTTPStatusError(f"HTTP {status_code}", request=request, response=response)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RateLimitError(429), "rate_limit"),
        (APIStatusError(503), "server"),
        (APIStatusError(500), "server"),
        (APIStatusError(408), "timeout"),
        (AuthenticationError(401), "authentication"),
        (APIStatusError(403), "authentication"),
        (APIStatusError(400), "client"),
        (APIStatusError(404), "client"),
        (APITimeoutError("timed out"), "timeout"),
        (APIConnectionError("refused"), "connection"),
        (http_status_error(429), "rate_limit"),
        (http_status_error(502), "server"),
        (httpx.ConnectError("refused"), "connection"),
        (httpx.ReadTimeout("slow"), "timeout"),
        (TimeoutError(), "timeout"),
        (ConnectionResetError(), "connection"),
        (ValueError("bad tool call"), None),
        (KeyError("x"), None),
    ],
)
def test_classify_model_error(error: BaseException, expected: str | None) -> None:
    assert classify_model_error(error) == expected


def test_classify_follows_the_cause_of_a_wrapper() -> None:
    wrapper = RuntimeError("the framework wrapped it")
    wrapper.__cause__ = RateLimitError(429, {"Retry-After": "3"})
    assert classify_model_error(wrapper) == "rate_limit"
    assert model_retry_after_s(wrapper) == 3.0
    implicit = RuntimeError("raised while handling it")
    implicit.__context__ = APITimeoutError("timed out")
    assert classify_model_error(implicit) == "timeout"
    wrapped_status = ModelHTTPError(401)
    wrapped_status.__cause__ = RateLimitError(429)
    assert classify_model_error(wrapped_status) == "authentication"  # the outer status decides


def test_retry_after_headers() -> None:
    assert model_retry_after_s(RateLimitError(429, {"Retry-After": "2"})) == 2.0
    assert model_retry_after_s(RateLimitError(429, {"retry-after": "0.5"})) == 0.5
    assert model_retry_after_s(RateLimitError(429, {"retry-after-ms": "250", "Retry-After": "9"})) == 0.25
    assert model_retry_after_s(http_status_error(503, {"Retry-After": "4"})) == 4.0
    assert model_retry_after_s(RateLimitError(429)) is None
    assert model_retry_after_s(RateLimitError(429, {"Retry-After": "soon"})) is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    from_date = model_retry_after_s(RateLimitError(429, {"Retry-After": later}))
    assert from_date is not None
    assert 28.0 <= from_date <= 30.0


def test_parse_retry_after() -> None:
    assert parse_retry_after_s("7") == 7.0
    assert parse_retry_after_s("-1") is None
    assert parse_retry_after_s("nan") is None
    assert parse_retry_after_s("inf") is None
    assert parse_retry_after_s("Wed, 21 Oct 2026 07:28:00 GMT", now_epoch_s=1792567670.0) == 10.0
    assert parse_retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: at once
    assert parse_retry_after_s("not a date") is None


# -- jitter and delays ---------------------------------------------------------------------------


@given(
    initial_delay_s=st.floats(0.0, 30.0),
    backoff_factor=st.floats(1.0, 4.0),
    max_delay_s=st.floats(0.0, 120.0),
    jitter=st.floats(0.0, 1.0),
    failed_attempt=st.integers(1, 12),
)
def test_jittered_delay_stays_within_its_bounds(
    initial_delay_s: float, backoff_factor: float, max_delay_s: float, jitter: float, failed_attempt: int
) -> None:
    policy = RetryPolicy(
        max_attempts=20,
        initial_delay_s=initial_delay_s,
        backoff_factor=backoff_factor,
        max_delay_s=max_delay_s,
        jitter=jitter,
    )
    ceiling = min(max_delay_s, initial_delay_s * backoff_factor ** (failed_attempt - 1))
    delay_s = policy.delay_s(failed_attempt)
    assert ceiling * (1 - jitter) - 1e-9 <= delay_s <= ceiling + 1e-9


def test_jitter_spreads_delays_and_zero_jitter_does_not() -> None:
    spread = {RetryPolicy(max_attempts=3, initial_delay_s=1.0, jitter=1.0).delay_s(1) for _ in range(50)}
    assert len(spread) > 40
    assert {RetryPolicy(max_attempts=3, initial_delay_s=1.0).delay_s(2) for _ in range(5)} == {2.0}


@pytest.mark.parametrize(
    "arguments",
    [{"jitter": -0.1}, {"jitter": 1.5}, {"max_elapsed_s": -1.0}, {"max_attempts": 0}],
)
def test_retry_policy_refuses_bad_values(arguments: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**arguments)


def test_next_delay_honours_a_server_delay_and_the_budgets() -> None:
    class Throttled(Exception):
        retry_after_s = 2.5

    policy = RetryPolicy(max_attempts=3, initial_delay_s=0.1, max_delay_s=10.0, jitter=0.5)
    assert policy.next_delay_s(Throttled(), 1, elapsed_s=0.0) == 2.5  # exactly, no jitter
    assert policy.next_delay_s(Throttled(), 3, elapsed_s=0.0) is None  # attempts used up
    assert RetryPolicy(max_attempts=3, max_delay_s=2.0).next_delay_s(Throttled(), 1, 0.0) is None  # too long
    budget = RetryPolicy(max_attempts=9, initial_delay_s=1.0, max_elapsed_s=5.0)
    assert budget.next_delay_s(ValueError(), 1, elapsed_s=3.0) == 1.0
    assert budget.next_delay_s(ValueError(), 1, elapsed_s=4.5) is None  # 4.5 + 1 > 5
    hook = RetryPolicy(max_attempts=2, retry_after_s=lambda error: 0.25)
    assert hook.next_delay_s(ValueError(), 1, 0.0) == 0.25


def test_model_retry_policy_retries_by_class() -> None:
    policy = ModelRetryPolicy(initial_delay_s=0.0)
    assert policy.should_retry(RateLimitError(429), 1)
    assert policy.should_retry(APIStatusError(500), 4)
    assert not policy.should_retry(APIStatusError(500), 5)  # 5 attempts by default
    assert not policy.should_retry(AuthenticationError(401), 1)
    assert not policy.should_retry(APIStatusError(400), 1)
    assert not policy.should_retry(ValueError("a bug"), 1)
    assert policy.next_delay_s(RateLimitError(429, {"Retry-After": "1"}), 1, 0.0) == 1.0
    assert policy.next_delay_s(RateLimitError(429, {"Retry-After": "3600"}), 1, 0.0) is None
    only_limits = ModelRetryPolicy(retry_classes=frozenset({"rate_limit"}))
    assert not only_limits.should_retry(APIStatusError(503), 1)
    assert policy.describe(RateLimitError(429)) == "rate_limit (RateLimitError)"


def test_a_response_that_says_do_not_retry_is_not_retried() -> None:
    policy = ModelRetryPolicy()
    assert not policy.should_retry(APIStatusError(500, {"x-should-retry": "false"}), 1)
    assert policy.should_retry(APIStatusError(500, {"x-should-retry": "true"}), 1)
    wrapped = ModelHTTPError(503)
    wrapped.__cause__ = APIStatusError(503, {"X-Should-Retry": "false"})
    assert not policy.should_retry(wrapped, 1)


def test_model_server_says_a_missing_rule_is_not_worth_retrying() -> None:
    with ScriptedModelServer(Script([Rule(when_last_user_contains="other", text="x")])) as server:
        status, headers, body = post_chat(server.base_url)
    assert (status, body["error"]["code"]) == (500, "no_matching_rule")
    assert headers["x-should-retry"] == "false"


def test_model_retries_scope_and_precedence() -> None:
    explicit = ModelRetryPolicy(max_attempts=2)
    scoped = ModelRetryPolicy(max_attempts=7)
    assert model_retry_policy() is DEFAULT_MODEL_RETRIES
    with model_retries(scoped):
        assert model_retry_policy() is scoped
        assert model_retry_policy(explicit) is explicit
    assert model_retry_policy() is DEFAULT_MODEL_RETRIES


# -- inside a checkpoint call: attempts and waits recorded -----------------------------------------


def test_a_server_delay_is_waited_and_each_retry_recorded(sqlite_file_store: str) -> None:
    failures = [RateLimitError(429, {"Retry-After": "0.3"}), APIStatusError(503)]

    @checkpoint(kind="model", retry=ModelRetryPolicy(initial_delay_s=0.05))
    def ask_model(prompt: str) -> str:
        if failures:
            raise failures.pop(0)
        return f"answer to {prompt}"

    @flow
    def asking() -> str:
        return ask_model("hi")

    started = time.monotonic()
    assert asking() == "answer to hi"
    assert time.monotonic() - started >= 0.3
    (execution,) = Client().list_executions()
    (call,) = Client().get_execution(execution.id).calls
    assert (call.status, call.attempts) == ("completed", 3)
    assert call.details is not None
    retries = call.details["retries"]
    assert [(retry["attempt"], retry["error"], retry["delay_s"]) for retry in retries] == [
        (1, "rate_limit (RateLimitError)", 0.3),
        (2, "server (APIStatusError)", retries[1]["delay_s"]),
    ]
    assert 0.05 <= retries[1]["delay_s"] <= 0.1  # after attempt 2: 0.05 s * 2, half of it random
    assert retries[1]["failed_at_epoch_s"] - retries[0]["failed_at_epoch_s"] >= 0.3
    assert call.duration_s >= 0.3


def test_an_authentication_error_fails_at_once_with_one_attempt(sqlite_file_store: str) -> None:
    runs: list[int] = []

    @checkpoint(kind="model", retry=ModelRetryPolicy(initial_delay_s=0.0))
    def ask_model() -> str:
        runs.append(1)
        raise AuthenticationError(401)

    @flow
    def asking() -> str:
        return ask_model()

    with pytest.raises(AuthenticationError) as raised:
        asking()
    assert runs == [1]
    (execution,) = Client().list_executions()
    (call,) = Client().get_execution(execution.id).calls
    assert (call.status, call.attempts) == ("failed", 1)
    assert call.error is not None
    assert "AuthenticationError: Error code: 401" in call.error
    assert any("was not retried: an authentication error" in note for note in raised.value.__notes__)


def test_retries_used_up_add_a_note_naming_each_failure(sqlite_file_store: str) -> None:
    @checkpoint(kind="model", retry=ModelRetryPolicy(max_attempts=2, initial_delay_s=0.0))
    def ask_model() -> str:
        raise APIStatusError(500)

    @flow
    def asking() -> str:
        return ask_model()

    with pytest.raises(APIStatusError) as raised:
        asking()
    assert raised.value.__notes__ == [
        "kitaru: 'ask_model' failed after 2 attempts (server (APIStatusError), then this error)."
    ]
    (execution,) = Client().list_executions()
    (call,) = Client().get_execution(execution.id).calls
    assert (call.status, call.attempts) == ("failed", 2)


# -- the scripted model server answers scripted errors -------------------------------------------


def post_chat(base_url: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    body = json.dumps({"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(
        f"{base_url}/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def test_model_server_answers_an_error_the_first_times_then_the_reply() -> None:
    script = Script([Rule(error_status=429, error_headers={"Retry-After": "1"}, error_times=2, text="done")])
    with ScriptedModelServer(script) as server:
        answers = [post_chat(server.base_url) for _ in range(3)]
        records = server.request_records
    assert [status for status, _, _ in answers] == [429, 429, 200]
    assert answers[0][1]["Retry-After"] == "1"
    assert answers[0][2]["error"]["code"] == "rate_limit_exceeded"
    assert answers[2][2]["choices"][0]["message"]["content"] == "done"
    assert [(record["reply_kind"], record["status"]) for record in records] == [
        ("scripted_error", 429),
        ("scripted_error", 429),
        ("text", 200),
    ]


def test_model_server_error_rule_without_times_always_fails_and_round_trips() -> None:
    rule = Rule(error_status=401)
    script = Script([rule])
    assert Script.from_dict(script.to_dict()) == script
    assert Rule.from_dict({"error_status": 503, "error_times": 1, "text": "x"}).error_times == 1
    with ScriptedModelServer(script) as server:
        assert [post_chat(server.base_url)[0] for _ in range(3)] == [401, 401, 401]


@pytest.mark.parametrize(
    "arguments",
    [
        {"error_status": 200, "text": "x"},
        {"error_status": 429, "error_times": 1},  # needs a reply after the errors
        {"error_headers": {"Retry-After": "1"}, "text": "x"},
        {"error_status": 429, "error_times": -1, "text": "x"},
        {"error_status": 429, "error_headers": {"X-Evil": "a\r\nSet-Cookie: b"}},
    ],
)
def test_model_server_refuses_bad_error_rules(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"Rule\.|needs a reply"):
        Rule(**arguments)


# -- the docs' examples, as written --------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs"


def docs_block(page: str, marker: str) -> str:
    markdown = (DOCS / page).read_text(encoding="utf-8")
    [block] = [
        block for block in re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL) if marker in block
    ]
    return block


@pytest.mark.parametrize("marker", ["limits_only = ", "# model_retries_example.py"])
def test_the_docs_examples_run_as_written(marker: str, tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text(docs_block("concepts.md", marker), encoding="utf-8")
    environment = {
        **os.environ,
        "KITARU_INTERACTIVE": "false",
        "KITARU_CONFIG_FILE": str(tmp_path / "none.toml"),
        "KITARU_STORE_URL": f"sqlite:///{tmp_path / 'kitaru.db'}",
        "KITARU_ARTIFACTS_URL": str(tmp_path / "artifacts"),
    }
    result = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    if marker.startswith("# model_retries_example"):
        assert result.stdout.splitlines() == ["Hello! (Say hello)", "2 server (Overloaded)"]
