"""The OpenAI Agents SDK adapter in one process: real SDK, real HTTP to the scripted model server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, ModelProvider, RunConfig, Runner, RunState, SQLiteSession, function_tool
from agents.models.interface import Model
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.tool import LocalShellTool

from kitaru_adapters.openai_agents import DurableModel, DurableRunner, durable, is_durable
from kitaru_core import Client, execution, named_run
from kitaru_core.errors import AdapterError, ConfigurationError, ExecutionWaitingError, InvalidAnswerError
from kitaru_core.testing import Rule, Script, ScriptedToolCall

from .conftest import run_async

SCRIPT = Script(
    rules=[
        Rule(
            when_last_user_contains="Add",
            when_turn=0,
            tool_calls=(ScriptedToolCall("add", {"a": 2, "b": 3}), ScriptedToolCall("add", {"a": 4, "b": 5})),
        ),
        Rule(when_last_user_contains="Add", when_turn=1, text="Sums: {last_tool_result}"),
        Rule(
            when_last_user_contains="Refund",
            when_turn=0,
            tool_calls=(ScriptedToolCall("refund", {"order_id": 1, "amount": 10}),),
        ),
        Rule(when_last_user_contains="Refund", when_turn=1, text="Refund says: {last_tool_result}"),
        Rule(
            when_last_user_contains="Ask",
            when_tools_offered="ask_helper",
            when_turn=0,
            tool_calls=(ScriptedToolCall("ask_helper", {"input": "Add 2 and 3"}),),
        ),
        Rule(when_last_user_contains="Ask", when_turn=1, text="Helper said: {last_tool_result}"),
    ],
    model_names=("gpt-4o-mini",),
)


@pytest.fixture
def script() -> Script:
    return SCRIPT


class Tools:
    """Function tools that count how often their bodies really ran."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.fail_next_add = False

        @function_tool(failure_error_function=None)
        def add(a: int, b: int) -> int:
            """Add two numbers."""
            self.runs.append(f"add {a} {b}")
            if self.fail_next_add and a == 4:
                self.fail_next_add = False
                raise RuntimeError("the adding machine broke")
            return a + b

        @function_tool(needs_approval=True)
        def refund(order_id: int, amount: int) -> str:
            """Refund an order."""
            self.runs.append(f"refund {order_id}")
            return f"refunded {amount} USD on order {order_id}"

        self.add = add
        self.refund = refund


@pytest.fixture
def tools() -> Tools:
    return Tools()


def _only_execution() -> Any:
    (summary,) = Client().list_executions()
    return Client().get_execution(summary.id)


def test_a_run_is_an_execution_with_every_model_and_tool_call(
    sqlite_file_store: str, model_server, tools
) -> None:
    agent = durable(Agent(name="calculator", instructions="Add.", tools=[tools.add]))
    result = Runner.run_sync(agent, "Add 2+3 and 4+5", run_config=model_server.run_config())
    assert result.final_output == "Sums: 9"
    detail = _only_execution()
    assert detail.status == "completed"
    assert detail.flow_name == "openai_agents:calculator"
    assert [call.kind for call in detail.calls] == ["model", "tool", "tool", "model"]
    tool_keys = sorted(call.key for call in detail.calls if call.kind == "tool")
    request = model_server.requests()[0]
    assert all(key.startswith("tool:add:call_") for key in tool_keys)
    assert len(model_server.requests()) == 2
    first_model = detail.calls[0]
    assert first_model.input_tokens is not None
    assert first_model.input_tokens > 0
    assert first_model.model_name == "gpt-4o-mini"
    assert first_model.cost_usd is not None
    assert first_model.cost_usd > 0
    assert request["model"] == "gpt-4o-mini"


