"""A durable two-agent refund desk on the OpenAI Agents SDK (the runnable example; tests use it too).

    python examples/openai_agents_refund_desk.py [--base-url URL] [--counter-file F]
        [--mode sync|async|stream] [--crash-after K] [--timeline]

Without `--base-url` it starts the project's scripted OpenAI-compatible server on 127.0.0.1 with
the script below, so it runs offline. `durable(triage_agent)` is the one added line.

A triage agent hands off to a refund agent; the handoff callback draws a random ticket number
into the run context (like the SDK's customer-service example); the refund agent looks up two
orders in parallel, then refunds one (its tool asserts the ticket is set). Each tool body
appends a line to the counter file, so a test can count how often each really ran.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
from pathlib import Path
from typing import Any

from _runner_support import crash_after
from agents import Agent, RunConfig, RunContextWrapper, Runner, function_tool, handoff
from agents.models.openai_provider import OpenAIProvider
from openai import AsyncOpenAI
from pydantic import BaseModel

from kitaru_adapters.openai_agents import durable
from kitaru_core import Client
from kitaru_core.cli import print_timeline
from kitaru_core.testing import Rule, Script, ScriptedModelServer, ScriptedToolCall

PROMPT = "Refund my order 7, please"

SCRIPT = Script(
    rules=[
        Rule(
            when_tools_offered="transfer_to_refunds",
            tool_calls=(ScriptedToolCall("transfer_to_refunds", {}),),
        ),
        Rule(
            when_tools_offered="lookup_order",
            when_last_tool_result_contains="assistant",
            tool_calls=(
                ScriptedToolCall("lookup_order", {"order_id": 7}),
                ScriptedToolCall("lookup_order", {"order_id": 8}),
            ),
        ),
        Rule(
            when_tools_offered="lookup_order",
            when_last_tool_result_contains="order 8",
            tool_calls=(ScriptedToolCall("refund", {"order_id": 7, "amount": 25}),),
        ),
        Rule(when_tools_offered="lookup_order", text="Done: {last_tool_result}"),
    ],
    model_names=("gpt-4o-mini",),
)


class Desk(BaseModel):
    """The run context: the handoff callback draws the ticket, the refund tool needs it."""

    ticket: int | None = None
    refunded: list[int] = []


COUNTER: Path | None = None


def _count(line: str) -> None:
    if COUNTER is not None:
        with COUNTER.open("a") as file:
            file.write(line + "\n")
            file.flush()
            os.fsync(file.fileno())


@function_tool
async def lookup_order(order_id: int) -> str:
    """Look up an order."""
    _count(f"lookup_order {order_id}")
    await asyncio.sleep(0.01 * (order_id % 3))
    return f"order {order_id}: 25 USD, delivered"


@function_tool
def refund(context: RunContextWrapper[Desk], order_id: int, amount: int) -> str:
    """Refund an order."""
    assert context.context.ticket is not None, "the handoff must have drawn a ticket"
    _count(f"refund {order_id}")
    context.context.refunded.append(order_id)
    return f"refunded {amount} USD for order {order_id} under ticket {context.context.ticket}"


async def open_ticket(context: RunContextWrapper[Desk]) -> None:
    """The handoff callback: a random ticket number, as in the SDK's customer-service example."""
    context.context.ticket = random.randint(1000, 9999)
    print(f"drew ticket {context.context.ticket}", flush=True)


refund_agent = Agent[Desk](name="Refunds", instructions="Refund orders.", tools=[lookup_order, refund])
triage_agent = Agent[Desk](
    name="Triage",
    instructions="Send refund requests to the refund desk.",
    handoffs=[handoff(refund_agent, on_handoff=open_ticket, tool_name_override="transfer_to_refunds")],
)


async def run(mode: str, config: RunConfig, desk: Desk) -> Any:
    if mode == "stream":
        streamed = Runner.run_streamed(triage_agent, PROMPT, context=desk, run_config=config)
        async for _event in streamed.stream_events():
            pass
        return streamed
    return await Runner.run(triage_agent, PROMPT, context=desk, run_config=config)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", help="an OpenAI-compatible server; default: start the scripted one")
    parser.add_argument("--counter-file", type=Path)
    parser.add_argument("--mode", choices=["sync", "async", "stream"], default="async")
    parser.add_argument("--crash-after", type=int, help="SIGKILL after the K-th committed checkpoint call")
    parser.add_argument("--timeline", action="store_true", help="print the execution's timeline at the end")
    options = parser.parse_args()
    if options.base_url is None:
        with ScriptedModelServer(SCRIPT) as server:
            options.base_url = server.base_url
            return run_desk(options)
    return run_desk(options)


def run_desk(options: argparse.Namespace) -> int:
    """Run the desk once against `options.base_url`; print its output (and timeline)."""
    global COUNTER
    COUNTER = options.counter_file
    if options.crash_after:
        crash_after(options.crash_after)
    client = AsyncOpenAI(base_url=options.base_url, api_key="scripted", max_retries=0)
    config = RunConfig(
        model_provider=OpenAIProvider(openai_client=client, use_responses=False), model="gpt-4o-mini"
    )
    durable(triage_agent)
    desk = Desk()
    if options.mode == "sync":
        result = Runner.run_sync(triage_agent, PROMPT, context=desk, run_config=config)
    else:
        result = asyncio.run(run(options.mode, config, desk))
    print(f"output={result.final_output}")
    print(f"last_agent={result.last_agent.name} ticket={desk.ticket} refunded={desk.refunded}")
    if options.timeline:
        client = Client()
        print_timeline(client.get_execution(client.list_executions(limit=1)[0].id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
