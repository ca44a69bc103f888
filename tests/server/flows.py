"""Flows the server tests run, importable as `tests.server.flows` so the server can resume them."""

from __future__ import annotations

import os
import time

from pydantic import BaseModel, Field

from kitaru_core import CallUsage, checkpoint, flow, request_approval, run_checkpoint, wait
from kitaru_core.testing import Rule, Script, ScriptedToolCall

STEP_DELAY_S = float(os.environ.get("KITARU_TEST_STEP_DELAY_S", "0"))


class Refund(BaseModel):
    """How much to refund."""

    amount: int = Field(ge=1, le=100, description="Dollars, 1 to 100.")
    reason: str | None = None


@checkpoint
def look_up_order(order: str) -> dict[str, object]:
    time.sleep(STEP_DELAY_S)
    return {"order": order, "customer": "ada@example.com", "lines": [f"line {i}" for i in range(60)]}


@checkpoint
def issue_refund(order: str, amount: int) -> str:
    time.sleep(STEP_DELAY_S)
    return f"refunded ${amount} on {order}"


@flow
def refund_order(order: str, amount: int) -> str:
    """Look the order up, ask for approval of the refund tool call, then issue it."""
    found = look_up_order(order)
    decision = request_approval("issue_refund", {"order": order, "amount": amount}, call_id="call-1")
    if not decision.approved:
        return f"refund of {found['order']} denied: {decision.message}"
    return issue_refund(order, amount)


@flow
def typed_refund(order: str) -> str:
    """Ask for a typed answer (validated against `Refund`'s schema)."""
    look_up_order(order)
    refund = wait("refund", question=f"How much should {order} get back?", schema=Refund)
    return issue_refund(order, refund.amount)


@flow
def confirm(order: str) -> bool:
    """A yes/no wait."""
    return wait("confirm", question=f"Ship {order}?", schema=bool)


def _refund_api(order: str, amount: int) -> str:
    """The tool's body: a payment API call."""
    return f"refunded ${amount} on {order}"


def _scripted_model(messages: list[str]) -> dict[str, object]:
    """Stands in for a model: the answer depends only on the conversation so far."""
    time.sleep(STEP_DELAY_S)
    if len(messages) == 1:
        return {
            "tool_call": {
                "name": "issue_refund",
                "id": "call-7",
                "arguments": {"order": messages[0], "amount": 25},
            }
        }
    return {"text": f"Done: {messages[-1]}"}


def _usage(output: dict[str, object]) -> CallUsage:
    return CallUsage(model_name="gpt-4o-mini", input_tokens=812, output_tokens=64, cost_usd=0.000160)


@flow
def refund_agent(order: str) -> str:
    """An agent's shape, as an adapter records it: model call, approved tool call, model call."""
    messages = [order]
    first = run_checkpoint("model_request", _scripted_model, messages, kind="model", usage=_usage)
    call = first["tool_call"]
    assert isinstance(call, dict)
    decision = request_approval(call["name"], call["arguments"], call_id=call["id"])
    if decision.approved:
        outcome = run_checkpoint(
            f"tool:{call['name']}",
            _refund_api,
            order,
            call["arguments"]["amount"],
            discriminator=call["id"],
            kind="tool",
            details={"tool_name": call["name"], "arguments": call["arguments"]},
        )
    else:
        outcome = f"denied: {decision.message}"
    messages.append(outcome)
    final = run_checkpoint("model_request", _scripted_model, messages, kind="model", usage=_usage)
    return str(final["text"])


REFUND_DESK_SCRIPT = Script(
    rules=[
        Rule(
            when_tools_offered="issue_refund",
            when_turn=0,
            tool_calls=(ScriptedToolCall("issue_refund", {"order": "A-2002", "amount": 30}),),
        ),
        Rule(when_turn=1, text="Done: {last_tool_result}"),
    ],
    model_names=("gpt-4o-mini",),
)


