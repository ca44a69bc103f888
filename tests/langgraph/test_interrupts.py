"""Interrupts and approvals: a resumed node does not repeat its calls; gated tools ask, by interrupt or wait."""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Annotated, Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import START, StateGraph
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from kitaru_adapters.langgraph import KitaruSaver, durable, parse_decision
from kitaru_core import Client
from kitaru_core.errors import ExecutionWaitingError, InvalidAnswerError
from kitaru_core.testing import Rule, Script, ScriptedToolCall

from .conftest import ModelServer


@pytest.fixture
def script() -> Script:
    return Script(
        [
            Rule(when_last_user_contains="Plan", text="plan: go by train"),
            Rule(when_last_user_contains="facts", text="facts: 3 hours"),
            Rule(when_last_tool_result_contains="denied", text="Not done: {last_tool_result}"),
            Rule(when_last_tool_result_contains="sunny", text="It is {last_tool_result}."),
            Rule(
                when_last_user_contains="two cities",
                tool_calls=[
                    ScriptedToolCall("get_weather", {"city": "Paris"}),
                    ScriptedToolCall("get_weather", {"city": "Lyon"}),
                ],
            ),
            Rule(
                when_tools_offered="get_weather",
                tool_calls=[ScriptedToolCall("get_weather", {"city": "Paris"})],
            ),
        ],
        model_names=["gpt-4o-mini"],
    )


@pytest.fixture
def saver(sqlite_file_store: str) -> Any:
    checkpointer = KitaruSaver()
    yield checkpointer
    checkpointer.close()


class Notes(TypedDict):
    notes: Annotated[list[str], operator.add]


def review_graph(server: ModelServer, checkpointer: Any) -> Any:
    """A node that calls the model, interrupts, calls the model again, interrupts again."""
    model = server.chat_model()

    def review(state: Notes) -> dict[str, list[str]]:
        plan = str(model.invoke("Plan the trip").content)
        first = interrupt({"plan": plan})
        facts = str(model.invoke("List the facts").content)
        second = interrupt({"facts": facts})
        return {"notes": [plan, first, facts, second]}

    builder = StateGraph(Notes).add_node("review", review).add_edge(START, "review")
    return builder.compile(checkpointer=checkpointer, name="review")


def _walk_through_review(graph: Any, thread: str) -> dict[str, Any]:
    config = {"configurable": {"thread_id": thread}}
    stopped = graph.invoke({"notes": []}, config)
    assert stopped["__interrupt__"][0].value == {"plan": "plan: go by train"}
    stopped = graph.invoke(Command(resume="looks good"), config)
    assert stopped["__interrupt__"][0].value == {"facts": "facts: 3 hours"}
    return graph.invoke(Command(resume="fine"), config)


def test_interrupt_resume_repeats_no_model_call_beside_the_same_graph_without_the_adapter(
    model_server: ModelServer, saver: KitaruSaver
) -> None:
    plain = _walk_through_review(review_graph(model_server, saver), "plain")
    without_adapter = len(model_server.requests())
    # LangGraph re-runs the node from its first line on each resume: 1 + 2 + 2 model requests
    assert without_adapter == 5

    done = _walk_through_review(durable(review_graph(model_server, saver)), "durable")
    with_adapter = len(model_server.requests()) - without_adapter
    assert with_adapter == 2  # each model call once
    assert done["notes"] == plain["notes"] == ["plan: go by train", "looks good", "facts: 3 hours", "fine"]
    detail = Client().get_execution("durable")
    assert [call.kind for call in detail.calls] == ["model", "model"]
    assert detail.run_count == 3


def _weather_agent(server: ModelServer, checkpointer: Any, runs: list[str]) -> Any:
    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        runs.append(city)
        return f"sunny in {city}"

    agent = create_agent(server.chat_model(), [get_weather], checkpointer=checkpointer, name="weather")
    return durable(agent, approve=["get_weather"])


