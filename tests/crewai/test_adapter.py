"""The CrewAI adapter in one process: keys, resume, entry points, LLM slots, approvals, human input."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from crewai import LLM, Agent, Crew, Process, Task
from crewai.tools import tool

import kitaru_adapters.crewai as adapter
from kitaru_adapters.crewai import DurableLLM, DurableTool, durable, is_durable
from kitaru_core import Client, configure, execution
from kitaru_core.errors import AdapterError, ConfigurationError, ExecutionWaitingError
from kitaru_core.testing import Rule, Script, ScriptedModelServer, ScriptedToolCall

from .conftest import DESK, ModelServer, lines

NATIVE_KINDS = ["model", "tool", "tool", "model", "model", "tool", "model"]
OUTPUT = "Done: refunded 25 USD for order 7"


def kickoff(crew: Crew) -> Any:
    return crew.kickoff(inputs={"mode": "native"})


def only_execution() -> Any:
    (summary,) = Client().list_executions()
    return Client().get_execution(summary.id)


def test_public_names() -> None:
    assert sorted(adapter.__all__) == sorted(
        [
            "DurableHumanInputProvider",
            "DurableLLM",
            "DurableOptions",
            "DurableTool",
            "durable",
            "is_durable",
            "llm_request_identity",
            "prepare_crew",
            "tool_call_discriminator",
            "undurable",
        ]
    )


def test_a_kickoff_is_an_execution_with_every_llm_and_tool_call(
    store_url: str, model_server: ModelServer, tool_runs: Path
) -> None:
    crew = durable(DESK["build_crew"](model_server.base_url, "native"))
    assert is_durable(crew)
    assert all(isinstance(agent.llm, DurableLLM) for agent in crew.agents)
    assert all(isinstance(t, DurableTool) for agent in crew.agents for t in agent.tools)

    assert kickoff(crew).raw == OUTPUT
    detail = only_execution()
    assert detail.status == "completed"
    assert detail.flow_name == "crewai:order_desk"
    assert [call.kind for call in detail.calls] == NATIVE_KINDS
    tool_keys = sorted(call.key for call in detail.calls if call.kind == "tool")
    assert [key.rsplit(":", 1)[0] for key in tool_keys] == [
        "tool:lookup_order:lookup",
        "tool:lookup_order:lookup",
        "tool:refund:refund",
    ]
    # Tool keys depend only on the task, the tool and the canonical arguments, so they are golden
    # values, the same in every process (LLM keys follow the prompts CrewAI writes).
    assert tool_keys == [
        "tool:lookup_order:lookup:bd91a1a358d3",
        "tool:lookup_order:lookup:d9daa6a9a89b",
        "tool:refund:refund:75fad20d6b60",
    ]
    assert all(call.key.startswith("llm:") for call in detail.calls if call.kind == "model")
    # Token usage and cost per LLM call (the scripted server reports usage; gpt-4o-mini has a price).
    models = [call for call in detail.calls if call.kind == "model"]
    assert all(call.input_tokens and call.output_tokens for call in models)
    assert all(call.cost_usd and call.cost_usd > 0 for call in models)
    assert all(call.model_name == "gpt-4o-mini" for call in models)
    assert len(model_server.requests()) == 4
    assert lines(tool_runs) in (
        ["lookup_order 7", "lookup_order 8", "refund 7"],
        ["lookup_order 8", "lookup_order 7", "refund 7"],
    )


FAILING_SCRIPT = Script(
    rules=[rule for rule in DESK["NATIVE_SCRIPT"] if rule.text != "Done: {last_tool_result}"],
    model_names=("gpt-4o-mini",),
)


@pytest.mark.parametrize("script", [FAILING_SCRIPT])
def test_a_failed_kickoff_resumes_without_repeating_completed_calls(
    store_url: str, model_server: ModelServer, tool_runs: Path
) -> None:
    # The last model request finds no rule (HTTP 500): CrewAI retries the task, then the kickoff fails.
    with pytest.raises(Exception, match="No rule of the script"):
        kickoff(durable(DESK["build_crew"](model_server.base_url, "native")))
    assert only_execution().status == "failed"
    runs_before = lines(tool_runs)
    assert runs_before.count("refund 7") >= 1

    with ScriptedModelServer(
        DESK["SCRIPT"], request_log_path=model_server.request_log.parent / "2.jsonl"
    ) as full:
        assert kickoff(durable(DESK["build_crew"](full.base_url, "native"))).raw == OUTPUT
        resumed_requests = full.request_records
    # Only the missing final answer was requested; no tool ran again.
    assert len(resumed_requests) == 1
    assert lines(tool_runs) == runs_before
    detail = only_execution()
    assert detail.status == "completed"
    assert detail.run_count == 2


@pytest.mark.parametrize("entry", ["kickoff", "kickoff_async", "akickoff", "kickoff_for_each"])
def test_every_entry_point_records_the_same_calls(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path, entry: str
) -> None:
    crew = durable(DESK["build_crew"](model_server.base_url, "native"))
    inputs = {"mode": "native"}
    if entry == "kickoff":
        result = crew.kickoff(inputs=inputs)
    elif entry == "kickoff_async":
        result = asyncio.run(crew.kickoff_async(inputs=inputs))
    elif entry == "akickoff":
        result = asyncio.run(crew.akickoff(inputs=inputs))
    else:
        (result,) = crew.kickoff_for_each([inputs])
    assert result.raw == OUTPUT
    detail = only_execution()
    assert detail.status == "completed"
    assert [call.kind for call in detail.calls] == NATIVE_KINDS


def test_react_mode_records_the_same_tool_keys_as_native_mode(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path
) -> None:
    kickoff(durable(DESK["build_crew"](model_server.base_url, "native")))
    durable(DESK["build_crew"](model_server.base_url, "react")).kickoff(inputs={"mode": "react"})
    native, react = (Client().get_execution(summary.id) for summary in reversed(Client().list_executions()))
    assert isinstance(DESK["build_crew"](model_server.base_url, "react").agents[0].llm, DESK["TextOnlyLLM"])
    assert [call.kind for call in react.calls] == [
        "model",
        "tool",
        "model",
        "tool",
        "model",
        "model",
        "tool",
        "model",
    ]
    assert sorted(call.key for call in native.calls if call.kind == "tool") == sorted(
        call.key for call in react.calls if call.kind == "tool"
    )
    # ReAct requests carry no tools: CrewAI drove the tools through Action:/Action Input: text.
    assert all(not request["tool_calls"] for request in model_server.requests()[4:])


SLOW = {"order": 7}


@tool("slow_lookup")
def slow_lookup(order_id: int) -> str:
    """Look up an order slowly."""
    time.sleep(0.3 if order_id == SLOW["order"] else 0.0)
    return f"order {order_id} on thread {threading.get_ident() % 1000}"


PARALLEL_SCRIPT = Script(
    rules=[
        Rule(
            when_turn=0,
            tool_calls=(
                ScriptedToolCall("slow_lookup", {"order_id": 7}),
                ScriptedToolCall("slow_lookup", {"order_id": 8}),
            ),
        ),
        Rule(text="Looked up."),
    ],
    model_names=("gpt-4o-mini",),
)


def _parallel_crew(base_url: str) -> Crew:
    llm = LLM(model="openai/gpt-4o-mini", base_url=base_url, api_key="scripted", max_retries=0)
    clerk = Agent(
        role="Clerk", goal="Look up", backstory="Fast.", llm=llm, tools=[slow_lookup], verbose=False
    )
    return Crew(
        agents=[clerk],
        tasks=[Task(name="lookup", description="Look up 7 and 8.", expected_output="x", agent=clerk)],
    )


@pytest.mark.parametrize("script", [PARALLEL_SCRIPT])
def test_parallel_tool_calls_get_keys_that_do_not_depend_on_thread_timing(
    sqlite_file_store: str, model_server: ModelServer
) -> None:
    recorded: list[list[tuple[str, str]]] = []
    for slow in (7, 8):
        SLOW["order"] = slow
        with execution(name=f"parallel-{slow}"):
            durable(_parallel_crew(model_server.base_url)).kickoff()
    for summary in reversed(Client().list_executions()):
        calls = Client().get_execution(summary.id).calls
        recorded.append([(call.key, call.details["tool_name"]) for call in calls if call.kind == "tool"])
    # The slow call commits last: the order differs between the two runs, the keys do not.
    assert recorded[0] == list(reversed(recorded[1]))
    assert recorded[0] != recorded[1]
    keys = {key.split("/")[-1] for key, _ in recorded[0]}
    assert keys == {key.split("/")[-1] for key, _ in recorded[1]}


def test_every_llm_slot_is_wrapped(sqlite_file_store: str, model_server: ModelServer) -> None:
    base_url = model_server.base_url

    def llm() -> LLM:
        return LLM(model="openai/gpt-4o-mini", base_url=base_url, api_key="scripted", max_retries=0)

    worker = Agent(role="Worker", goal="Work", backstory="b", llm=llm(), function_calling_llm=llm())
    crew = Crew(
        agents=[worker],
        tasks=[Task(description="Work.", expected_output="x")],
        process=Process.hierarchical,
        manager_llm=llm(),
        planning=True,
        planning_llm=llm(),
    )
    durable(crew)
    fields = vars(worker)
    assert isinstance(fields["llm"], DurableLLM)
    assert isinstance(fields["function_calling_llm"], DurableLLM)
    assert isinstance(vars(crew)["manager_llm"], DurableLLM)
    assert isinstance(vars(crew)["planning_llm"], DurableLLM)
    # Capability questions go to the wrapped LLM; a second durable() does not wrap twice.
    wrapped = fields["llm"]
    assert wrapped.supports_function_calling()
    assert wrapped.get_context_window_size() > 0
    durable(crew)
    assert vars(worker)["llm"] is wrapped


def test_a_crew_that_was_not_made_durable_runs_as_before(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path
) -> None:
    assert kickoff(DESK["build_crew"](model_server.base_url, "native")).raw == OUTPUT
    assert Client().list_executions() == []
    # A durable crew outside any execution context still works when called directly (no store).
    llm = DurableLLM(
        LLM(model="openai/gpt-4o-mini", base_url=model_server.base_url, api_key="x", max_retries=0)
    )
    assert llm.call([{"role": "user", "content": "Look up orders"}]) is not None


def test_inside_a_flow_execution_the_crew_is_a_scope(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path
) -> None:
    with execution(name="outer") as context:
        kickoff(durable(DESK["build_crew"](model_server.base_url, "native")))
    (summary,) = Client().list_executions()
    assert summary.id == context.execution_id
    keys = [call.key for call in Client().get_execution(summary.id).calls]
    # One scope, keyed by a digest of the kickoff's identity (inputs, roles, task names).
    assert len({key.split("/")[0] for key in keys}) == 1
    # Golden: the digest of {"inputs": {"mode": "native"}, "agents": [...roles], "tasks": [...names]}.
    assert keys[0].split("/")[0] == "crewai:order_desk:9ec90aba908b"


# -- approvals -------------------------------------------------------------------------------------------


def approval_waits(execution_id: str) -> list[Any]:
    return [wait for wait in Client().get_execution(execution_id).waits if wait.name.startswith("approve:")]


def _gated_crew(base_url: str) -> Crew:
    return durable(DESK["build_crew"](base_url, "native"), approve=["refund"])


def test_an_approval_suspends_the_kickoff_without_an_agent_retry(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path
) -> None:
    with pytest.raises(ExecutionWaitingError) as waiting:
        kickoff(_gated_crew(model_server.base_url))
    (pending,) = waiting.value.waits
    assert pending.name.startswith("approve:refund:refund:")
    # The suspension is no error text for the agent and no retry: the refund task's first model call
    # was made once, the refund never ran.
    assert len(model_server.requests()) == 3
    assert "refund 7" not in lines(tool_runs)

    Client().answer(waiting.value.execution_id, pending.name, {"approved": True})
    assert kickoff(_gated_crew(model_server.base_url)).raw == OUTPUT
    assert len(model_server.requests()) == 4
    assert lines(tool_runs).count("refund 7") == 1
    assert lines(tool_runs).count("lookup_order 7") == 1


def test_a_denial_gives_the_agent_crewais_blocked_text(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path
) -> None:
    with pytest.raises(ExecutionWaitingError) as waiting:
        kickoff(_gated_crew(model_server.base_url))
    (pending,) = waiting.value.waits
    Client().answer(
        waiting.value.execution_id, pending.name, {"approved": False, "message": "Over the limit."}
    )
    result = kickoff(_gated_crew(model_server.base_url))
    assert result.raw == "Done: Tool execution blocked by hook. Tool: refund. Over the limit."
    assert "refund 7" not in lines(tool_runs)


def test_an_invalid_answer_is_refused_and_the_wait_stays_pending(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path
) -> None:
    with pytest.raises(ExecutionWaitingError) as waiting:
        kickoff(_gated_crew(model_server.base_url))
    execution_id = waiting.value.execution_id
    (pending,) = waiting.value.waits
    with pytest.raises(Exception, match="approved"):
        Client().answer(execution_id, pending.name, {"approve": "yes"})
    (still,) = approval_waits(execution_id)
    assert still.status == "pending"


LOOKUP_AND_REFUND_SCRIPT = Script(
    rules=[
        Rule(
            when_tools_offered="refund",
            when_turn=0,
            tool_calls=(
                ScriptedToolCall("refund", {"order_id": 7, "amount": 25}),
                ScriptedToolCall("refund", {"order_id": 8, "amount": 40}),
            ),
        ),
        *DESK["NATIVE_SCRIPT"],
    ],
    model_names=("gpt-4o-mini",),
)


@pytest.mark.parametrize("script", [LOOKUP_AND_REFUND_SCRIPT])
def test_parallel_gated_calls_all_wait_before_the_run_stops(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path
) -> None:
    with pytest.raises(ExecutionWaitingError) as waiting:
        kickoff(_gated_crew(model_server.base_url))
    assert len(waiting.value.waits) == 2
    for pending in waiting.value.waits:
        approved = 'order_id": 7' in pending.question
        Client().answer(waiting.value.execution_id, pending.name, {"approved": approved})
    kickoff(_gated_crew(model_server.base_url))
    assert lines(tool_runs).count("refund 7") == 1
    assert "refund 8" not in lines(tool_runs)


def test_an_approval_policy_callable_sees_the_arguments(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path
) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def policy(name: str, arguments: Any) -> bool:
        seen.append((name, dict(arguments)))
        return name == "refund" and arguments["amount"] > 100

    crew = durable(DESK["build_crew"](model_server.base_url, "native"), approve=policy)
    assert kickoff(crew).raw == OUTPUT
    assert ("refund", {"order_id": 7, "amount": 25}) in seen


# -- human input ---------------------------------------------------------------------------------------

HUMAN_SCRIPT = Script(
    rules=[
        Rule(when_last_user_contains="shorter", text="Short summary."),
        Rule(text="A long summary of the order."),
    ],
    model_names=("gpt-4o-mini",),
)


def _reviewed_crew(base_url: str) -> Crew:
    llm = LLM(model="openai/gpt-4o-mini", base_url=base_url, api_key="scripted", max_retries=0)
    writer = Agent(role="Writer", goal="Summarise", backstory="b", llm=llm, verbose=False)
    task = Task(
        name="summary", description="Summarise order 7.", expected_output="x", agent=writer, human_input=True
    )
    return durable(Crew(name="review", agents=[writer], tasks=[task], verbose=False))


@pytest.mark.parametrize("script", [HUMAN_SCRIPT])
def test_human_input_is_a_durable_wait_through_crewais_provider(
    sqlite_file_store: str, model_server: ModelServer
) -> None:
    with pytest.raises(ExecutionWaitingError) as waiting:
        _reviewed_crew(model_server.base_url).kickoff()
    execution_id = waiting.value.execution_id
    assert [wait.name for wait in waiting.value.waits] == ["human_input:summary"]
    assert len(model_server.requests()) == 1

    # Feedback: the agent works on it (one more model call), then asks again.
    Client().answer(execution_id, "human_input:summary", "Make it shorter.")
    with pytest.raises(ExecutionWaitingError) as again:
        _reviewed_crew(model_server.base_url).kickoff()
    assert [wait.name for wait in again.value.waits] == ["human_input:summary-2"]
    assert len(model_server.requests()) == 2

    # An empty answer accepts the last answer.
    Client().answer(execution_id, "human_input:summary-2", "")
    assert _reviewed_crew(model_server.base_url).kickoff().raw == "Short summary."
    assert len(model_server.requests()) == 2


# -- projects: @CrewBase and Flow -------------------------------------------------------------------


def test_bad_arguments_get_clear_errors() -> None:
    with pytest.raises(ConfigurationError, match="approve="):
        durable(approve="refund")  # type: ignore[arg-type]
    with pytest.raises(AdapterError, match="takes a Crew, a Flow"):
        durable(42)

    class NotACrew:
        def build(self) -> int:
            return 1

    with pytest.raises(AdapterError, match="no @crew method"):
        durable(NotACrew)


def test_llm_request_identity_covers_messages_tools_and_stop_words() -> None:
    llm = LLM(model="openai/gpt-4o-mini", api_key="x")
    base = adapter.llm_request_identity(llm, [{"role": "user", "content": "hi"}], None, None, [])
    dated = adapter.llm_request_identity(
        llm, [{"role": "user", "content": "hi\n\nCurrent Date: 2026-12-02"}], None, None, []
    )
    stopped = adapter.llm_request_identity(
        llm, [{"role": "user", "content": "hi"}], None, None, ["\nObservation:"]
    )
    assert len({json.dumps(item, sort_keys=True) for item in (base, dated, stopped)}) == 3


def test_configure_reset_leaves_no_state() -> None:
    configure(reset=True)


# -- flows ---------------------------------------------------------------------------------------------

FLOW_STEPS: list[str] = []
FLOW_CREWS: list[Crew] = []


def _close_llm_clients(crews: list[Crew]) -> None:
    """Close the HTTP clients of crews built inside flow steps: once the flow's runtime scope ends
    nothing references them, and a client collected with an open connection warns (an error here)."""
    for crew in crews:
        for agent in crew.agents:
            client = getattr(vars(agent)["llm"].wrapped, "_client", None)
            if client is not None:
                client.close()
    crews.clear()


def _order_flow_class(base_url: str, durable_crew: bool) -> type[Any]:
    from crewai.flow.flow import Flow, listen, start

    class OrderFlow(Flow[dict[str, Any]]):  # type: ignore[misc]
        @start()
        def plan(self) -> None:
            FLOW_STEPS.append("plan")
            self.state["mode"] = "native"

        @listen(plan)
        def run_desk(self) -> str:
            FLOW_STEPS.append("run_desk")
            crew = DESK["build_crew"](base_url, "native")
            if durable_crew:
                crew = durable(crew)
            FLOW_CREWS.append(crew)
            return crew.kickoff(inputs={"mode": "native"}).raw

    return OrderFlow


@pytest.mark.parametrize("durable_crew", [True, False], ids=["crew-durable-too", "flow-only"])
@pytest.mark.parametrize("how", ["class", "instance"])
@pytest.mark.parametrize("script", [FAILING_SCRIPT])
def test_a_durable_flow_is_one_execution_and_resumes_its_crews(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path, how: str, durable_crew: bool
) -> None:
    FLOW_STEPS.clear()

    def make(base_url: str) -> Any:
        flow_class = _order_flow_class(base_url, durable_crew)
        return durable(flow_class)() if how == "class" else durable(flow_class())

    with pytest.raises(Exception, match="No rule of the script"):
        make(model_server.base_url).kickoff()
    runs_before = lines(tool_runs)
    with ScriptedModelServer(
        DESK["SCRIPT"], request_log_path=model_server.request_log.parent / "2.jsonl"
    ) as full:
        assert make(full.base_url).kickoff() == OUTPUT
        assert len(full.request_records) == 1
    assert lines(tool_runs) == runs_before
    detail = only_execution()
    assert detail.flow_name == "crewai_flow:OrderFlow"
    assert detail.status == "completed"
    # Each flow step is a checkpoint call; the crew's calls are recorded inside the step's.
    keys = [call.key for call in detail.calls]
    assert {"step:plan:0", "step:run_desk:0"} <= set(keys)
    crew_keys = [key for key in keys if not key.startswith("step:") or "/" in key]
    assert all(key.startswith("step:run_desk:0/crewai:order_desk:9ec90aba908b/") for key in crew_keys)
    # The completed `plan` step was served on resume (not run again), with its state change.
    assert FLOW_STEPS == ["plan", "run_desk", "run_desk"]
    assert all(is_durable(crew) for crew in FLOW_CREWS)  # made durable by the flow when not before
    _close_llm_clients(FLOW_CREWS)


def test_outside_a_durable_flow_crews_are_left_alone(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path
) -> None:
    durable(_order_flow_class(model_server.base_url, False))  # installs the kickoff hook
    crew = DESK["build_crew"](model_server.base_url, "native")
    assert kickoff(crew).raw == OUTPUT
    assert not is_durable(crew)
    assert Client().list_executions() == []


ASYNC_RUNS: list[int] = []


@tool("async_lookup")
async def async_lookup(order_id: int) -> str:
    """Look up an order, asynchronously."""
    ASYNC_RUNS.append(order_id)
    await asyncio.sleep(0.01)
    return f"order {order_id}: 25 USD"


ASYNC_SCRIPT = Script(
    rules=[
        Rule(
            when_turn=0,
            tool_calls=(
                ScriptedToolCall("async_lookup", {"order_id": 7}),
                ScriptedToolCall("async_lookup", {"order_id": 8}),
            ),
        ),
        Rule(text="Both cost 25 USD."),
    ],
    model_names=("gpt-4o-mini",),
)


@pytest.mark.parametrize("entry", ["kickoff", "akickoff"])
@pytest.mark.parametrize("script", [ASYNC_SCRIPT])
def test_async_tools_are_checkpoint_calls_too(
    sqlite_file_store: str, model_server: ModelServer, entry: str
) -> None:
    ASYNC_RUNS.clear()
    for _ in range(2):  # the second kickoff of the same execution is served from the store
        llm = LLM(
            model="openai/gpt-4o-mini", base_url=model_server.base_url, api_key="scripted", max_retries=0
        )
        clerk = Agent(
            role="Clerk", goal="Look up", backstory="b", llm=llm, tools=[async_lookup], verbose=False
        )
        task = Task(name="lookup", description="Look up 7 and 8.", expected_output="x", agent=clerk)
        crew = durable(Crew(agents=[clerk], tasks=[task], verbose=False))
        with execution("async-tools"):
            result = crew.kickoff() if entry == "kickoff" else asyncio.run(crew.akickoff())
        assert result.raw == "Both cost 25 USD."
    assert sorted(ASYNC_RUNS) == [7, 8]
    outputs = sorted(call.output_preview or "" for call in only_execution().calls if call.kind == "tool")
    assert outputs == ['"order 7: 25 USD"', '"order 8: 25 USD"']
    assert len(model_server.requests()) == 2


def test_a_streamed_kickoff_is_durable(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path
) -> None:
    chunk_counts: list[int] = []
    for _ in range(2):  # the second kickoff of the same execution is served from the store
        crew = durable(DESK["build_crew"](model_server.base_url, "native"))
        crew.stream = True
        with execution("streamed"):
            streamed = crew.kickoff(inputs={"mode": "native"})
            chunk_counts.append(len(list(streamed)))
        assert streamed.result.raw == OUTPUT
    # Live LLM calls stream their chunks; served ones have none to stream.
    assert chunk_counts[0] > chunk_counts[1]
    assert len(model_server.requests()) == 4
    assert sorted(lines(tool_runs)) == ["lookup_order 7", "lookup_order 8", "refund 7"]
    assert [call.kind for call in only_execution().calls] == NATIVE_KINDS


class _Day:
    """Stands in for `datetime` in CrewAI's prompt module: `now()` is a chosen day."""

    today = "2026-12-01"

    @classmethod
    def now(cls) -> Any:
        import datetime as real

        return real.datetime.fromisoformat(cls.today)