@flow
def refund_desk(order: str) -> str:
    """A real OpenAI Agents SDK agent, made durable, whose refund tool needs approval.

    Its model is the scripted server at `KITARU_TEST_MODEL_URL` (started by the test).
    """
    from agents import Agent, RunConfig, Runner, function_tool
    from agents.models.openai_provider import OpenAIProvider
    from openai import AsyncOpenAI

    from kitaru_adapters.openai_agents import durable

    @function_tool
    def issue_refund(order: str, amount: int) -> str:
        """Refund an order."""
        return _refund_api(order, amount)

    agent = durable(
        Agent(name="refund desk", instructions="Refund orders.", tools=[issue_refund]),
        approve=["issue_refund"],
    )
    client = AsyncOpenAI(base_url=os.environ["KITARU_TEST_MODEL_URL"], api_key="scripted", max_retries=0)
    config = RunConfig(
        model_provider=OpenAIProvider(openai_client=client, use_responses=False),
        model="gpt-4o-mini",
        tracing_disabled=True,
    )
    return str(Runner.run_sync(agent, f"Refund order {order}", run_config=config).final_output)


INTERRUPT_NEXT_WIRE: list[bool] = [False]


@checkpoint(on_interrupted="ask")
def wire_money(order: str, amount: int) -> str:
    """A side effect; `INTERRUPT_NEXT_WIRE[0] = True` makes its next body stop halfway (Ctrl-C)."""
    if INTERRUPT_NEXT_WIRE[0]:
        INTERRUPT_NEXT_WIRE[0] = False
        raise KeyboardInterrupt
    return f"wired ${amount} for {order}"


@flow
def wire(order: str, amount: int) -> str:
    """Wire money; an interrupted wire asks a person on resume."""
    return wire_money(order, amount).upper()


# A model that returns hostile tool-call ids. Against a dashboard that did not encode each path
# segment, the lookup's id turned "Approve lookup" in `exec-a` into an approval of `exec-b`'s
# wire_money (the browser resolves the dot segments before it posts).
HOSTILE_WIRE_ID = "w1\"<script>window.hacked=1<img src=x onerror=window.hacked=1>%2F'"
HOSTILE_LOOKUP_ID = "x/../../../exec-b/waits/approve:wire_money:" + HOSTILE_WIRE_ID
HOSTILE_SCRIPT = Script(
    rules=[
        Rule(
            when_last_user_contains="Look up",
            when_turn=0,
            tool_calls=(ScriptedToolCall("lookup", {"order": "1"}, id=HOSTILE_LOOKUP_ID),),
        ),
        Rule(
            when_last_user_contains="Wire",
            when_turn=0,
            tool_calls=(ScriptedToolCall("wire_money", {"amount": 5000}, id=HOSTILE_WIRE_ID),),
        ),
        Rule(when_turn=1, text="Done: {last_tool_result}"),
    ],
    model_names=("gpt-4o-mini",),
)


@flow
def hostile_desk(task: str) -> str:
    """A real OpenAI Agents SDK agent whose two tools need approval; its model (the scripted server at
    `KITARU_TEST_MODEL_URL`) returns the hostile tool-call ids above."""
    from agents import Agent, RunConfig, Runner, function_tool
    from agents.models.openai_provider import OpenAIProvider
    from openai import AsyncOpenAI

    from kitaru_adapters.openai_agents import durable

    @function_tool
    def lookup(order: str) -> str:
        """Look an order up."""
        return f"order {order}: 1 book"

    @function_tool
    def wire_money(amount: int) -> str:
        """Wire money out."""
        return f"wired ${amount}"

    agent = durable(
        Agent(name="desk", instructions="Help.", tools=[lookup, wire_money]),
        approve=["lookup", "wire_money"],
    )
    client = AsyncOpenAI(base_url=os.environ["KITARU_TEST_MODEL_URL"], api_key="scripted", max_retries=0)
    config = RunConfig(
        model_provider=OpenAIProvider(openai_client=client, use_responses=False),
        model="gpt-4o-mini",
        tracing_disabled=True,
    )
    return str(Runner.run_sync(agent, task, run_config=config).final_output)
