"""The PydanticAI adapter in one process: what is recorded, served, gated and reached."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import Agent, ModelRetry, RunContext
from pydantic_ai.exceptions import ApprovalRequired
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel

import kitaru_core
from kitaru_adapters.pydantic_ai import durable, is_durable
from kitaru_core import Client, execution, flow
from kitaru_core.errors import AdapterError, ConfigurationError, ExecutionWaitingError


class Recorder:
    """A FunctionModel whose replies are chosen by the last message, counting every request."""

    def __init__(self, tool_calls: list[ToolCallPart]) -> None:
        self.tool_calls = tool_calls
        self.requests = 0

    def respond(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.requests += 1
        last = messages[-1]
        returns = [part for part in last.parts if isinstance(part, ToolReturnPart)]
        retried = [part for part in returns if getattr(part, "outcome", None) == "retried"]
        if not returns or retried:
            return ModelResponse(parts=list(self.tool_calls))
        return ModelResponse(parts=[TextPart(" | ".join(str(part.content) for part in returns))])

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        response = self.respond(messages, info)
        for index, part in enumerate(response.parts):
            if isinstance(part, ToolCallPart):
                yield {
                    index: DeltaToolCall(
                        part.tool_name, part.args_as_json_str(), tool_call_id=part.tool_call_id
                    )
                }
            else:
                assert isinstance(part, TextPart)
                yield part.content

    def model(self) -> FunctionModel:
        return FunctionModel(self.respond, stream_function=self.stream)


@pytest.fixture(autouse=True)
def _store(sqlite_file_store: str) -> Iterator[str]:
    return sqlite_file_store


def bank_agent(recorder: Recorder, counts: dict[str, int], **durable_options: Any) -> Agent[None, str]:
    agent: Agent[None, str] = Agent(recorder.model(), name="bank")

    @agent.tool_plain
    def balance() -> int:
        counts["balance"] = counts.get("balance", 0) + 1
        return 100

    @agent.tool_plain
    def transfer(amount: int) -> str:
        counts["transfer"] = counts.get("transfer", 0) + 1
        return f"sent {amount}"

    return durable(agent, **durable_options)


def _without_times(raw: bytes) -> Any:
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                key: strip(item)
                for key, item in value.items()
                if key not in {"timestamp", "run_id", "conversation_id"}
            }
        if isinstance(value, list):
            return [strip(item) for item in value]
        return value

    return strip(json.loads(raw))


TWO_TOOLS = [
    ToolCallPart("balance", {}, tool_call_id="t1"),
    ToolCallPart("transfer", {"amount": 5}, tool_call_id="t2"),
]


def test_each_model_request_and_tool_call_is_a_checkpoint_call() -> None:
    recorder, counts = Recorder(TWO_TOOLS), {}
    agent = bank_agent(recorder, counts)
    assert is_durable(agent)
    assert isinstance(agent, Agent)
    with execution("bank-1"):
        result = asyncio.run(agent.run("hi"))
    assert result.output == "100 | sent 5"
    detail = Client().get_execution("bank-1")
    assert [(call.key, call.kind) for call in detail.calls] == [
        ("pydantic_ai:bank:0/model_request:0", "model"),
        ("pydantic_ai:bank:0/tool:balance:t1", "tool"),
        ("pydantic_ai:bank:0/tool:transfer:t2", "tool"),
        ("pydantic_ai:bank:0/model_request:1", "model"),
    ]
    assert detail.calls[0].input_tokens is not None
    assert detail.calls[1].details == {"tool_name": "balance", "tool_call_id": "t1"}


@pytest.mark.parametrize("second_mode", ["run", "run_stream", "run_stream_events", "iter"])
def test_rerun_serves_every_call_whatever_the_run_mode(second_mode: str) -> None:
    """Fingerprints leave out per-run timestamps and ids, and streamed == not streamed."""
    recorder, counts = Recorder(TWO_TOOLS), {}
    agent = bank_agent(recorder, counts)
    with execution("bank-2"):
        first = asyncio.run(agent.run("hi")).output
    assert (recorder.requests, counts) == (2, {"balance": 1, "transfer": 1})

    async def again() -> str:
        if second_mode == "run":
            return (await agent.run("hi")).output
        if second_mode == "run_stream":
            async with agent.run_stream("hi") as stream:
                return await stream.get_output()
        if second_mode == "run_stream_events":
            from pydantic_ai import AgentRunResultEvent

            async with agent.run_stream_events("hi") as events:
                outputs = [
                    event.result.output async for event in events if isinstance(event, AgentRunResultEvent)
                ]
            return outputs[-1]
        async with agent.iter("hi") as run:
            async for _node in run:
                pass
        assert run.result is not None
        return run.result.output

    with execution("bank-2"):
        second = asyncio.run(again())
    assert second == first
    assert (recorder.requests, counts) == (2, {"balance": 1, "transfer": 1})
    sources = {call.source for call in Client().get_execution("bank-2").calls}
    assert sources == {"store"}


def test_outside_a_flow_each_top_level_run_is_an_execution_resumed_by_rerunning() -> None:
    recorder, counts = Recorder(TWO_TOOLS), {}
    agent = bank_agent(recorder, counts, approve=["transfer"])
    with pytest.raises(ExecutionWaitingError) as waiting:
        asyncio.run(agent.run("hi"))
    execution_id = waiting.value.execution_id
    assert waiting.value.wait_names == ["approve:transfer:t2"]
    assert Client().get_execution(execution_id).flow_name == "pydantic_ai:bank"
    Client().answer(execution_id, "approve:transfer:t2", {"approved": True})
    assert asyncio.run(agent.run("hi")).output == "100 | sent 5"
    assert (recorder.requests, counts) == (2, {"balance": 1, "transfer": 1})
    assert [row.id for row in Client().list_executions()] == [execution_id]


def test_requires_approval_and_approval_required_become_waits() -> None:
    recorder = Recorder(
        [
            ToolCallPart("delete_file", {"path": "a.txt"}, tool_call_id="d1"),
            ToolCallPart("send_mail", {"to": "boss"}, tool_call_id="m1"),
        ]
    )
    ran: list[str] = []
    agent: Agent[None, str] = Agent(recorder.model(), name="files")

    @agent.tool_plain(requires_approval=True)
    def delete_file(path: str) -> str:
        ran.append(f"delete {path}")
        return f"deleted {path}"

    @agent.tool
    def send_mail(ctx: RunContext[None], to: str) -> str:
        if not ctx.tool_call_approved:
            raise ApprovalRequired(metadata={"reason": "external mail"})
        ran.append(f"mail {to}")
        return f"mailed {to}"

    durable(agent)

    async def run_stream() -> str:
        async with agent.run_stream("clean up") as stream:
            return await stream.get_output()

    with pytest.raises(ExecutionWaitingError) as waiting, execution("files-1"):
        asyncio.run(run_stream())
    assert sorted(waiting.value.wait_names) == ["approve:delete_file:d1", "approve:send_mail:m1"]
    assert ran == []
    client = Client()
    client.answer("files-1", "approve:delete_file:d1", {"approved": True})
    client.answer("files-1", "approve:send_mail:m1", {"approved": False, "message": "not to the boss"})
    with execution("files-1"):
        output = asyncio.run(run_stream())
    assert output == "deleted a.txt | not to the boss"
    assert ran == ["delete a.txt"]
    assert recorder.requests == 2


def test_default_denial_message_is_pydantic_ais() -> None:
    recorder, counts = Recorder(TWO_TOOLS), {}
    agent = bank_agent(recorder, counts, approve=lambda name, arguments: arguments.get("amount", 0) > 1)
    with pytest.raises(ExecutionWaitingError), execution("bank-deny"):
        asyncio.run(agent.run("hi"))
    Client().answer("bank-deny", "approve:transfer:t2", {"approved": False})
    with execution("bank-deny"):
        assert asyncio.run(agent.run("hi")).output == "100 | The tool call was denied."
    assert counts == {"balance": 1}


def test_model_retry_is_stored_as_data_and_not_rerun() -> None:
    recorder = Recorder([ToolCallPart("flaky", {"n": 1}, tool_call_id="f1")])
    attempts: list[int] = []
    agent: Agent[None, str] = Agent(recorder.model(), name="flaky", retries=3)

    @agent.tool_plain
    def flaky(n: int) -> str:
        attempts.append(n)
        if len(attempts) == 1:
            raise ModelRetry("try again")
        return "ok"

    durable(agent)
    # the model sends the same tool call id again after the retry prompt, as some servers do
    with execution("flaky-1"):
        first = asyncio.run(agent.run("go"))
    assert first.output == "ok"
    assert attempts == [1, 1]
    with execution("flaky-1"):
        second = asyncio.run(agent.run("go"))
    assert attempts == [1, 1]
    assert second.output == first.output
    assert _without_times(second.all_messages_json()) == _without_times(first.all_messages_json())
    keys = [call.key for call in Client().get_execution("flaky-1").calls if call.kind == "tool"]
    assert keys == ["pydantic_ai:flaky:0/tool:flaky:f1", "pydantic_ai:flaky:0/tool:flaky:f1#2"]


def test_agent_reached_through_a_dict_a_closure_and_another_agents_tool() -> None:
    inner_recorder = Recorder([ToolCallPart("balance", {}, tool_call_id="i1")])
    counts: dict[str, int] = {}
    inner = bank_agent(inner_recorder, counts)
    registry = {"inner": inner}

    def ask_inner() -> Agent[None, str]:
        return registry["inner"]

    outer_recorder = Recorder([ToolCallPart("delegate", {}, tool_call_id="o1")])
    outer: Agent[None, str] = Agent(outer_recorder.model(), name="outer")

    @outer.tool_plain
    async def delegate() -> str:
        return (await ask_inner().run("balance please")).output

    @flow
    async def support() -> str:
        return (await outer.run("help")).output

    assert asyncio.run(support()) == "100"
    [row] = Client().list_executions()
    keys = [call.key for call in Client().get_execution(row.id).calls]
    # the outer agent is not durable; the inner one is recorded wherever it was reached from
    assert keys == [
        "flow:support:0/pydantic_ai:bank:0/model_request:0",
        "flow:support:0/pydantic_ai:bank:0/tool:balance:i1",
        "flow:support:0/pydantic_ai:bank:0/model_request:1",
    ] or keys == [
        "pydantic_ai:bank:0/model_request:0",
        "pydantic_ai:bank:0/tool:balance:i1",
        "pydantic_ai:bank:0/model_request:1",
    ]


def test_inside_a_flow_runs_share_one_execution_and_resume_after_a_failure() -> None:
    recorder, counts = Recorder(TWO_TOOLS), {}
    agent = bank_agent(recorder, counts)
    fail = {"now": True}

    @flow
    async def two_runs(prompt: str) -> list[str]:
        first = (await agent.run(prompt)).output
        if fail["now"]:
            raise RuntimeError("crash between the two runs")
        second = (await agent.run(prompt + " again")).output
        return [first, second]

    with pytest.raises(RuntimeError):
        asyncio.run(two_runs("hi"))
    assert (recorder.requests, counts) == (2, {"balance": 1, "transfer": 1})
    fail["now"] = False
    assert asyncio.run(two_runs("hi")) == ["100 | sent 5", "100 | sent 5"]
    assert (recorder.requests, counts) == (4, {"balance": 2, "transfer": 2})
    [row] = Client().list_executions()
    assert (row.status, row.run_count) == ("completed", 2)
    keys = [call.key for call in Client().get_execution(row.id).calls]
    assert keys[0] == "pydantic_ai:bank:0/model_request:0"
    assert keys[-1] == "pydantic_ai:bank:1/model_request:1"


def test_changed_prompt_in_the_same_execution_calls_the_model_again() -> None:
    """No stale answers: the stored model request is superseded, not served."""
    recorder, counts = Recorder(TWO_TOOLS), {}
    agent = bank_agent(recorder, counts, approve=["transfer"])
    with pytest.raises(ExecutionWaitingError), execution("ticket-9"):
        asyncio.run(agent.run("What is my balance?"))
    assert recorder.requests == 1
    with pytest.raises(ExecutionWaitingError), execution("ticket-9"):
        asyncio.run(agent.run("What is my balance, please?"))
    assert recorder.requests == 2
    calls = Client().get_execution("ticket-9").calls
    model_calls = [(call.key, call.status) for call in calls if call.kind == "model"]
    assert model_calls == [
        ("pydantic_ai:bank:0/model_request:0", "superseded"),
        ("pydantic_ai:bank:0/model_request:0", "completed"),
    ]


def test_durable_refuses_what_it_cannot_wrap() -> None:
    with pytest.raises(AdapterError, match=r"takes a pydantic_ai\.Agent"):
        durable(object())  # type: ignore[type-var]
    with pytest.raises(ConfigurationError, match=r"approve=\['transfer'\]"):
        durable(Agent(FunctionModel(Recorder([]).respond)), approve="transfer")


def test_usage_and_cost_are_recorded_from_a_real_http_model(tmp_path: Path) -> None:
    import openai
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    from kitaru_core.testing import Rule, Script, ScriptedModelServer

    script = Script(rules=[Rule(text="The answer is 42.")], model_names=("gpt-4o-mini",))
    with ScriptedModelServer(script) as server:

        async def ask() -> str:
            client = openai.AsyncOpenAI(base_url=server.base_url, api_key="scripted", max_retries=0)
            agent = durable(
                Agent(
                    OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client)),
                    name="priced",
                )
            )
            try:
                with execution("priced"):
                    return (await agent.run("What is the answer?")).output
            finally:
                await client.close()

        assert asyncio.run(ask()) == "The answer is 42."
    [call] = Client().get_execution("priced").calls
    assert call.model_name == "gpt-4o-mini"
    assert call.input_tokens
    assert call.input_tokens > 0
    assert call.output_tokens
    assert call.output_tokens > 0
    assert call.cost_usd is not None
    assert call.cost_usd > 0


def test_adapter_without_pydantic_ai_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['pydantic_ai'] = None\n"
        "try:\n"
        "    import kitaru_adapters.pydantic_ai\n"
        "except ImportError as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("MissingDependencyError")
    assert 'pip install "kitaru-adapters[pydantic-ai]"' in result.stdout


def test_served_history_is_identical_to_the_live_one() -> None:
    recorder, counts = Recorder(TWO_TOOLS), {}
    agent = bank_agent(recorder, counts)
    with execution("history"):
        live = asyncio.run(agent.run("hi")).all_messages_json()
    with execution("history"):
        served = asyncio.run(agent.run("hi")).all_messages_json()

    assert _without_times(served) == _without_times(live)
    assert kitaru_core.Client().get_execution("history").run_count == 2


def test_a_tool_gets_a_stable_idempotency_key() -> None:
    recorder = Recorder([ToolCallPart("charge", {"cents": 500}, tool_call_id="c1")])
    keys: list[str] = []
    agent: Agent[None, str] = Agent(recorder.model(), name="billing")

    @agent.tool_plain
    def charge(cents: int) -> str:
        keys.append(kitaru_core.idempotency_key())  # what a payment API would get
        return f"charged {cents}"

    durable(agent)
    with execution("billing-1"):
        assert asyncio.run(agent.run("bill me")).output == "charged 500"
    assert keys == ["billing-1/pydantic_ai:billing:0/tool:charge:c1"]
