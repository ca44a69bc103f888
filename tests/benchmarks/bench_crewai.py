"""What the CrewAI adapter costs per kickoff, and what a resume saves.

Not a test (pytest does not collect it). Run it with `nox -s bench_crewai` or:

    python tests/benchmarks/bench_crewai.py [--runs N]

The order desk of `examples/crewai_order_desk.py` in native tool-calling mode (two agents, two
tasks: 4 LLM calls and 3 tool calls per kickoff, two of them in parallel) against the project's
scripted OpenAI-compatible server on 127.0.0.1, with a fresh SQLite file store. It prints medians
over N kickoffs of:

1. plain: `crew.kickoff()` of a crew without the adapter,
2. durable: the same crew made durable (a new execution each time: 7 checkpoint calls recorded),
3. served: the same execution entered again (every call served from the store: no HTTP request),

and the ratios durable/plain and served/plain. The model server answers in about a millisecond,
so "durable - plain" is the adapter's own overhead; a real LLM call takes seconds.
"""

from __future__ import annotations

import argparse
import os
import runpy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")

import kitaru_core
from kitaru_adapters.crewai import durable
from kitaru_core.testing import ScriptedModelServer, read_request_log

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))
DESK: dict[str, Any] = runpy.run_path(str(EXAMPLES / "crewai_order_desk.py"))
OUTPUT = "Done: refunded 25 USD for order 7"


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def measure(base_url: str, runs: int, request_log: Path) -> dict[str, float]:
    build = DESK["build_crew"]
    plain: list[float] = []
    recorded: list[float] = []
    served: list[float] = []
    for index in range(runs + 1):  # the first round warms up imports and connections
        started = time.perf_counter()
        assert build(base_url, "native").kickoff(inputs={"mode": "native"}).raw == OUTPUT
        plain_s = time.perf_counter() - started

        started = time.perf_counter()
        with kitaru_core.execution(f"bench-{index}"):
            durable(build(base_url, "native")).kickoff(inputs={"mode": "native"})
        durable_s = time.perf_counter() - started

        before = len(read_request_log(request_log))
        started = time.perf_counter()
        with kitaru_core.execution(f"bench-{index}"):
            result = durable(build(base_url, "native")).kickoff(inputs={"mode": "native"})
        served_s = time.perf_counter() - started
        assert result.raw == OUTPUT, result.raw
        assert len(read_request_log(request_log)) == before, "a served kickoff made a model request"
        if index:
            plain.append(plain_s)
            recorded.append(durable_s)
            served.append(served_s)
    return {"plain": _median_ms(plain), "durable": _median_ms(recorded), "served": _median_ms(served)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        os.environ["HOME"] = directory  # CrewAI writes under ~/.local/share
        kitaru_core.configure(
            store_url=f"sqlite:///{Path(directory) / 'bench.db'}",
            artifacts_url=str(Path(directory) / "artifacts"),
        )
        log = Path(directory) / "requests.jsonl"
        with ScriptedModelServer(DESK["SCRIPT"], request_log_path=log) as server:
            figures = measure(server.base_url, options.runs, log)
    print(f"kickoffs: {options.runs} (4 LLM calls + 3 tool calls each), SQLite file store, scripted server")
    print(f"plain kickoff              {figures['plain']:8.2f} ms")
    print(
        f"durable kickoff (recorded) {figures['durable']:8.2f} ms  {figures['durable'] / figures['plain']:5.2f}x plain"
        f"  (+{figures['durable'] - figures['plain']:.2f} ms: open, lease and finish an execution, record 7 calls)"
    )
    print(
        f"served kickoff (resumed)   {figures['served']:8.2f} ms  {figures['served'] / figures['plain']:5.2f}x plain"
        "  (no model request, no tool run)"
    )


if __name__ == "__main__":
    main()
