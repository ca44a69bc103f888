"""What the seam self-checks cost at the first `durable()` call, per adapter (prints figures; not a test).

Run with the adapter's environment, e.g. `.nox/tests_langgraph/bin/python tests/benchmarks/bench_seams.py
langgraph`. Prints the first check in a fresh process (it imports what the probes need), then the
median and maximum of repeated checks (the cache reset before each), and a cached call.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time

from kitaru_core.adapters import reset_seam_checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("adapter", choices=["pydantic_ai", "openai_agents", "crewai", "langgraph"])
    parser.add_argument("--repeat", type=int, default=50, help="checks after the first (default 50)")
    arguments = parser.parse_args()
    importlib.import_module(f"kitaru_adapters.{arguments.adapter}")
    seams = importlib.import_module(f"kitaru_adapters.{arguments.adapter}._seams")

    started = time.perf_counter()
    seams.check()
    first_ms = (time.perf_counter() - started) * 1000
    timings_ms: list[float] = []
    for _ in range(arguments.repeat):
        reset_seam_checks()
        started = time.perf_counter()
        seams.check()
        timings_ms.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    seams.check()
    cached_us = (time.perf_counter() - started) * 1e6
    print(
        f"{arguments.adapter}: {len(seams.SEAMS)} seams; first check {first_ms:.1f} ms; "
        f"again: median {statistics.median(timings_ms):.2f} ms, max {max(timings_ms):.2f} ms "
        f"({arguments.repeat} checks); cached call {cached_us:.1f} us"
    )


if __name__ == "__main__":
    main()
