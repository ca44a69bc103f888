"""A one-tool OpenAI Agents SDK agent whose `refund` tool is a side effect, run as a subprocess by tests.

    python side_effect_agent.py --base-url URL --counter-file F [--side-effect refund[=ask|fail|retry]]

`durable(agent, side_effects=[...])` is the line under test. The refund body appends a line to the
counter file (fsync'd, so it survives SIGKILL); with `HANG_IN_REFUND=1` it then prints `INSIDE` and
sleeps, so a test can kill the process inside the tool call. Exit codes: 0 done (prints
`output=...`), 3 waiting (prints the waits as JSON), 4 an interrupted call failed the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from agents import Agent, RunConfig, Runner, function_tool
from agents.models.openai_provider import OpenAIProvider
from openai import AsyncOpenAI

from kitaru_adapters.openai_agents import durable
from kitaru_core.errors import ExecutionWaitingError, InterruptedCallError
from kitaru_core.testing import Rule, Script, ScriptedToolCall

PROMPT = "Refund my order 7, please"

SCRIPT = Script(
    rules=[
        Rule(when_turn=0, tool_calls=(ScriptedToolCall("refund", {"order_id": 7, "amount": 25}),)),
        Rule(when_turn=1, text="Done: {last_tool_result}"),
    ],
    model_names=("gpt-4o-mini",),
)

COUNTER: Path | None = None


@function_tool
def refund(order_id: int, amount: int) -> str:
    """Refund an order."""
    assert COUNTER is not None
    descriptor = os.open(COUNTER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, f"refund {order_id}\n".encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    if os.environ.get("HANG_IN_REFUND") == "1":
        print("INSIDE", flush=True)
        time.sleep(120)
    return f"refunded {amount} USD for order {order_id}"


def main() -> int:
    global COUNTER
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--counter-file", type=Path, required=True)
    parser.add_argument("--side-effect", action="append", default=[])
    options = parser.parse_args()
    COUNTER = options.counter_file
    side_effects: list[str] | dict[str, str] = options.side_effect
    if any("=" in item for item in options.side_effect):
        side_effects = dict(item.partition("=")[::2] for item in options.side_effect)
    agent = durable(
        Agent(name="Refunds", instructions="Refund orders.", tools=[refund]),
        side_effects=side_effects,  # type: ignore[arg-type]
    )
    client = AsyncOpenAI(base_url=options.base_url, api_key="scripted", max_retries=0)
    config = RunConfig(
        model_provider=OpenAIProvider(openai_client=client, use_responses=False), model="gpt-4o-mini"
    )
    try:
        result = asyncio.run(Runner.run(agent, PROMPT, run_config=config))
    except ExecutionWaitingError as waiting:
        print(json.dumps({"execution_id": waiting.execution_id, "waits": waiting.wait_names}), flush=True)
        return 3
    except InterruptedCallError as error:
        print(error, file=sys.stderr)
        return 4
    print(f"output={result.final_output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