@pytest.mark.parametrize("script", [FAILING_SCRIPT])
def test_inject_date_a_resume_on_another_day_asks_the_llm_again_but_serves_the_tools(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import crewai.utilities.prompts

    monkeypatch.setattr(crewai.utilities.prompts, "datetime", _Day)

    def dated_crew(base_url: str) -> Crew:
        crew = DESK["build_crew"](base_url, "native")
        for agent in crew.agents:
            agent.inject_date = True
        return durable(crew)

    _Day.today = "2026-12-01"
    with pytest.raises(Exception, match="No rule of the script"):
        kickoff(dated_crew(model_server.base_url))
    runs_before = lines(tool_runs)

    _Day.today = "2026-12-02"
    with ScriptedModelServer(
        DESK["SCRIPT"], request_log_path=model_server.request_log.parent / "2.jsonl"
    ) as full:
        assert kickoff(dated_crew(full.base_url)).raw == OUTPUT
        # Every prompt carries the new date: all 4 LLM calls are new requests...
        assert len(full.request_records) == 4
    # ...while the tool calls (same task, tool and arguments) are served: no tool ran again.
    assert lines(tool_runs) == runs_before
    calls = only_execution().calls
    assert sum(1 for call in calls if call.kind == "model" and call.source == "live") == 4
    assert not [call for call in calls if call.kind == "tool" and call.source == "live"]
    assert {call.key.split(":")[1] for call in calls if call.kind == "tool" and call.source == "store"} == {
        "lookup_order",
        "refund",
    }


def test_an_approval_inside_a_durable_flow_suspends_the_flow(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path
) -> None:
    FLOW_STEPS.clear()
    flow_class = durable(_order_flow_class(model_server.base_url, False), approve=["refund"])
    with pytest.raises(ExecutionWaitingError) as waiting:
        flow_class().kickoff()
    (pending,) = waiting.value.waits
    assert pending.name.startswith("approve:refund:refund:")
    assert "refund 7" not in lines(tool_runs)
    Client().answer(waiting.value.execution_id, pending.name, {"approved": True})
    assert flow_class().kickoff() == OUTPUT
    assert lines(tool_runs).count("refund 7") == 1
    assert only_execution().status == "completed"
    _close_llm_clients(FLOW_CREWS)


def test_the_same_crew_object_kicked_off_again_resumes_its_execution(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path
) -> None:
    crew = DESK["build_crew"](model_server.base_url, "native")
    crew.agents[0].role = "Order clerk ({mode} mode)"  # CrewAI interpolates the inputs in place
    crew = durable(crew, approve=["refund"])
    with pytest.raises(ExecutionWaitingError) as waiting:
        kickoff(crew)
    assert crew.agents[0].role == "Order clerk (native mode)"
    (pending,) = waiting.value.waits
    Client().answer(waiting.value.execution_id, pending.name, {"approved": True})
    assert kickoff(crew).raw == OUTPUT
    detail = only_execution()
    assert detail.run_count == 2
    assert lines(tool_runs).count("lookup_order 7") == 1


DELEGATE = Rule(
    when_tools_offered="delegate_work_to_coworker",
    when_turn=0,
    tool_calls=(
        ScriptedToolCall(
            "delegate_work_to_coworker",
            {"task": "Name the capital of France.", "context": "A geography quiz.", "coworker": "Researcher"},
        ),
    ),
)
COWORKER = Rule(when_conversation_contains="geography quiz", text="Paris")
LEAD_FINAL = Rule(when_tools_offered="delegate_work_to_coworker", text="The capital is {last_tool_result}.")


def _delegating_crew(base_url: str) -> Crew:
    def llm() -> LLM:
        return LLM(model="openai/gpt-4o-mini", base_url=base_url, api_key="scripted", max_retries=0)

    lead = Agent(role="Lead", goal="Answer", backstory="b", llm=llm(), allow_delegation=True, verbose=False)
    researcher = Agent(role="Researcher", goal="Research", backstory="b", llm=llm(), verbose=False)
    task = Task(name="quiz", description="Answer the quiz question.", expected_output="x", agent=lead)
    return durable(Crew(name="quiz", agents=[lead, researcher], tasks=[task], verbose=False))


@pytest.mark.parametrize(
    "script", [Script(rules=[DELEGATE, COWORKER], model_names=("gpt-4o-mini",))], ids=["no-final-answer"]
)
def test_delegation_to_a_coworker_is_a_tool_call_served_on_resume(
    sqlite_file_store: str, model_server: ModelServer
) -> None:
    with pytest.raises(Exception, match="No rule of the script"):
        _delegating_crew(model_server.base_url).kickoff()
    calls = only_execution().calls
    delegation = [call for call in calls if call.name == "tool:Delegate work to coworker"]
    assert delegation
    assert delegation[0].status == "completed"
    # The coworker's LLM call ran inside the delegation's checkpoint call, under its key.
    assert any(call.kind == "model" and call.key.startswith(delegation[0].key + "/") for call in calls)

    full = Script(rules=[DELEGATE, COWORKER, LEAD_FINAL], model_names=("gpt-4o-mini",))
    with ScriptedModelServer(full, request_log_path=model_server.request_log.parent / "2.jsonl") as server:
        assert _delegating_crew(server.base_url).kickoff().raw == "The capital is Paris."
        assert len(server.request_records) == 1  # neither the delegation nor the coworker ran again


@pytest.mark.parametrize(
    "script", [Script(rules=[DELEGATE, COWORKER], model_names=("gpt-4o-mini",))], ids=["no-final-answer"]
)
def test_a_hierarchical_crew_records_its_managers_calls_and_resumes(
    sqlite_file_store: str, model_server: ModelServer
) -> None:
    def crew(base_url: str) -> Crew:
        def llm() -> LLM:
            return LLM(model="openai/gpt-4o-mini", base_url=base_url, api_key="scripted", max_retries=0)

        researcher = Agent(role="Researcher", goal="Research", backstory="b", llm=llm(), verbose=False)
        task = Task(name="quiz", description="Answer the quiz question.", expected_output="x")
        return durable(
            Crew(
                name="managed",
                agents=[researcher],
                tasks=[task],
                process=Process.hierarchical,
                manager_llm=llm(),
                verbose=False,
            )
        )

    with pytest.raises(Exception, match="No rule of the script"):
        crew(model_server.base_url).kickoff()
    completed = [call for call in only_execution().calls if call.status == "completed"]
    # The manager's first call (asking for the delegation), the delegation, and the coworker's call
    # inside it; CrewAI retried the failing task, whose repeats are `#2`, `#3`.
    managers = [call for call in completed if call.kind == "model" and "/" not in call.key]
    delegations = [call for call in completed if call.name == "tool:Delegate work to coworker"]
    assert managers
    assert delegations
    assert any(call.key.startswith(delegations[0].key + "/") for call in completed if call.kind == "model")

    full = Script(rules=[DELEGATE, COWORKER, LEAD_FINAL], model_names=("gpt-4o-mini",))
    with ScriptedModelServer(full, request_log_path=model_server.request_log.parent / "2.jsonl") as server:
        assert crew(server.base_url).kickoff().raw == "The capital is Paris."
        assert len(server.request_records) == 1


def _crewbase_class(base_url: str, where: str) -> type[Any]:
    from crewai.project import CrewBase, agent, crew, task

    def llm() -> LLM:
        return LLM(model="openai/gpt-4o-mini", base_url=base_url, api_key="scripted", max_retries=0)

    def crew_method(self: Any) -> Crew:
        return Crew(agents=self.agents, tasks=self.tasks, verbose=False)

    crew_method.__name__ = "crew"
    built = crew(crew_method)
    if where == "method":
        built = durable(built, approve=["refund"])

    class Desk:
        agents_config: dict[str, Any] = {}  # CrewBase reads these class attributes
        tasks_config: dict[str, Any] = {}

        @agent
        def clerk(self) -> Agent:
            return Agent(
                role="Order clerk",
                goal="Find amounts",
                backstory="b",
                llm=llm(),
                tools=[DESK["lookup_order"]],
            )

        @agent
        def refunder(self) -> Agent:
            return Agent(role="Refund agent", goal="Refund", backstory="b", llm=llm(), tools=[DESK["refund"]])

        @task
        def lookup(self) -> Task:
            return Task(description=DESK["LOOKUP_TASK"], expected_output="The amounts.", agent=self.clerk())

        @task
        def refund(self) -> Task:
            return Task(
                description=DESK["REFUND_TASK"], expected_output="A confirmation.", agent=self.refunder()
            )

        crew = built

    cls = CrewBase(Desk)
    return durable(approve=["refund"])(cls) if where == "class" else cls


@pytest.mark.parametrize("where", ["class", "method"])
def test_durable_on_a_crewbase_class_or_its_crew_method(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path, where: str
) -> None:
    with pytest.raises(ExecutionWaitingError) as waiting:
        _crewbase_class(model_server.base_url, where)().crew().kickoff()
    (pending,) = waiting.value.waits
    assert pending.name.startswith("approve:refund:refund:")
    Client().answer(waiting.value.execution_id, pending.name, {"approved": True})
    crew = _crewbase_class(model_server.base_url, where)().crew()
    assert is_durable(crew)
    assert crew.kickoff().raw == OUTPUT
    assert only_execution().flow_name == "crewai:Desk"
    assert lines(tool_runs).count("lookup_order 7") == 1
    assert lines(tool_runs).count("refund 7") == 1


@pytest.mark.parametrize("entry", ["kickoff_for_each", "kickoff_for_each_async", "akickoff_for_each"])
def test_each_input_of_kickoff_for_each_is_its_own_execution(
    sqlite_file_store: str, model_server: ModelServer, tool_runs: Path, entry: str
) -> None:
    crew = durable(DESK["build_crew"](model_server.base_url, "native"))
    inputs = [{"mode": "native", "batch": 1}, {"mode": "native", "batch": 2}]
    if entry == "kickoff_for_each":
        results = crew.kickoff_for_each(inputs)
    else:
        results = asyncio.run(getattr(crew, entry)(inputs))
    assert [result.raw for result in results] == [OUTPUT, OUTPUT]
    summaries = Client().list_executions()
    assert len(summaries) == 2
    for summary in summaries:
        detail = Client().get_execution(summary.id)
        assert detail.status == "completed"
        assert [call.kind for call in detail.calls] == NATIVE_KINDS
