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

from .conftest import ModelServer

HELLO = {"messages": [("user", "Say hello")]}


@pytest.fixture(autouse=True)
def _store(sqlite_file_store: str) -> Iterator[str]:
    return sqlite_file_store


@contextlib.contextmanager
def serving(script: Script, tmp_path: Path) -> Iterator[ModelServer]:
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(script, request_log_path=log) as server:
        yield ModelServer(server, log)


def graph_for(model_server: ModelServer, *, streamed: bool = False) -> Any:
    """A one-node graph whose node calls the chat model (`invoke`, or `stream` and adds the chunks)."""
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
    return builder.compile(name="chat")


def reply_of(result: dict[str, Any]) -> object:
    return result["messages"][-1].content


def test_a_rate_limit_waits_for_retry_after_then_completes(tmp_path: Path) -> None:
    with serving(RATE_LIMITED_ONCE, tmp_path) as model_server:
        graph = durable(graph_for(model_server), model_retries=FAST)
        started = time.monotonic()
        assert reply_of(graph.invoke(HELLO)) == "Hello."
        check_rate_limit_waited(model_server.server, time.monotonic() - started)


def test_an_authentication_error_fails_at_once_with_one_attempt(tmp_path: Path) -> None:
    with serving(UNAUTHORISED, tmp_path) as model_server:
        graph = durable(graph_for(model_server), model_retries=FAST)
        with pytest.raises(openai.AuthenticationError) as raised:
            graph.invoke(HELLO)
        check_failed_at_once(model_server.server, raised.value)


def test_a_server_error_before_the_first_chunk_of_a_stream_is_retried(tmp_path: Path) -> None:
    with serving(SERVER_ERRORS_TWICE, tmp_path) as model_server:
        graph = durable(graph_for(model_server, streamed=True), model_retries=FAST)
        assert reply_of(graph.invoke(HELLO)) == "Recovered."
        check_server_errors_retried(model_server.server)


def test_a_flow_sets_the_policy_of_its_model_calls(tmp_path: Path) -> None:
    with serving(UNAVAILABLE_ONCE, tmp_path) as model_server:
        graph = durable(graph_for(model_server))

        @flow
        def desk() -> object:
            with model_retries(ModelRetryPolicy(max_attempts=1)):
                return reply_of(graph.invoke(HELLO))

        with pytest.raises(openai.InternalServerError):
            desk()
        check_not_retried(model_server.server)
