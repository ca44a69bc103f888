"""What the OpenAI Agents SDK adapter costs per run, and what a resume saves.

Not a test (pytest does not collect it). Run it with `nox -s bench_openai_agents` or:

    .venv/bin/python tests/benchmarks/bench_openai_agents.py [--runs N]

One agent (two parallel tool calls, then an answer: 2 model calls and 2 tool calls per run)
against the project's scripted OpenAI-compatible server on 127.0.0.1, with a fresh SQLite file
store. It prints medians over N runs of:

1. plain: `Runner.run` of the agent without the adapter,
2. durable: the same run made durable (a new execution each time: 4 checkpoint calls recorded),
3. served: the same execution entered again (every call served from the store: no HTTP request),

and the ratios durable/plain and served/plain. The model server answers in about a millisecond,
so "durable - plain" is the adapter's own overhead; a real model call takes seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from agents import Agent, RunConfig, Runner, function_tool, set_tracing_disabled
from agents.models.openai_provider import OpenAIProvider
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

import kitaru_core
from kitaru_adapters.openai_agents import DurableRunner
from kitaru_core.testing import Rule, Script, ScriptedModelServer, ScriptedToolCall

SCRIPT = Script(
    rules=[
        Rule(
            when_turn=0,
            tool_calls=(ScriptedToolCall("add", {"a": 2, "b": 3}), ScriptedToolCall("add", {"a": 4, "b": 5})),
        ),
        Rule(when_turn=1, text="Sums: {last_tool_result}"),
    ],
    model_names=("gpt-4o-mini",),
)


@function_tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def measure(base_url: str, runs: int) -> dict[str, float]:
    client = AsyncOpenAI(
        base_url=base_url,
        api_key="scripted",
        max_retries=0,
        http_client=DefaultAsyncHttpxClient(limits=httpx.Limits(max_keepalive_connections=0)),
    )
    config = RunConfig(
        model_provider=OpenAIProvider(openai_client=client, use_responses=False), model="gpt-4o-mini"
    )
    agent = Agent(name="calculator", instructions="Add.", tools=[add])
    runner = DurableRunner()
    plain: list[float] = []
    durable: list[float] = []
    served: list[float] = []
    for index in range(runs + 1):  # the first round warms up imports and connections
        started = time.perf_counter()
        await Runner.run(agent, "Add", run_config=config)
        plain_s = time.perf_counter() - started

        started = time.perf_counter()
        with kitaru_core.execution(f"bench-{index}"):
            await runner.run(agent, "Add", run_config=config)
        durable_s = time.perf_counter() - started

        started = time.perf_counter()
        with kitaru_core.execution(f"bench-{index}"):
            result = await runner.run(agent, "Add", run_config=config)
        served_s = time.perf_counter() - started
        assert result.final_output == "Sums: 9", result.final_output
        if index:
            plain.append(plain_s)
            durable.append(durable_s)
            served.append(served_s)
    return {"plain": _median_ms(plain), "durable": _median_ms(durable), "served": _median_ms(served)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    options = parser.parse_args()
    os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
    set_tracing_disabled(True)
    with tempfile.TemporaryDirectory() as directory:
        kitaru_core.configure(
            store_url=f"sqlite:///{Path(directory) / 'bench.db'}",
            artifacts_url=str(Path(directory) / "artifacts"),
        )
        with ScriptedModelServer(SCRIPT) as server:
            figures = asyncio.run(measure(server.base_url, options.runs))
    print(f"runs: {options.runs} (2 model calls + 2 tool calls each), SQLite file store, scripted server")
    print(f"plain run              {figures['plain']:8.2f} ms")
    print(
        f"durable run (recorded) {figures['durable']:8.2f} ms  {figures['durable'] / figures['plain']:5.2f}x plain"
        f"  (+{figures['durable'] - figures['plain']:.2f} ms: open, lease and finish an execution, record 4 calls)"
    )
    print(
        f"served run (resumed)   {figures['served']:8.2f} ms  {figures['served'] / figures['plain']:5.2f}x plain"
    )


if __name__ == "__main__":
    main()
