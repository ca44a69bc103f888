"""Runs one generated program of checkpoint calls: the subject of the crash fuzz (test_crash_fuzz.py).

Usage: `python crash_fuzz_program.py PROGRAM.json LOG EXECUTION_ID`, with the store named by
`KITARU_STORE_URL` / `KITARU_ARTIFACTS_URL`. Prints the flow's output as JSON.

A program is `{"async": bool, "steps": [step, ...]}`; a step is one of
- `{"kind": "call", "name": str, "sleep_ms": int}`: a checkpoint call;
- `{"kind": "nested", "name": str, "sleep_ms": int, "steps": [...]}`: a checkpoint call whose
  body makes the inner steps' calls (children of its key);
- `{"kind": "gather", "steps": [...]}`: the inner steps at once (asyncio.gather in an async
  program, threads in a sync one); their names are unique, so their keys do not depend on order.

Every body appends `start <call key>` to LOG before it works and `end <call key>` after, and takes
the value of the call before it as an argument, so the next call's input fingerprint depends on
what the previous call returned (or was served).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kitaru_core import checkpoint, flow, idempotency_key

PROGRAM: dict[str, Any] = json.loads(open(sys.argv[1], encoding="utf-8").read())  # noqa: SIM115
LOG = sys.argv[2]
EXECUTION_ID = sys.argv[3]


def log(event: str) -> None:
    descriptor = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, f"{event} {idempotency_key().split('/', 1)[1]}\n".encode())
    finally:
        os.close(descriptor)


def value_of(name: str, previous: Any, inner: list[Any]) -> dict[str, Any]:
    """A value that depends on the call, its input, and its children's values."""
    total = (previous["total"] if isinstance(previous, dict) else 0) * 31 + sum(ord(c) for c in name)
    total += sum(item["total"] for item in inner)
    return {"name": name, "total": total % 1_000_003, "parts": [item["name"] for item in inner]}


# -- sync --------------------------------------------------------------------------------------------


def run_steps(steps: list[dict[str, Any]], previous: Any) -> Any:
    for step in steps:
        previous = run_step(step, previous)
    return previous


def run_step(step: dict[str, Any], previous: Any) -> Any:
    if step["kind"] == "gather":
        with ThreadPoolExecutor(max_workers=len(step["steps"])) as pool:
            futures = [
                pool.submit(contextvars.copy_context().run, run_step, inner, previous)
                for inner in step["steps"]
            ]
            results = [future.result() for future in futures]
        return {"name": "gather", "total": sum(item["total"] for item in results) % 1_000_003, "parts": []}

    def body(previous: Any) -> dict[str, Any]:
        log("start")
        time.sleep(step["sleep_ms"] / 1000)
        inner = [run_step(child, previous) for child in step.get("steps", [])]
        log("end")
        return value_of(step["name"], previous, inner)

    return checkpoint(name=step["name"])(body)(previous)


# -- async -------------------------------------------------------------------------------------------


async def run_steps_async(steps: list[dict[str, Any]], previous: Any) -> Any:
    for step in steps:
        previous = await run_step_async(step, previous)
    return previous


async def run_step_async(step: dict[str, Any], previous: Any) -> Any:
    if step["kind"] == "gather":
        results = await asyncio.gather(*(run_step_async(inner, previous) for inner in step["steps"]))
        return {"name": "gather", "total": sum(item["total"] for item in results) % 1_000_003, "parts": []}

    async def body(previous: Any) -> dict[str, Any]:
        log("start")
        await asyncio.sleep(step["sleep_ms"] / 1000)
        inner = [await run_step_async(child, previous) for child in step.get("steps", [])]
        log("end")
        return value_of(step["name"], previous, inner)

    return await checkpoint(name=step["name"])(body)(previous)


@flow(name="crash-fuzz")
def program() -> Any:
    return run_steps(PROGRAM["steps"], None)


@flow(name="crash-fuzz-async")
async def program_async() -> Any:
    return await run_steps_async(PROGRAM["steps"], None)


if __name__ == "__main__":
    if PROGRAM["async"]:
        output = asyncio.run(program_async.run(execution_id=EXECUTION_ID))
    else:
        output = program.run(execution_id=EXECUTION_ID)
    print(json.dumps(output, sort_keys=True))