def test_a_failed_run_resumes_without_repeating_completed_calls(store_url: str, model_server, tools) -> None:
    agent = durable(Agent(name="calculator", instructions="Add.", tools=[tools.add]))
    tools.fail_next_add = True
    with pytest.raises(Exception, match="adding machine broke"):
        Runner.run_sync(agent, "Add 2+3 and 4+5", run_config=model_server.run_config())
    assert len(model_server.requests()) == 1
    (failed,) = Client().list_executions()
    assert failed.status == "failed"

    result = Runner.run_sync(agent, "Add 2+3 and 4+5", run_config=model_server.run_config())
    assert result.final_output == "Sums: 9"
    assert len(model_server.requests()) == 2  # the first model call was served from the store
    assert tools.runs.count("add 2 3") == 1  # it completed before the failure
    assert tools.runs.count("add 4 5") == 2  # it failed, so it ran again
    detail = _only_execution()
    assert detail.id == failed.id
    assert detail.status == "completed"
    assert [call.source for call in detail.calls if call.kind == "model"] == ["store", "live"]


def test_run_run_sync_and_run_streamed_record_the_same_keys(
    sqlite_file_store: str, model_server, tools
) -> None:
    agent = durable(Agent(name="calculator", instructions="Add.", tools=[tools.add]))
    config = model_server.run_config()

    async def streamed() -> Any:
        result = Runner.run_streamed(agent, "Add 2+3 and 4+5", run_config=config)
        events = [event async for event in result.stream_events()]
        assert any(event.type == "raw_response_event" for event in events)
        return result.final_output

    with execution("sync"):
        assert Runner.run_sync(agent, "Add 2+3 and 4+5", run_config=config).final_output == "Sums: 9"
    with execution("async"):
        assert run_async(Runner.run(agent, "Add 2+3 and 4+5", run_config=config)).final_output == "Sums: 9"
    with execution("streamed"):
        assert run_async(streamed()) == "Sums: 9"
    keys = {
        name: [call.key for call in Client().get_execution(name).calls]
        for name in ("sync", "async", "streamed")
    }
    # Model keys are fingerprints of the model input, tool keys the model's call ids: equal in every mode.
    assert keys["sync"] == keys["async"] == keys["streamed"]
    # Inside an execution the run has its own scope, named after the agent.
    assert [key.split("/")[-1].split(":")[0] for key in keys["sync"]] == ["model", "tool", "tool", "model"]
    assert all(key.startswith("openai_agents:calculator:0/") for key in keys["sync"])
    assert len(model_server.requests()) == 6
    # Entering a recorded execution again serves a streamed run from the store: nothing is requested.
    with execution("streamed"):
        assert run_async(streamed()) == "Sums: 9"
    assert len(model_server.requests()) == 6


class CountingProvider(ModelProvider):
    """A user's own provider: it must be wrapped, never replaced."""

    def __init__(self, base: ModelProvider) -> None:
        self.base = base
        self.asked: list[str | None] = []

    def get_model(self, model_name: str | None) -> Model:
        self.asked.append(model_name)
        return self.base.get_model(model_name)


def test_the_users_own_model_provider_is_wrapped_not_replaced(
    sqlite_file_store: str, model_server, tools
) -> None:
    provider = CountingProvider(model_server.provider())
    agent = durable(Agent(name="calculator", instructions="Add.", tools=[tools.add], model="gpt-4o-mini"))
    result = Runner.run_sync(agent, "Add 2+3 and 4+5", run_config=RunConfig(model_provider=provider))
    assert result.final_output == "Sums: 9"
    assert provider.asked == ["gpt-4o-mini", "gpt-4o-mini"]
    assert [call.kind for call in _only_execution().calls] == ["model", "tool", "tool", "model"]


@pytest.mark.parametrize("where", ["agent", "run_config"])
def test_model_instances_are_covered(sqlite_file_store: str, model_server, tools, where: str) -> None:
    model = OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=model_server.client())
    if where == "agent":
        agent = durable(Agent(name="calculator", instructions="Add.", tools=[tools.add], model=model))
        config = RunConfig()
        assert isinstance(agent.model, DurableModel)
    else:
        agent = durable(Agent(name="calculator", instructions="Add.", tools=[tools.add]))
        config = RunConfig(model=model)
    assert Runner.run_sync(agent, "Add 2+3 and 4+5", run_config=config).final_output == "Sums: 9"
    assert [call.kind for call in _only_execution().calls] == ["model", "tool", "tool", "model"]
    # Served from the store by a second run in the same execution: no request reaches the server.
    Runner.run_sync(agent, "Add 2+3 and 4+5", run_config=config)
    assert len(model_server.requests()) == 4  # a new top-level run is a new execution and pays again
    with execution("again"):
        Runner.run_sync(agent, "Add 2+3 and 4+5", run_config=config)
    with execution("again"):
        Runner.run_sync(agent, "Add 2+3 and 4+5", run_config=config)
    assert len(model_server.requests()) == 6


