"""The LangGraph adapter on real LangGraph, with ChatOpenAI over real HTTP to the scripted model server."""

from __future__ import annotations

import asyncio
import operator
from pathlib import Path
from typing import Annotated, Any

import pytest
from langchain.agents import create_agent
from langchain.tools import ToolRuntime
from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage, message_to_dict
from langchain_core.tools import InjectedToolCallId, tool
from langgraph.func import entrypoint, task
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

import kitaru_adapters.langgraph as adapter
from kitaru_adapters.langgraph import KitaruSaver, durable, is_durable
from kitaru_core import Client, flow
from kitaru_core.errors import AdapterError, ConfigurationError
from kitaru_core.testing import Rule, Script, ScriptedToolCall

from .conftest import ModelServer

QUESTIONS = ("Plan the trip", "List the facts", "List the risks")


@pytest.fixture
def script() -> Script:
    return Script(
        [
            Rule(when_last_user_contains="Plan", text="plan: go by train"),
            Rule(when_last_user_contains="facts", text="facts: 3 hours"),
            Rule(when_last_user_contains="risks", text="risks: strikes"),
            Rule(when_last_user_contains="poem", text="roses are red, violets are blue"),
            Rule(when_last_tool_result_contains="sunny", text="It is {last_tool_result}."),
            Rule(
                when_tools_offered="get_weather",
                tool_calls=[ScriptedToolCall("get_weather", {"city": "Paris"})],
            ),
            Rule(text="echo: {last_user}"),
        ],
        model_names=["gpt-4o-mini"],
    )


class Notes(TypedDict):
    notes: Annotated[list[str], operator.add]


def three_call_graph(server: ModelServer, checkpointer: Any = None) -> Any:
    model = server.chat_model()

    def research(state: Notes) -> dict[str, list[str]]:
        return {"notes": [str(model.invoke([HumanMessage(question)]).content) for question in QUESTIONS]}

    builder = StateGraph(Notes).add_node("research", research)
    builder.add_edge(START, "research").add_edge("research", END)
    return builder.compile(checkpointer=checkpointer, name="three_calls")


def tool_runs_recorder() -> tuple[Any, list[str]]:
    runs: list[str] = []

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        runs.append(city)
        return f"sunny in {city}"

    return get_weather, runs


def graph_calls(detail: Any) -> list[Any]:
    """An execution's model and tool calls (without the turn markers of a thread without a checkpointer)."""
    return [call for call in detail.calls if call.name != "langgraph:turn"]


def only_execution() -> Any:
    (summary,) = Client().list_executions()
    return Client().get_execution(summary.id)


def test_public_names_are_exactly_all() -> None:
    import types

    public = {
        name
        for name in dir(adapter)
        if not name.startswith("_") and not isinstance(getattr(adapter, name), types.ModuleType)
    }
    assert public == set(adapter.__all__)


