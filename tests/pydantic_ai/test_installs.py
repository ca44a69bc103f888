"""Installing and removing durability: `durable()` from many threads, `undurable()`, agent names."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from kitaru_adapters.pydantic_ai import durable, is_durable, undurable
from kitaru_core import Client, execution
from kitaru_core.errors import ConfigurationError

from ..concurrent_durable import run_concurrent_durable


class Replies:
    """A FunctionModel that answers `text` and counts the requests it really got."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.requests = 0

    def respond(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.requests += 1
        return ModelResponse(parts=[TextPart(self.text)])


def test_durable_from_many_threads_at_once_wraps_once(tmp_path: Path) -> None:
    run_concurrent_durable("pydantic_ai", tmp_path)


def test_undurable_returns_the_agent_to_its_plain_state(sqlite_file_store: str) -> None:
    replies = Replies("hello")
    agent: Agent[None, str] = Agent(FunctionModel(replies.respond), name="greeter")
    plain_class = type(agent)
    durable(agent)
    assert asyncio.run(agent.run("hi")).output == "hello"
    assert [call.kind for call in Client().get_execution(Client().list_executions()[0].id).calls] == ["model"]

    assert undurable(agent) is agent
    assert type(agent) is plain_class
    assert not is_durable(agent)
    assert asyncio.run(agent.run("hi")).output == "hello"  # the same answer, recorded nowhere
    assert replies.requests == 2
    assert len(Client().list_executions()) == 1
    assert undurable(agent) is agent  # not durable: unchanged

    durable(agent)
    assert asyncio.run(agent.run("hi")).output == "hello"
    assert replies.requests == 3
    assert len(Client().list_executions()) == 2  # recorded again, as a new execution


def test_an_unnamed_agent_refuses_a_run_outside_an_execution(sqlite_file_store: str) -> None:
    replies = Replies("hello")
    agent = durable(Agent(FunctionModel(replies.respond)))
    with pytest.raises(ConfigurationError, match=r'durable\(agent, name="support"\)'):
        asyncio.run(agent.run("hi"))
    assert replies.requests == 0
    assert Client().list_executions() == []
    named = durable(Agent(FunctionModel(replies.respond)), name="support")
    assert asyncio.run(named.run("hi")).output == "hello"
    assert [summary.flow_name for summary in Client().list_executions()] == ["pydantic_ai:support"]


def test_two_unnamed_agents_in_one_execution_do_not_share_calls(sqlite_file_store: str) -> None:
    first_replies, second_replies = Replies("first"), Replies("second")
    first = durable(Agent(FunctionModel(first_replies.respond)))
    second = durable(Agent(FunctionModel(second_replies.respond)))
    for _ in range(2):  # the second time every call is served, each from its own agent's record
        with execution("two-agents"):
            assert asyncio.run(first.run("hi")).output == "first"
            assert asyncio.run(second.run("hi")).output == "second"
    assert (first_replies.requests, second_replies.requests) == (1, 1)
    keys = [call.key for call in Client().get_execution("two-agents").calls]
    assert len(keys) == len(set(keys)) == 2