def test_an_agent_used_as_a_tool_records_its_calls_inside_the_tool_call(
    sqlite_file_store: str, model_server, tools
) -> None:
    helper = Agent(name="helper", instructions="Add.", tools=[tools.add])
    boss = durable(
        Agent(
            name="boss",
            instructions="Ask the helper.",
            tools=[helper.as_tool(tool_name="ask_helper", tool_description="Ask the helper.")],
        )
    )
    with named_run("ask-1"):
        result = Runner.run_sync(boss, "Ask the helper", run_config=model_server.run_config())
    assert result.final_output == "Helper said: Sums: 9"
    keys = [call.key for call in _only_execution().calls]
    # The agent tool is a scope (not one call): its run's own calls are recorded inside it, so a
    # served re-run runs the helper again from the store and its streamed events reach `on_stream`.
    assert not [key for key in keys if key.startswith("tool:ask_helper:") and "/" not in key]
    (outer,) = {key.split("/")[0] for key in keys if key.startswith("tool:ask_helper:")}
    nested = [key for key in keys if key.startswith(outer + "/")]
    assert [key.split("/")[-1].split(":")[0] for key in nested] == ["model", "tool", "tool", "model"]
    assert not is_durable(helper)  # reached through the boss's run, but left as the user made it
    again = len(model_server.requests())
    with named_run("ask-1"):  # a served re-run: the helper runs again, from the store
        assert Runner.run_sync(boss, "Ask the helper", run_config=model_server.run_config()).final_output == (
            "Helper said: Sums: 9"
        )
    assert len(model_server.requests()) == again


def test_agents_that_were_not_made_durable_run_as_before(sqlite_file_store: str, model_server, tools) -> None:
    durable(Agent(name="other", instructions="x"))  # installs the durable runner
    plain = Agent(name="calculator", instructions="Add.", tools=[tools.add])
    assert (
        Runner.run_sync(plain, "Add 2+3 and 4+5", run_config=model_server.run_config()).final_output
        == "Sums: 9"
    )
    assert Client().list_executions() == []


def test_durable_runner_leaves_the_agent_objects_untouched(
    sqlite_file_store: str, model_server, tools
) -> None:
    agent = Agent(name="calculator", instructions="Add.", tools=[tools.add])
    tools_before = list(agent.tools)
    result = DurableRunner().run_sync(agent, "Add 2+3 and 4+5", run_config=model_server.run_config())
    assert result.final_output == "Sums: 9"
    assert type(agent) is Agent
    assert agent.tools == tools_before
    assert not is_durable(agent)
    assert [call.kind for call in _only_execution().calls] == ["model", "tool", "tool", "model"]


# -- approvals ---------------------------------------------------------------------------------------


def _stop_at_the_approval(agent: Agent[Any], model_server) -> tuple[str, str]:
    with pytest.raises(ExecutionWaitingError) as stopped:
        Runner.run_sync(agent, "Refund order 1", run_config=model_server.run_config())
    (wait,) = Client().pending_waits(stopped.value.execution_id)
    assert wait.name.startswith("approve:refund:call_")
    assert wait.metadata["arguments"] == {"order_id": 1, "amount": 10}
    assert Client().get_execution(stopped.value.execution_id).status == "waiting"
    return stopped.value.execution_id, wait.name


