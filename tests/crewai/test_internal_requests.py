"""Requests CrewAI sends past the agents' LLM slots are checkpoint calls too, served on resume.

Counted on the wire at the scripted model server: structured-output conversion (`output_json`
through `InternalInstructor` and the provider SDK, `output_pydantic` through the LLM's
`response_model`, the ReAct form through a plain request), an LLM the adapter never wrapped
(built inside a step), and a planner built without `planning_llm`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from crewai import LLM, Agent, Crew, Task
from crewai.tools import tool
from pydantic import BaseModel

from kitaru_adapters.crewai import durable
from kitaru_core import Client, execution
from kitaru_core.testing import Rule, Script, ScriptedModelServer, ScriptedToolCall, read_request_log

from .conftest import DESK


class OrderSummary(BaseModel):
    order_id: int
    amount_usd: int


SUMMARY = {"order_id": 7, "amount_usd": 25}


@tool("lookup_order")
def lookup_order(order_id: int) -> str:
    """Look up an order's amount."""
    return f"order {order_id}: 25 USD"


LOOKUP_RULES = [
    # Native: the agent asks for the tool, then answers in prose (not JSON), so CrewAI converts it.
    Rule(
        when_conversation_contains="Current Task: Look up order 7",
        when_tools_offered="lookup_order",
        when_turn=0,
        tool_calls=(ScriptedToolCall("lookup_order", {"order_id": 7}),),
    ),
    Rule(
        when_conversation_contains="Current Task: Look up order 7",
        when_tools_offered="lookup_order",
        text="Order 7 costs 25 USD.",
    ),
    # ReAct: the same through Action:/Final Answer: text.
    Rule(
        when_conversation_contains="Current Task: Look up order 7",
        when_turn=0,
        text='Thought: I look it up.\nAction: lookup_order\nAction Input: {"order_id": 7}',
    ),
    Rule(
        when_conversation_contains="Current Task: Look up order 7",
        text="Thought: I know it.\nFinal Answer: Order 7 costs 25 USD.",
    ),
]
CONVERSION_RULES = [
    # `output_json` with a function-calling LLM: instructor forces a tool named after the model.
    Rule(when_tools_offered="OrderSummary", tool_calls=(ScriptedToolCall("OrderSummary", SUMMARY),)),
    # `output_pydantic` (the LLM's response_model) and the ReAct form: JSON text.
    Rule(
        when_conversation_contains="Preserve the original content", text='{"order_id": 7, "amount_usd": 25}'
    ),
]
REPORT_RULE = Rule(when_conversation_contains="Current Task: Report", text="Reported.")
FIRST_RUN = Script(rules=[*LOOKUP_RULES, *CONVERSION_RULES], model_names=("gpt-4o-mini",))
"""No rule for the second task: its request fails (HTTP 500) and so does the kickoff."""
FULL = Script(rules=[*LOOKUP_RULES, REPORT_RULE, *CONVERSION_RULES], model_names=("gpt-4o-mini",))


def _crew(base_url: str, mode: str, output: str) -> Crew:
    """Look up (structured `output`: `json`, `pydantic`, or `guardrail` for a guardrail instead), then report."""
    llm: Any = (
        DESK["TextOnlyLLM"](model="gpt-4o-mini", base_url=base_url, api_key="scripted", max_retries=0)
        if mode == "react"
        else LLM(model="openai/gpt-4o-mini", base_url=base_url, api_key="scripted", max_retries=0)
    )
    clerk = Agent(role="Clerk", goal="Look up", backstory="Exact.", llm=llm, tools=[lookup_order])
    structured: dict[str, Any] = {
        "json": {"output_json": OrderSummary},
        "pydantic": {"output_pydantic": OrderSummary},
        "guardrail": {"guardrail": "The answer names an amount in USD."},
    }[output]
    lookup = Task(
        name="lookup",
        description="Look up order 7.",
        expected_output="The amount.",
        agent=clerk,
        **structured,
    )
    report = Task(name="report", description="Report the amount.", expected_output="A line.", agent=clerk)
    return Crew(name="converter", agents=[clerk], tasks=[lookup, report])


def _conversions(log: Path, script: Script) -> list[dict[str, Any]]:
    """The conversion requests a server with `script` logged."""
    indexes = {script.rules.index(rule) for rule in CONVERSION_RULES}
    return [request for request in read_request_log(log) if request["matched_rule"] in indexes]


@pytest.mark.parametrize(
    ("mode", "output"),
    # Not ReAct with `output_json`: CrewAI 1.15 itself fails there, with or without the adapter
    # (`Converter.to_json` returns `json.dumps` of the LLM's text, a JSON string, not an object).
    [("native", "json"), ("native", "pydantic"), ("react", "pydantic")],
)
def test_structured_output_conversion_is_recorded_and_served_on_resume(
    sqlite_file_store: str, tmp_path: Path, mode: str, output: str
) -> None:
    first_log, second_log = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    with (
        ScriptedModelServer(FIRST_RUN, request_log_path=first_log) as server,
        pytest.raises(Exception, match="No rule of the script"),
    ):
        durable(_crew(server.base_url, mode, output)).kickoff()
    # The conversion request was sent once, by the path CrewAI takes for this mode and output.
    (conversion,) = _conversions(first_log, FIRST_RUN)
    assert conversion["tool_calls"] == (["OrderSummary"] if (mode, output) == ("native", "json") else [])
    (summary,) = Client().list_executions()
    assert Client().get_execution(summary.id).status == "failed"
    # Every request that got an answer is a completed model call, the conversion included.
    answered = [request for request in read_request_log(first_log) if request["status"] == 200]
    completed = [
        call
        for call in Client().get_execution(summary.id).calls
        if call.kind == "model" and call.status == "completed"
    ]
    assert len(completed) == len(answered)

    with ScriptedModelServer(FULL, request_log_path=second_log) as server:
        result = durable(_crew(server.base_url, mode, output)).kickoff()
    # On resume only the second task's request goes out: the conversion is served from the store.
    assert _conversions(second_log, FULL) == []
    assert [request["matched_rule"] for request in read_request_log(second_log)] == [
        FULL.rules.index(REPORT_RULE)
    ]
    lookup_output = result.tasks_output[0]
    if output == "json":
        assert lookup_output.json_dict == SUMMARY
    else:
        assert lookup_output.pydantic == OrderSummary(**SUMMARY)
    detail = Client().get_execution(summary.id)
    assert detail.status == "completed"
    assert detail.run_count == 2


