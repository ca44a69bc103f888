"""Chat model calls retried by error class, over real HTTP to the scripted model server.

`ChatOpenAI` is built with `max_retries=0` (no openai SDK retries) and the graph has no LangGraph
`RetryPolicy`, so every retry seen here is the adapter's, inside the model call's checkpoint call.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from langchain_core.messages import AIMessage, BaseMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from kitaru_adapters.langgraph import durable
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


def graph_for(model_server: ModelServer, *, streamed: bool = False, name: str = "chat") -> Any:
    model = model_server.chat_model()

    def chat(state: MessagesState) -> dict[str, list[BaseMessage]]:
        if streamed:
            reply: Any = None
            for chunk in model.stream(state["messages"]):
                reply = chunk if reply is None else reply + chunk
            return {"messages": [AIMessage(content=reply.content)]}
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("chat", chat)
    builder.add_edge(START, "chat")
    builder.add_edge("chat", END)
    return builder.compile(name=name)


def model_call() -> CallView:
    (execution,) = Client().list_executions()
    calls = [call for call in Client().get_execution(execution.id).calls if call.kind == "model"]
    assert len(calls) == 1, calls
    return calls[0]


def statuses(model_server: ModelServer) -> list[object]:
    return [record["status"] for record in model_server.requests()]


def reply_of(result: dict[str, Any]) -> object:
    return result["messages"][-1].content


def test_a_rate_limit_waits_for_retry_after_then_completes(tmp_path: Path) -> None:
    script = Script(
        [Rule(error_status=429, error_headers={"Retry-After": "1"}, error_times=1, text="Hello.")]
    )
    with serving(script, tmp_path) as model_server:
        graph = durable(graph_for(model_server), model_retries=FAST)
        started = time.monotonic()
        result = graph.invoke({"messages": [("user", "Say hello")]})
        waited_s = time.monotonic() - started
        assert statuses(model_server) == [429, 200]
    assert reply_of(result) == "Hello."
    assert waited_s >= 1.0
    call = model_call()
    assert (call.status, call.attempts) == ("completed", 2)
    assert call.details is not None
    (retry,) = call.details["retries"]
    assert (retry["attempt"], retry["delay_s"]) == (1, 1.0)
    assert retry["error"].startswith("rate_limit (")  # openai's RateLimitError, or langchain's subclass
    assert call.duration_s >= 1.0
    (execution,) = Client().list_executions()
    assert execution.status == "completed"


def test_an_authentication_error_fails_at_once_with_one_attempt(tmp_path: Path) -> None:
    with serving(Script([Rule(error_status=401)]), tmp_path) as model_server:
        graph = durable(graph_for(model_server), model_retries=FAST)
        with pytest.raises(openai.AuthenticationError) as raised:
            graph.invoke({"messages": [("user", "Say hello")]})
        assert statuses(model_server) == [401]
    assert any("not retried: an authentication error" in note for note in raised.value.__notes__)
    call = model_call()
    assert (call.status, call.attempts) == ("failed", 1)
    assert call.error is not None
    assert "AuthenticationError" in call.error
    (execution,) = Client().list_executions()
    assert execution.status == "failed"


def test_a_server_error_before_the_first_chunk_of_a_stream_is_retried(tmp_path: Path) -> None:
    script = Script([Rule(error_status=500, error_times=2, text="Recovered.")])
    with serving(script, tmp_path) as model_server:
        graph = durable(graph_for(model_server, streamed=True), model_retries=FAST)
        result = graph.invoke({"messages": [("user", "Say hello")]})
        assert statuses(model_server) == [500, 500, 200]
    assert reply_of(result) == "Recovered."
    call = model_call()
    assert (call.status, call.attempts) == ("completed", 3)
    assert call.details is not None
    assert [retry["error"].split()[0] for retry in call.details["retries"]] == ["server", "server"]


def test_a_flow_sets_the_policy_of_its_model_calls(tmp_path: Path) -> None:
    script = Script([Rule(error_status=503, error_times=1, text="Recovered.")])
    with serving(script, tmp_path) as model_server:
        graph = durable(graph_for(model_server))

        @flow
        def desk() -> object:
            with model_retries(ModelRetryPolicy(max_attempts=1)):
                return reply_of(graph.invoke({"messages": [("user", "Say hello")]}))

        with pytest.raises(openai.InternalServerError):
            desk()
        assert statuses(model_server) == [503]  # no retry under the flow's policy
    call = model_call()
    assert (call.status, call.attempts) == ("failed", 1)