def test_an_approved_tool_call_runs_once_without_repeating_the_model_call(
    store_url: str, model_server, tools
) -> None:
    agent = durable(Agent(name="desk", instructions="Refund.", tools=[tools.refund]))
    execution_id, wait_name = _stop_at_the_approval(agent, model_server)
    assert tools.runs == []
    Client().answer(execution_id, wait_name, {"approved": True})
    result = Runner.run_sync(agent, "Refund order 1", run_config=model_server.run_config())
    assert result.final_output == "Refund says: refunded 10 USD on order 1"
    assert tools.runs == ["refund 1"]
    assert len(model_server.requests()) == 2  # the interrupted turn's model call was served
    assert Client().get_execution(execution_id).status == "completed"


def test_a_denial_reaches_the_model_as_the_rejection_output(
    sqlite_file_store: str, model_server, tools
) -> None:
    agent = durable(Agent(name="desk", instructions="Refund.", tools=[tools.refund]))
    execution_id, wait_name = _stop_at_the_approval(agent, model_server)
    Client().answer(
        execution_id, wait_name, {"approved": False, "message": "Refunds over 5 USD need a manager."}
    )
    result = Runner.run_sync(agent, "Refund order 1", run_config=model_server.run_config())
    assert result.final_output == "Refund says: Refunds over 5 USD need a manager."
    assert tools.runs == []  # the text came back to the model as the tool's output (`{last_tool_result}`)
    assert model_server.requests()[-1]["turn"] == 1


def test_a_denial_without_a_message_gives_the_sdks_rejection_text(
    sqlite_file_store: str, model_server, tools
) -> None:
    agent = durable(Agent(name="desk", instructions="Refund.", tools=[tools.refund]))
    execution_id, wait_name = _stop_at_the_approval(agent, model_server)
    Client().answer(execution_id, wait_name, {"approved": False})
    result = Runner.run_sync(agent, "Refund order 1", run_config=model_server.run_config())
    assert result.final_output == "Refund says: Tool execution was not approved."


def test_an_invalid_answer_is_refused_and_the_wait_stays_pending(
    sqlite_file_store: str, model_server, tools
) -> None:
    agent = durable(Agent(name="desk", instructions="Refund.", tools=[tools.refund]))
    execution_id, wait_name = _stop_at_the_approval(agent, model_server)
    with pytest.raises(InvalidAnswerError, match="approved"):
        Client().answer(execution_id, wait_name, {"approved": "maybe"})
    (still_pending,) = Client().pending_waits(execution_id)
    assert still_pending.name == wait_name
    with pytest.raises(ExecutionWaitingError):
        Runner.run_sync(agent, "Refund order 1", run_config=model_server.run_config())
    assert tools.runs == []
    assert len(model_server.requests()) == 1


def test_parallel_gated_calls_all_wait_before_the_run_stops(
    sqlite_file_store: str, model_server, tools
) -> None:
    # `add` does not declare needs_approval; approve= names it. The model calls it twice in one turn.
    agent = durable(Agent(name="calculator", instructions="Add.", tools=[tools.add]), approve=["add"])
    with pytest.raises(ExecutionWaitingError) as stopped:
        Runner.run_sync(agent, "Add 2+3 and 4+5", run_config=model_server.run_config())
    execution_id = stopped.value.execution_id
    waits = {wait.metadata["arguments"]["a"]: wait.name for wait in Client().pending_waits(execution_id)}
    assert sorted(waits) == [2, 4]  # both calls of the turn asked before the run stopped
    assert all(name.startswith("approve:add:call_") for name in waits.values())
    assert tools.runs == []
    Client().answer(execution_id, waits[2], {"approved": True})
    Client().answer(execution_id, waits[4], {"approved": False, "message": "Not that one."})
    result = Runner.run_sync(agent, "Add 2+3 and 4+5", run_config=model_server.run_config())
    assert result.final_output == "Sums: Not that one."
    assert tools.runs == ["add 2 3"]
    assert len(model_server.requests()) == 2


