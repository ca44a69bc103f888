"""A durable two-agent order desk on CrewAI (the runnable example; the tests use it too).

    python examples/crewai_order_desk.py [--base-url URL] [--mode native|react] [--approve] [--review]
        [--counter-file F] [--crash-after K] [--timeline] [--async]

Without `--base-url` it starts the project's scripted OpenAI-compatible server on 127.0.0.1 with
the script below, so it runs offline. `durable(crew, ...)` is the one added line.

A clerk looks up two orders (in native tool-calling mode the model asks for both lookups in one
turn and CrewAI runs them in parallel on its thread pool), then a refund agent refunds one; with
`--approve` the refund waits for a person's decision (a durable wait: the process stops, answer
with `kitaru-adapters executions answer`, run again). With `--review` the refund task has
`human_input=True`: CrewAI's request for feedback on its final answer becomes a durable wait too
(an empty answer accepts). `--mode react` gives the agents an LLM
without native tool calling, so CrewAI drives the tools through ReAct text
(`Action:`/`Action Input:`). Each tool body appends a line to the counter file, so a test can
count how often each really ran.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from _runner_support import EXIT_WAITING, crash_after
from crewai import LLM, Agent, Crew, Task
from crewai.llms.providers.openai.completion import OpenAICompletion
from crewai.tools import tool

import kitaru_core
from kitaru_adapters.crewai import durable
from kitaru_core import Client
from kitaru_core.cli import print_timeline
from kitaru_core.testing import Rule, Script, ScriptedModelServer, ScriptedToolCall

LOOKUP_TASK = "Look up orders 7 and 8 and report their amounts."
REFUND_TASK = "Refund order 7 in full, using the amounts found."

NATIVE_SCRIPT = [
    Rule(
        when_tools_offered="lookup_order",
        when_turn=0,
        tool_calls=(
            ScriptedToolCall("lookup_order", {"order_id": 7}),
            ScriptedToolCall("lookup_order", {"order_id": 8}),
        ),
    ),
    Rule(when_tools_offered="lookup_order", text="Order 7: 25 USD. Order 8: 40 USD."),
    Rule(
        when_tools_offered="refund",
        when_turn=0,
        tool_calls=(ScriptedToolCall("refund", {"order_id": 7, "amount": 25}),),
    ),
    Rule(when_tools_offered="refund", text="Done: {last_tool_result}"),
]

REACT_SCRIPT = [
    Rule(
        when_conversation_contains="Look up orders",
        when_turn=0,
        text='Thought: I look up order 7.\nAction: lookup_order\nAction Input: {"order_id": 7}',
    ),
    Rule(
        when_conversation_contains="Look up orders",
        when_turn=1,
        text='Thought: I look up order 8.\nAction: lookup_order\nAction Input: {"order_id": 8}',
    ),
    Rule(
        when_conversation_contains="Look up orders",
        text="Thought: I know both amounts.\nFinal Answer: Order 7: 25 USD. Order 8: 40 USD.",
    ),
    Rule(
        when_conversation_contains="Refund order 7",
        when_turn=0,
        text='Thought: I refund order 7.\nAction: refund\nAction Input: {"order_id": 7, "amount": 25}',
    ),
    Rule(
        when_conversation_contains="Refund order 7",
        text="Thought: The refund went through.\nFinal Answer: Done: refund finished for order 7.",
    ),
]

SCRIPT = Script(rules=[*NATIVE_SCRIPT, *REACT_SCRIPT], model_names=("gpt-4o-mini",))
"""One script for both modes: ReAct requests offer no tools, so `when_tools_offered` tells them apart;
ReAct follow-ups all end with the same prompt, so the task text (`when_conversation_contains`) does."""

AMOUNTS = {7: 25, 8: 40}
COUNTER: Path | None = None


def _count(line: str) -> None:
    if COUNTER is not None:
        with COUNTER.open("a") as file:
            file.write(line + "\n")
            file.flush()
            os.fsync(file.fileno())


@tool("lookup_order")
def lookup_order(order_id: int) -> str:
    """Look up an order's amount."""
    _count(f"lookup_order {order_id}")
    return f"order {order_id}: {AMOUNTS.get(order_id, 0)} USD, delivered"


@tool("refund")
def refund(order_id: int, amount: int) -> str:
    """Refund an order (moves money: the desk may require approval)."""
    _count(f"refund {order_id}")
    return f"refunded {amount} USD for order {order_id}"


class TextOnlyLLM(OpenAICompletion):
    """An OpenAI-compatible LLM that declares no native tool calling, so CrewAI uses ReAct text."""

    def supports_function_calling(self) -> bool:
        """ReAct mode: tools are described in the prompt and called through `Action:` lines."""
        return False


def build_crew(base_url: str, mode: str, *, review: bool = False) -> Crew:
    """The two-agent crew, its LLM pointed at `base_url`."""
    if mode == "react":
        llm: Any = TextOnlyLLM(model="gpt-4o-mini", base_url=base_url, api_key="scripted", max_retries=0)
    else:
        llm = LLM(model="openai/gpt-4o-mini", base_url=base_url, api_key="scripted", max_retries=0)
    clerk = Agent(
        role="Order clerk",
        goal="Find order amounts",
        backstory="You know the order system.",
        llm=llm,
        tools=[lookup_order],
        verbose=False,
    )
    refunder = Agent(
        role="Refund agent",
        goal="Refund orders correctly",
        backstory="You move money carefully.",
        llm=llm,
        tools=[refund],
        verbose=False,
    )
    lookup = Task(name="lookup", description=LOOKUP_TASK, expected_output="The amounts.", agent=clerk)
    refund_task = Task(
        name="refund",
        description=REFUND_TASK,
        expected_output="A confirmation.",
        agent=refunder,
        human_input=review,
    )
    return Crew(name="order_desk", agents=[clerk, refunder], tasks=[lookup, refund_task], verbose=False)


def run_desk(options: argparse.Namespace) -> int:
    """Run the desk once against `options.base_url`; print its output (and timeline)."""
    global COUNTER
    COUNTER = options.counter_file
    if options.crash_after:
        crash_after(options.crash_after)
    crew = build_crew(options.base_url, options.mode, review=options.review)
    crew = durable(crew, approve=["refund"] if options.approve else None)
    try:
        if options.use_async:
            result = asyncio.run(crew.akickoff(inputs={"mode": options.mode}))
        else:
            result = crew.kickoff(inputs={"mode": options.mode})
    except kitaru_core.errors.ExecutionWaitingError as waiting:
        print(waiting, file=sys.stderr)
        return EXIT_WAITING
    print(f"output={result.raw}")
    if options.timeline:
        client = Client()
        print_timeline(client.get_execution(client.list_executions(limit=1)[0].id))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", help="an OpenAI-compatible server; default: start the scripted one")
    parser.add_argument("--mode", choices=["native", "react"], default="native")
    parser.add_argument("--approve", action="store_true", help="the refund waits for approval")
    parser.add_argument("--review", action="store_true", help="a person reviews the refund's answer")
    parser.add_argument("--async", dest="use_async", action="store_true", help="run with akickoff")
    parser.add_argument("--counter-file", type=Path)
    parser.add_argument("--crash-after", type=int, help="SIGKILL after the K-th committed checkpoint call")
    parser.add_argument("--timeline", action="store_true", help="print the execution's timeline at the end")
    options = parser.parse_args()
    if options.base_url is None:
        with ScriptedModelServer(SCRIPT) as server:
            options.base_url = server.base_url
            return run_desk(options)
    return run_desk(options)


if __name__ == "__main__":
    sys.exit(main())