UNWRAPPED = Script(rules=[Rule(text="A haiku about refunds.")], model_names=("gpt-4o-mini",))


@pytest.mark.parametrize("script", [UNWRAPPED])
def test_an_llm_the_adapter_never_wrapped_is_recorded_inside_an_execution(
    sqlite_file_store: str, model_server: Any
) -> None:
    # `durable()` was used once in this process; an LLM built and called inside an execution (a
    # flow step's own `LLM(...).call`, an internal LLM of CrewAI's) is a checkpoint call.
    durable(DESK["build_crew"](model_server.base_url, "native"))
    for _ in range(2):
        with execution("haiku"):
            llm = LLM(model="openai/gpt-4o-mini", base_url=model_server.base_url, api_key="k", max_retries=0)
            assert llm.call("Write a haiku.") == "A haiku about refunds."
    assert len(model_server.requests()) == 1
    (call,) = Client().get_execution("haiku").calls
    assert call.kind == "model"
    assert call.key.startswith("llm:")
    # Outside an execution the LLM is left alone.
    LLM(model="openai/gpt-4o-mini", base_url=model_server.base_url, api_key="k").call("Write a haiku.")
    assert len(model_server.requests()) == 2


PLAN = '{"list_of_plans_per_task": [{"task_number": 1, "task": "Look up order 7.", "plan": "Use the tool."}]}'
PLAN_RULE = Rule(when_conversation_contains="Create the most descriptive plan", text=PLAN)
MODELS = ("gpt-4o-mini", "gpt-5.4-mini")  # CrewAI's planner defaults to gpt-5.4-mini


def test_planning_without_planning_llm_is_recorded_and_served_on_resume(
    sqlite_file_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `planning=True` without `planning_llm`: CrewAI builds its planner's LLM itself (the default
    # model, reached through OPENAI_BASE_URL here), an LLM `durable()` never sees.
    first_log, second_log = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    runs = [
        (Script(rules=[PLAN_RULE, *FIRST_RUN.rules], model_names=MODELS), first_log),
        (Script(rules=[PLAN_RULE, *FULL.rules], model_names=MODELS), second_log),
    ]
    for index, (script, log) in enumerate(runs):
        with ScriptedModelServer(script, request_log_path=log) as server:
            monkeypatch.setenv("OPENAI_BASE_URL", f"{server.base_url}")
            monkeypatch.setenv("OPENAI_API_KEY", "scripted")
            crew = _crew(server.base_url, "native", "json")
            crew.planning = True
            if index == 0:
                with pytest.raises(Exception, match="No rule of the script"):
                    durable(crew).kickoff()
            else:
                durable(crew).kickoff()
    planned = [request for request in read_request_log(first_log) if request["matched_rule"] == 0]
    assert [request["model"] for request in planned] == ["gpt-5.4-mini"]
    # The resumed kickoff asks neither the planner nor the converter again.
    assert [request["matched_rule"] for request in read_request_log(second_log)] == [
        1 + FULL.rules.index(REPORT_RULE)
    ]
    (summary,) = Client().list_executions()
    assert Client().get_execution(summary.id).status == "completed"


GUARDRAIL_RULE = Rule(
    when_conversation_contains="complies with the given guardrail", text='{"valid": true, "feedback": null}'
)


def test_a_guardrail_llms_request_is_recorded_and_served_on_resume(
    sqlite_file_store: str, tmp_path: Path
) -> None:
    # `Task(guardrail="...")`: CrewAI validates the answer with an `LLMGuardrail`, an agent of its
    # own built on the task agent's LLM, asking for a structured `LLMGuardrailResult`.
    first_log, second_log = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first = Script(rules=[GUARDRAIL_RULE, *LOOKUP_RULES], model_names=("gpt-4o-mini",))
    full = Script(rules=[GUARDRAIL_RULE, *LOOKUP_RULES, REPORT_RULE], model_names=("gpt-4o-mini",))
    with (
        ScriptedModelServer(first, request_log_path=first_log) as server,
        pytest.raises(Exception, match="No rule of the script"),
    ):
        durable(_crew(server.base_url, "native", "guardrail")).kickoff()
    assert [request["matched_rule"] for request in read_request_log(first_log)].count(0) == 1
    with ScriptedModelServer(full, request_log_path=second_log) as server:
        assert durable(_crew(server.base_url, "native", "guardrail")).kickoff().raw == "Reported."
    # Only the second task's request: the guardrail's was served.
    assert [request["matched_rule"] for request in read_request_log(second_log)] == [
        full.rules.index(REPORT_RULE)
    ]