def test_interrupt_mode_keeps_the_sdks_own_run_state_flow(
    sqlite_file_store: str, model_server, tools
) -> None:
    agent = durable(
        Agent(name="desk", instructions="Refund.", tools=[tools.refund]), approval_mode="interrupt"
    )
    config = model_server.run_config()
    with execution("ticket-7"):
        result = Runner.run_sync(agent, "Refund order 1", run_config=config)
        assert result.final_output is None
        (interruption,) = result.interruptions
        assert interruption.name == "refund"
        saved = json.dumps(result.to_state().to_json())

        state = run_async(RunState.from_json(agent, json.loads(saved)))
        state.approve(interruption)
        resumed = Runner.run_sync(agent, state, run_config=config)
    assert resumed.final_output == "Refund says: refunded 10 USD on order 1"
    assert tools.runs == ["refund 1"]
    assert len(model_server.requests()) == 2
    kinds = [call.kind for call in Client().get_execution("ticket-7").calls]
    assert kinds == ["model", "tool", "model"]
    assert Client().pending_waits("ticket-7") == []


# -- sessions, refusals, errors ------------------------------------------------------------------------


def test_a_resumed_run_does_not_duplicate_session_history(
    sqlite_file_store: str, model_server, tools, tmp_path: Path
) -> None:
    agent = durable(Agent(name="calculator", instructions="Add.", tools=[tools.add]))
    session = SQLiteSession("conversation-1", str(tmp_path / "sessions.db"))
    tools.fail_next_add = True
    with pytest.raises(Exception, match="adding machine broke"):
        Runner.run_sync(agent, "Add 2+3 and 4+5", run_config=model_server.run_config(), session=session)
    result = Runner.run_sync(agent, "Add 2+3 and 4+5", run_config=model_server.run_config(), session=session)
    assert result.final_output == "Sums: 9"

    items = run_async(session.get_items())
    clean_session = SQLiteSession("conversation-2", str(tmp_path / "sessions.db"))
    Runner.run_sync(
        Agent(name="calculator", instructions="Add.", tools=[tools.add]),
        "Add 2+3 and 4+5",
        run_config=model_server.run_config(),
        session=clean_session,
    )
    clean_items = run_async(clean_session.get_items())
    assert [item.get("role") or item.get("type") for item in items] == [
        item.get("role") or item.get("type") for item in clean_items
    ]
    assert sum(1 for item in items if item.get("role") == "user") == 1


def test_a_tool_that_runs_locally_through_its_own_executor_is_refused(
    sqlite_file_store: str, model_server
) -> None:
    shell = LocalShellTool(executor=lambda request: "done")
    agent = durable(Agent(name="operator", instructions="Run things.", tools=[shell]))
    with pytest.raises(AdapterError, match="LocalShellTool"):
        Runner.run_sync(agent, "Add 1", run_config=model_server.run_config())
    assert model_server.requests() == []


def test_bad_arguments_get_clear_errors() -> None:
    with pytest.raises(AdapterError, match=r"takes an agents\.Agent"):
        durable("not an agent")  # type: ignore[type-var]
    with pytest.raises(ConfigurationError, match=r"approve=\['refund'\]"):
        durable(Agent(name="x"), approve="refund")
    with pytest.raises(ConfigurationError, match="approval_mode"):
        durable(Agent(name="x"), approval_mode="later")  # type: ignore[arg-type]


def test_a_streamed_run_whose_consumer_stops_listening_still_ends_its_execution(
    sqlite_file_store: str, model_server, tools
) -> None:
    agent = durable(Agent(name="calculator", instructions="Add.", tools=[tools.add]))

    async def listen_to_one_event() -> Any:
        streamed = Runner.run_streamed(agent, "Add 2+3 and 4+5", run_config=model_server.run_config())
        async for _event in streamed.stream_events():
            break
        if streamed.run_loop_task is not None and not streamed.run_loop_task.done():
            await asyncio.wait([streamed.run_loop_task])
        return streamed

    streamed = run_async(listen_to_one_event())
    (summary,) = Client().list_executions()
    # The SDK finishes the run in the background; the execution ends with it, not as a failure.
    assert streamed.run_loop_task is not None
    assert not streamed.run_loop_task.cancelled()
    assert summary.status == "completed"
    assert streamed.final_output == "Sums: 9"
