"""A real PydanticAI agent with side-effecting tools, run as a subprocess by the crash and approval tests.

    python refund_agent.py --base-url URL --counter-file F [--mode sync|stream] [--approve refund]
                           [--side-effect refund[=ask|fail|retry]] [--crash-after K] [--prompt TEXT]

With `HANG_IN_REFUND=<order id>` in the environment, that refund's body counts its run, prints
`INSIDE` and sleeps, so a test can kill the process inside the tool call.

Each tool body appends one line to the counter file (fsync'd, so it survives SIGKILL). The model
is a chat-completions model at `--base-url` (the scripted model server). The agent runs outside
any flow, so each top-level run is its own execution and re-running the same command resumes it.
Exit codes: 0 done (prints `OUTPUT: ...`), 3 waiting for approval (prints the wait's details).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import openai
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import kitaru_core
from kitaru_adapters.pydantic_ai import durable

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from _runner_support import crash_after

DEFAULT_PROMPT = "Refund order 1 and order 2 if they are late."


def count(counter_file: str, what: str) -> None:
    descriptor = os.open(counter_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, (what + "\n").encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def build_agent(base_url: str, counter_file: str) -> Agent[None, str]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="scripted", max_retries=0)
    agent = Agent(
        OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client)),
        name="refunds",
        instructions="You handle refunds. Look orders up before refunding them.",
    )

    @agent.tool_plain
    def lookup_order(order_id: int) -> str:
        """Look an order up."""
        count(counter_file, f"lookup_order:{order_id}")
        return json.dumps({"order_id": order_id, "late": True, "amount": 10 * order_id})

    @agent.tool_plain
    def refund(order_id: int, amount: int) -> str:
        """Refund an order."""
        count(counter_file, f"refund:{order_id}:{amount}")
        if os.environ.get("HANG_IN_REFUND") == str(order_id):
            print("INSIDE", flush=True)
            time.sleep(120)
        return f"refunded {amount} for order {order_id}"

    return agent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--counter-file", required=True)
    parser.add_argument("--mode", choices=["sync", "stream"], default="sync")
    parser.add_argument("--approve", action="append", default=[])
    parser.add_argument("--side-effect", action="append", default=[])
    parser.add_argument("--crash-after", type=int, default=0)
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    options = parser.parse_args()
    if options.crash_after:
        crash_after(options.crash_after)
    side_effects: list[str] | dict[str, str] = options.side_effect
    if any("=" in item for item in options.side_effect):
        side_effects = dict(item.partition("=")[::2] for item in options.side_effect)
    agent = durable(
        build_agent(options.base_url, options.counter_file),
        approve=options.approve,
        side_effects=side_effects,  # type: ignore[arg-type]
    )
    try:
        if options.mode == "sync":
            output = agent.run_sync(options.prompt).output
        else:

            async def streamed() -> str:
                async with agent.run_stream(options.prompt) as stream:
                    return await stream.get_output()

            output = asyncio.run(streamed())
    except kitaru_core.errors.ExecutionWaitingError as waiting:
        print(json.dumps({"execution_id": waiting.execution_id, "waits": waiting.wait_names}))
        print(waiting, file=sys.stderr)
        return 3
    print(f"OUTPUT: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