def test_approved_by_interrupt_the_tool_runs_once_and_no_model_call_repeats(
    model_server: ModelServer, saver: KitaruSaver
) -> None:
    runs: list[str] = []
    agent = _weather_agent(model_server, saver, runs)
    config = {"configurable": {"thread_id": "approve"}}
    stopped = agent.invoke({"messages": [HumanMessage("Weather in Paris?")]}, config)
    (pending,) = stopped["__interrupt__"]
    assert pending.value["kind"] == "tool_approval"
    assert pending.value["tool"] == "get_weather"
    assert pending.value["arguments"] == {"city": "Paris"}
    assert runs == []
    done = agent.invoke(Command(resume={"approved": True}), config)
    assert done["messages"][-1].content == "It is sunny in Paris."
    assert runs == ["Paris"]
    assert len(model_server.requests()) == 2


def test_rejected_by_interrupt_the_model_gets_a_denied_tool_message(
    model_server: ModelServer, saver: KitaruSaver
) -> None:
    runs: list[str] = []
    agent = _weather_agent(model_server, saver, runs)
    config = {"configurable": {"thread_id": "reject"}}
    agent.invoke({"messages": [HumanMessage("Weather in Paris?")]}, config)
    done = agent.invoke(Command(resume={"approved": False, "message": "not today"}), config)
    denied = done["messages"][-2]
    assert isinstance(denied, ToolMessage)
    assert denied.status == "error"
    assert "denied by a reviewer: not today" in str(denied.content)
    assert done["messages"][-1].content.startswith("Not done: The tool call get_weather")
    assert runs == []


def test_an_invalid_interrupt_answer_asks_again_naming_the_problem(
    model_server: ModelServer, saver: KitaruSaver
) -> None:
    runs: list[str] = []
    agent = _weather_agent(model_server, saver, runs)
    config = {"configurable": {"thread_id": "invalid"}}
    agent.invoke({"messages": [HumanMessage("Weather in Paris?")]}, config)
    again = agent.invoke(Command(resume={"approve": "sure"}), config)
    (pending,) = again["__interrupt__"]
    assert "Invalid approval answer" in pending.value["problem"]
    assert runs == []
    done = agent.invoke(Command(resume="approve"), config)
    assert done["messages"][-1].content == "It is sunny in Paris."
    assert runs == ["Paris"]
    assert len(model_server.requests()) == 2


def test_parallel_gated_calls_are_answered_by_interrupt_id(
    model_server: ModelServer, saver: KitaruSaver
) -> None:
    runs: list[str] = []
    agent = _weather_agent(model_server, saver, runs)
    config = {"configurable": {"thread_id": "parallel"}}
    stopped = agent.invoke({"messages": [HumanMessage("Weather in two cities?")]}, config)
    by_city = {item.value["arguments"]["city"]: item.id for item in stopped["__interrupt__"]}
    assert set(by_city) == {"Paris", "Lyon"}
    done = agent.invoke(
        Command(resume={by_city["Paris"]: {"approved": True}, by_city["Lyon"]: {"approved": False}}), config
    )
    assert runs == ["Paris"]
    results = {message.content for message in done["messages"] if isinstance(message, ToolMessage)}
    assert "sunny in Paris" in results
    assert any("denied" in str(content) for content in results)
    assert len(model_server.requests()) == 2