def test_a_node_with_three_model_calls_is_served_when_run_again(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    graph = durable(three_call_graph(model_server))
    assert is_durable(graph)
    assert type(graph).__name__ == "CompiledStateGraph"
    config = {"configurable": {"thread_id": "trip-1"}}
    first = graph.invoke({"notes": []}, config)
    assert first["notes"] == ["plan: go by train", "facts: 3 hours", "risks: strikes"]
    assert len(model_server.requests()) == 3
    again = graph.invoke({"notes": []}, config)
    assert again == first
    assert len(model_server.requests()) == 3  # every call served from the store
    detail = Client().get_execution("trip-1")
    assert detail.flow_name == "langgraph:three_calls"
    keys = [call.key for call in graph_calls(detail)]
    assert all(key.startswith("model:research@1/pull.research/") for key in keys)
    assert [key.rsplit(".", 1)[1] for key in keys] == ["0", "0", "0"]  # three requests, each once
    assert len(set(keys)) == 3
    for call in graph_calls(detail):
        assert call.model_name == "gpt-4o-mini"
        assert call.input_tokens
        assert call.output_tokens
        assert call.cost_usd is not None
        assert call.cost_usd > 0
    assert detail.totals.model_calls == 3


def test_the_same_request_twice_in_a_node_gets_an_occurrence_index(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    model = model_server.chat_model()

    def ask_twice(state: Notes) -> dict[str, list[str]]:
        return {"notes": [str(model.invoke("List the facts").content) for _ in range(2)]}

    graph = durable(StateGraph(Notes).add_node("ask", ask_twice).add_edge(START, "ask").compile())
    graph.invoke({"notes": []})
    keys = [call.key for call in graph_calls(only_execution())]
    assert [key.rsplit(".", 1)[1] for key in keys] == ["0", "1"]
    assert keys[0].rsplit(".", 1)[0] == keys[1].rsplit(".", 1)[0]
    assert len(model_server.requests()) == 2


@pytest.mark.parametrize("entry", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("with_checkpointer", [False, True], ids=["no-checkpointer", "kitaru-saver"])
def test_entry_points_record_every_call(
    model_server: ModelServer, sqlite_file_store: str, entry: str, with_checkpointer: bool
) -> None:
    saver = KitaruSaver() if with_checkpointer else None
    graph = durable(three_call_graph(model_server, saver))
    config = {"configurable": {"thread_id": f"entry-{entry}"}}
    try:
        if entry == "invoke":
            state = graph.invoke({"notes": []}, config)
        elif entry == "ainvoke":
            state = asyncio.run(graph.ainvoke({"notes": []}, config))
        elif entry == "stream":
            state = list(graph.stream({"notes": []}, config, stream_mode="values"))[-1]
        else:

            async def consume() -> list[Any]:
                return [item async for item in graph.astream({"notes": []}, config, stream_mode="values")]

            state = asyncio.run(consume())[-1]
    finally:
        if saver is not None:
            saver.close()
    assert state["notes"] == ["plan: go by train", "facts: 3 hours", "risks: strikes"]
    detail = Client().get_execution(f"entry-{entry}")
    assert detail.status == "completed"
    assert [call.kind for call in graph_calls(detail)] == ["model", "model", "model"]


def test_a_run_without_thread_id_is_an_execution_of_its_input(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    graph = durable(three_call_graph(model_server), name="notes")
    graph.invoke({"notes": []})
    (summary,) = Client().list_executions()
    assert summary.flow_name == "langgraph:notes"
    assert summary.status == "completed"


def test_create_agent_model_and_tool_calls_are_checkpoint_calls(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    get_weather, runs = tool_runs_recorder()
    agent = durable(create_agent(model_server.chat_model(), [get_weather]), name="weather")
    config = {"configurable": {"thread_id": "weather-1"}}
    result = agent.invoke({"messages": [HumanMessage("How is the weather in Paris?")]}, config)
    assert result["messages"][-1].content == "It is sunny in Paris."
    assert runs == ["Paris"]
    detail = Client().get_execution("weather-1")
    assert [call.kind for call in graph_calls(detail)] == ["model", "tool", "model"]
    tool_call = graph_calls(detail)[1]
    tool_message = result["messages"][2]
    assert isinstance(tool_message, ToolMessage)
    assert tool_call.key == f"tool:get_weather:tools@2/{tool_message.tool_call_id}"
    # run again without a checkpointer: nothing is paid twice, the tool does not run again
    again = agent.invoke({"messages": [HumanMessage("How is the weather in Paris?")]}, config)
    assert [message.content for message in again["messages"]] == [m.content for m in result["messages"]]
    assert runs == ["Paris"]
    assert len(model_server.requests()) == 2


def test_create_react_agent_async_is_recorded(model_server: ModelServer, sqlite_file_store: str) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_react_agent is deprecated since langgraph 1.0
        from langgraph.prebuilt import create_react_agent

        get_weather, runs = tool_runs_recorder()
        agent = durable(create_react_agent(model_server.chat_model(), [get_weather]))
    config = {"configurable": {"thread_id": "react-1"}}
    result = asyncio.run(agent.ainvoke({"messages": [("user", "Weather in Paris?")]}, config))
    assert result["messages"][-1].content == "It is sunny in Paris."
    assert [call.kind for call in graph_calls(Client().get_execution("react-1"))] == [
        "model",
        "tool",
        "model",
    ]
    assert runs == ["Paris"]


def test_hand_built_tool_node_and_bind_tools(model_server: ModelServer, sqlite_file_store: str) -> None:
    get_weather, runs = tool_runs_recorder()
    model = model_server.chat_model().bind_tools([get_weather])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState).add_node("agent", agent).add_node("tools", ToolNode([get_weather]))
    builder.add_edge(START, "agent").add_conditional_edges("agent", tools_condition).add_edge(
        "tools", "agent"
    )
    graph = durable(builder.compile())
    result = graph.invoke({"messages": [HumanMessage("Weather in Paris?")]})
    assert result["messages"][-1].content == "It is sunny in Paris."
    calls = graph_calls(only_execution())
    assert [call.key.split("@")[0] for call in calls] == [
        "model:agent",
        "tool:get_weather:tools",
        "model:agent",
    ]
    tool_message = result["messages"][2]
    assert calls[1].key == f"tool:get_weather:tools@2/{tool_message.tool_call_id}"
    assert runs == ["Paris"]


def test_functional_entrypoint_with_tasks(model_server: ModelServer, sqlite_file_store: str) -> None:
    model = model_server.chat_model()

    @task
    def ask(question: str) -> str:
        return str(model.invoke(question).content)

    @entrypoint()
    def research(topic: str) -> list[str]:
        return [ask(question).result() for question in QUESTIONS]

    graph = durable(research)
    config = {"configurable": {"thread_id": "trains"}}
    assert graph.invoke("trains", config) == ["plan: go by train", "facts: 3 hours", "risks: strikes"]
    assert graph.invoke("trains", config) == ["plan: go by train", "facts: 3 hours", "risks: strikes"]
    assert len(model_server.requests()) == 3
    detail = only_execution()
    assert detail.flow_name == "langgraph:research"
    assert [call.kind for call in graph_calls(detail)] == ["model"] * 3


def test_direct_model_stream_is_one_checkpoint_call(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    model = model_server.chat_model(stream_usage=True)
    seen: list[list[str]] = []

    def write(state: Notes) -> dict[str, list[str]]:
        chunks = list(model.stream("Write a poem"))
        assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
        seen.append([message_to_dict(chunk) for chunk in chunks])
        return {"notes": ["".join(str(chunk.content) for chunk in chunks)]}

    graph = durable(StateGraph(Notes).add_node("write", write).add_edge(START, "write").compile())
    config = {"configurable": {"thread_id": "poem"}}
    assert graph.invoke({"notes": []}, config)["notes"] == ["roses are red, violets are blue"]
    assert len(seen[0]) > 2  # streamed live, piece by piece
    assert graph.invoke({"notes": []}, config)["notes"] == ["roses are red, violets are blue"]
    assert seen[1] == seen[0]  # served: the stored chunks, in order, as they streamed live
    assert len(model_server.requests()) == 1
    (call,) = graph_calls(Client().get_execution("poem"))
    assert call.kind == "model"
    assert call.output_tokens


def test_direct_model_astream_is_one_checkpoint_call(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    model = model_server.chat_model()

    async def write(state: Notes) -> dict[str, list[str]]:
        text = "".join([str(chunk.content) async for chunk in model.astream("Write a poem")])
        return {"notes": [text]}

    graph = durable(StateGraph(Notes).add_node("write", write).add_edge(START, "write").compile())
    config = {"configurable": {"thread_id": "apoem"}}
    for _ in range(2):
        state = asyncio.run(graph.ainvoke({"notes": []}, config))
        assert state["notes"] == ["roses are red, violets are blue"]
    assert len(model_server.requests()) == 1


def test_calls_outside_a_durable_graph_are_not_recorded(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    durable(three_call_graph(model_server))  # installs the class-level wraps
    model = model_server.chat_model()
    assert model.invoke("List the facts").content == "facts: 3 hours"
    plain = three_call_graph(model_server)  # the same graph, not made durable
    plain.invoke({"notes": []})
    assert Client().list_executions() == []
    assert len(model_server.requests()) == 4


def test_inside_a_flow_the_calls_belong_to_the_flow(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    graph = durable(three_call_graph(model_server))

    @flow
    def plan_trip(destination: str) -> list[str]:
        return graph.invoke({"notes": []}, {"configurable": {"thread_id": destination}})["notes"]

    assert plan_trip("Lyon") == ["plan: go by train", "facts: 3 hours", "risks: strikes"]
    detail = only_execution()
    assert detail.flow_name.endswith("plan_trip")
    assert all(call.key.startswith("langgraph:three_calls:Lyon/model:") for call in graph_calls(detail))


def test_graph_interrupt_from_a_tool_passes_through_and_is_not_recorded_as_a_failure(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    runs: list[str] = []

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city, once a person confirms the city."""
        confirmed = interrupt({"confirm_city": city})
        runs.append(confirmed)
        return f"sunny in {confirmed}"

    saver = KitaruSaver()
    try:
        agent = durable(create_agent(model_server.chat_model(), [get_weather], checkpointer=saver))
        config = {"configurable": {"thread_id": "confirm"}}
        stopped = agent.invoke({"messages": [HumanMessage("Weather in Paris?")]}, config)
        assert stopped["__interrupt__"][0].value == {"confirm_city": "Paris"}
        assert [call.status for call in graph_calls(Client().get_execution("confirm"))] == ["completed"]
        done = agent.invoke(Command(resume="Paris"), config)
    finally:
        saver.close()
    assert done["messages"][-1].content == "It is sunny in Paris."
    assert runs == ["Paris"]
    assert len(model_server.requests()) == 2
    statuses = [(call.kind, call.status) for call in graph_calls(Client().get_execution("confirm"))]
    assert statuses == [("model", "completed"), ("tool", "completed"), ("model", "completed")]


def test_durable_refuses_what_is_not_a_compiled_graph() -> None:
    builder = StateGraph(Notes)
    with pytest.raises(AdapterError, match="compiled graph"):
        durable(builder)  # type: ignore[type-var]


def test_approve_must_be_a_list_of_names(model_server: ModelServer) -> None:
    with pytest.raises(ConfigurationError, match=r"approve=\['refund'\]"):
        durable(three_call_graph(model_server), approve="refund")


def test_kitaru_saver_defaults_to_the_durable_store(tmp_path: Path, sqlite_file_store: str) -> None:
    import sqlalchemy

    saver = KitaruSaver()
    try:
        assert str(saver.engine.url) == sqlite_file_store
        assert {"langgraph_checkpoints", "langgraph_checkpoint_writes"} <= set(
            sqlalchemy.inspect(saver.engine).get_table_names()
        )
    finally:
        saver.close()


def test_subgraph_calls_are_keyed_by_namespace_without_task_ids(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    inner = three_call_graph(model_server)
    outer = StateGraph(Notes).add_node("plan", inner).add_edge(START, "plan").compile(name="outer")
    graph = durable(outer)
    config = {"configurable": {"thread_id": "nested"}}
    assert graph.invoke({"notes": []}, config)["notes"] == [
        "plan: go by train",
        "facts: 3 hours",
        "risks: strikes",
    ]
    keys = [call.key for call in graph_calls(Client().get_execution("nested"))]
    assert all(key.startswith("model:plan|research@1/") for key in keys), keys
    graph.invoke({"notes": []}, config)
    assert len(model_server.requests()) == 3


def test_a_tool_returning_a_command_is_stored_and_served(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    runs: list[str] = []

    @tool
    def get_weather(city: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
        """The weather in a city, written to the graph state."""
        runs.append(city)
        message = ToolMessage(f"sunny in {city}", tool_call_id=tool_call_id)
        return Command(update={"messages": [message], "city": city})

    class CityState(MessagesState):
        city: str

    model = model_server.chat_model().bind_tools([get_weather])

    def agent(state: CityState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(CityState).add_node("agent", agent).add_node("tools", ToolNode([get_weather]))
    builder.add_edge(START, "agent").add_conditional_edges("agent", tools_condition).add_edge(
        "tools", "agent"
    )
    graph = durable(builder.compile())
    config = {"configurable": {"thread_id": "command"}}
    first = graph.invoke({"messages": [HumanMessage("Weather in Paris?")], "city": ""}, config)
    second = graph.invoke({"messages": [HumanMessage("Weather in Paris?")], "city": ""}, config)
    assert first["city"] == second["city"] == "Paris"
    assert second["messages"][-1].content == "It is sunny in Paris."
    assert runs == ["Paris"]


def test_every_store_backend_with_the_kitaru_saver(model_server: ModelServer, store_url: str) -> None:
    saver = KitaruSaver(store_url)
    try:
        graph = durable(three_call_graph(model_server, saver))
        config = {"configurable": {"thread_id": "backends"}}
        assert graph.invoke({"notes": []}, config)["notes"][0] == "plan: go by train"
        assert graph.get_state(config).values["notes"][2] == "risks: strikes"
    finally:
        saver.close()
    detail = Client().get_execution("backends")
    assert [call.kind for call in graph_calls(detail)] == ["model", "model", "model"]
    assert all(call.cost_usd for call in graph_calls(detail))


def test_injected_state_and_runtime_do_not_change_a_tool_calls_fingerprint(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    runs: list[str] = []

    @tool
    def get_weather(city: str, runtime: ToolRuntime) -> str:
        """The weather in a city."""
        runs.append(f"{city} after {len(runtime.state['messages'])} messages")
        return f"sunny in {city}"

    agent = durable(create_agent(model_server.chat_model(), [get_weather]))
    config = {"configurable": {"thread_id": "runtime"}}
    for _ in range(2):
        result = agent.invoke({"messages": [HumanMessage("Weather in Paris?")]}, config)
        assert result["messages"][-1].content == "It is sunny in Paris."
    assert runs == ["Paris after 2 messages"]
    assert [call.status for call in graph_calls(Client().get_execution("runtime"))] == ["completed"] * 3


def test_a_provider_reusing_tool_call_ids_is_not_served_another_turns_result(
    sqlite_file_store: str, tmp_path: Path
) -> None:
    from kitaru_core.testing import ScriptedModelServer

    reused = Script(
        [
            Rule(when_last_tool_result_contains="sunny", text="It is {last_tool_result}."),
            Rule(
                when_tools_offered="get_weather",
                tool_calls=[ScriptedToolCall("get_weather", {"city": "Paris"}, id="call_0")],
            ),
        ],
        model_names=["gpt-4o-mini"],
    )
    get_weather, runs = tool_runs_recorder()
    with ScriptedModelServer(reused) as server:
        model = ModelServer(server, tmp_path / "unused.jsonl").chat_model()
        saver = KitaruSaver()
        try:
            agent = durable(create_agent(model, [get_weather], checkpointer=saver))
            config = {"configurable": {"thread_id": "reused-ids"}}
            agent.invoke({"messages": [HumanMessage("Weather in Paris?")]}, config)
            agent.invoke({"messages": [HumanMessage("And now?")]}, config)
        finally:
            saver.close()
    assert runs == ["Paris", "Paris"]  # the second turn's `call_0` ran: it is another call
    keys = [call.key for call in graph_calls(Client().get_execution("reused-ids")) if call.kind == "tool"]
    assert len(set(keys)) == 2
    assert all(key.endswith("/call_0") for key in keys)


def test_fingerprints_ignore_memory_addresses() -> None:
    from kitaru_adapters.langgraph._model import jsonable

    class Handler:
        pass

    assert jsonable({"handler": Handler(), "n": 1}) == {"handler": f"<{Handler.__qualname__}>", "n": 1}
    assert jsonable([HumanMessage("hi", id="m-1")]) == [{"type": "human", "content": "hi"}]


@pytest.mark.parametrize("entry", ["stream", "astream"])
def test_a_stream_stopped_early_leaves_a_resumable_execution(
    model_server: ModelServer, sqlite_file_store: str, entry: str
) -> None:
    model = model_server.chat_model()

    def one(state: Notes) -> dict[str, list[str]]:
        return {"notes": [str(model.invoke("Plan the trip").content)]}

    def two(state: Notes) -> dict[str, list[str]]:
        return {"notes": [str(model.invoke("List the facts").content)]}

    builder = StateGraph(Notes).add_node("one", one).add_node("two", two)
    graph = durable(builder.add_edge(START, "one").add_edge("one", "two").compile())
    config = {"configurable": {"thread_id": f"early-{entry}"}}
    if entry == "stream":
        for _ in graph.stream({"notes": []}, config):
            break  # the consumer stops after the first step
    else:

        async def first() -> None:
            stream = graph.astream({"notes": []}, config)
            async for _ in stream:
                break
            await stream.aclose()

        asyncio.run(first())
    assert Client().get_execution(f"early-{entry}").status == "failed"
    assert graph.invoke({"notes": []}, config)["notes"] == ["plan: go by train", "facts: 3 hours"]
    detail = Client().get_execution(f"early-{entry}")
    assert detail.status == "completed"
    assert len(model_server.requests()) == 2  # the first step's call was served


def test_the_same_call_again_after_a_failure_continues_the_threads_run(
    model_server: ModelServer, sqlite_file_store: str
) -> None:
    model = model_server.chat_model()
    entered: list[str] = []

    def one(state: Notes) -> dict[str, list[str]]:
        entered.append("one")
        return {"notes": [str(model.invoke("Plan the trip").content)]}

    def two(state: Notes) -> dict[str, list[str]]:
        entered.append("two")
        if entered.count("two") == 1:
            raise RuntimeError("the facts service is down")
        return {"notes": [str(model.invoke("List the facts").content)]}

    saver = KitaruSaver()
    try:
        builder = StateGraph(Notes).add_node("one", one).add_node("two", two)
        graph = durable(builder.add_edge(START, "one").add_edge("one", "two").compile(checkpointer=saver))
        config = {"configurable": {"thread_id": "retry"}}
        with pytest.raises(RuntimeError, match="facts service"):
            graph.invoke({"notes": []}, config)
        assert Client().get_execution("retry").status == "failed"
        # the same call again continues the failed run (LangGraph's invoke(None)), not a new one
        assert graph.invoke({"notes": []}, config)["notes"] == ["plan: go by train", "facts: 3 hours"]
        assert entered == ["one", "two", "two"]
        # a completed thread, the same input again: served (the re-run rule), nothing runs
        assert graph.invoke({"notes": []}, config)["notes"] == ["plan: go by train", "facts: 3 hours"]
        assert entered == ["one", "two", "two"]
        assert len(model_server.requests()) == 2
        # another input is a new turn: a new run on top of the state, as in LangGraph
        assert graph.invoke({"notes": ["again"]}, config)["notes"] == [
            "plan: go by train",
            "facts: 3 hours",
            "again",
            "plan: go by train",
            "facts: 3 hours",
        ]
        assert entered == ["one", "two", "two", "one", "two"]
    finally:
        saver.close()