def test_without_a_checkpointer_the_gate_is_a_durable_wait(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    runs: list[str] = []
    agent = _weather_agent(model_server, None, runs)
    config = {"configurable": {"thread_id": "waits"}}
    prompt = {"messages": [HumanMessage("Weather in two cities?")]}
    with pytest.raises(ExecutionWaitingError) as waiting:
        agent.invoke(prompt, config)
    names = waiting.value.wait_names
    assert len(names) == 2  # both parallel gated calls are pending before the run stops
    assert all(name.startswith("approve:get_weather:call_") for name in names)
    assert Client().get_execution("waits").status == "waiting"
    with pytest.raises(InvalidAnswerError):
        Client().answer("waits", names[0], {"approve": "yes"})
    waits = {wait.name: wait for wait in Client().get_execution("waits").waits}
    by_city = {waits[name].metadata["arguments"]["city"]: name for name in names}
    Client().answer("waits", by_city["Paris"], {"approved": True})
    Client().answer("waits", by_city["Lyon"], {"approved": False, "message": "too far"})
    done = agent.invoke(prompt, config)
    assert runs == ["Paris"]
    assert any("too far" in str(message.content) for message in done["messages"])
    assert len(model_server.requests()) == 2
    assert Client().get_execution("waits").status == "completed"


@pytest.mark.parametrize(
    ("answer", "approved"),
    [(True, True), ("reject", False), ({"approved": False, "message": "no"}, False)],
)
def test_parse_decision_accepts_the_usual_answers(answer: Any, approved: bool) -> None:
    assert parse_decision(answer).approved is approved


def test_parse_decision_refuses_anything_else() -> None:
    with pytest.raises(ValueError, match="Invalid approval answer"):
        parse_decision({"ok": 1})


def test_langchain_human_in_the_loop_middleware_keeps_working(
    model_server: ModelServer, saver: KitaruSaver
) -> None:
    from langchain.agents.middleware import HumanInTheLoopMiddleware

    runs: list[str] = []

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        runs.append(city)
        return f"sunny in {city}"

    agent = durable(
        create_agent(
            model_server.chat_model(),
            [get_weather],
            checkpointer=saver,
            middleware=[HumanInTheLoopMiddleware(interrupt_on={"get_weather": True})],
        )
    )
    config = {"configurable": {"thread_id": "hitl"}}
    stopped = agent.invoke({"messages": [HumanMessage("Weather in Paris?")]}, config)
    assert stopped["__interrupt__"]
    assert runs == []
    done = agent.invoke(Command(resume={"decisions": [{"type": "approve"}]}), config)
    assert done["messages"][-1].content == "It is sunny in Paris."
    assert runs == ["Paris"]
    assert len(model_server.requests()) == 2
    kinds = [call.kind for call in Client().get_execution("hitl").calls]
    assert kinds == ["model", "tool", "model"]


def test_async_tools_in_parallel_ask_together_as_durable_waits(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    import asyncio

    runs: list[str] = []

    @tool
    async def get_weather(city: str) -> str:
        """The weather in a city."""
        runs.append(city)
        return f"sunny in {city}"

    agent = durable(create_agent(model_server.chat_model(), [get_weather]), approve=["get_weather"])
    config = {"configurable": {"thread_id": "async-waits"}}
    prompt = {"messages": [HumanMessage("Weather in two cities?")]}
    with pytest.raises(ExecutionWaitingError) as waiting:
        asyncio.run(agent.ainvoke(prompt, config))
    assert len(waiting.value.wait_names) == 2
    for name in waiting.value.wait_names:
        Client().answer("async-waits", name, {"approved": True})
    done = asyncio.run(agent.ainvoke(prompt, config))
    assert sorted(runs) == ["Lyon", "Paris"]
    assert sum(isinstance(message, ToolMessage) for message in done["messages"]) == 2
    assert len(model_server.requests()) == 2


def test_a_reused_tool_call_id_does_not_inherit_another_calls_approval(
    sqlite_file_store: str, tmp_path: Path
) -> None:
    from kitaru_core.testing import ScriptedModelServer

    reused = Script(
        [
            Rule(when_last_tool_result_contains="sunny", text="It is {last_tool_result}."),
            Rule(
                when_last_user_contains="Lyon",
                tool_calls=[ScriptedToolCall("get_weather", {"city": "Lyon"}, id="call_0")],
            ),
            Rule(tool_calls=[ScriptedToolCall("get_weather", {"city": "Paris"}, id="call_0")]),
        ],
        model_names=["gpt-4o-mini"],
    )
    runs: list[str] = []
    with ScriptedModelServer(reused) as server:
        agent = _weather_agent(ModelServer(server, tmp_path / "unused.jsonl"), None, runs)
        config = {"configurable": {"thread_id": "reused"}}
        with pytest.raises(ExecutionWaitingError) as paris:
            agent.invoke({"messages": [HumanMessage("Weather in Paris?")]}, config)
        (paris_wait,) = paris.value.wait_names
        Client().answer("reused", paris_wait, {"approved": True})
        agent.invoke({"messages": [HumanMessage("Weather in Paris?")]}, config)
        assert runs == ["Paris"]
        with pytest.raises(ExecutionWaitingError) as lyon:  # same id `call_0`, other arguments: asks again
            agent.invoke({"messages": [HumanMessage("Weather in Lyon?")]}, config)
    (lyon_wait,) = lyon.value.wait_names
    assert lyon_wait != paris_wait
    assert lyon_wait.startswith("approve:get_weather:call_0-")
    assert runs == ["Paris"]
