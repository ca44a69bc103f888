"""Async durable runs never block the event loop on store or artifact I/O (issue 12, "Async").

Each test runs against a deliberately slow store (`tests/_loop_lag.py`: every commit and artifact
access sleeps 150 ms) while a heartbeat task measures the event loop's lag: it stays under 50 ms,
so the store I/O ran on worker threads. Without that, each commit would stall the loop ~150 ms.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

import kitaru_core
from kitaru_core import RetryPolicy, checkpoint, execution, flow, run_checkpoint_async
from kitaru_core._runtime import get_store
from tests._loop_lag import LoopLagMeter, assert_loop_stayed_free, slow_store

counts: Counter[str] = Counter()


@checkpoint
async def fetch(index: int) -> str:
    counts[f"fetch-{index}"] += 1
    await asyncio.sleep(0.001)
    return f"item-{index}-" + "x" * 2000  # over the inline limit: goes to the artifact store


@flow
async def async_pipeline(size: int) -> list[str]:
    return [await fetch(index) for index in range(size)]


@pytest.fixture
def small_inline_store(sqlite_file_store: str) -> str:
    kitaru_core.configure(inline_limit_bytes=1024)
    return sqlite_file_store


def test_async_flow_records_and_serves_without_blocking_the_loop(small_inline_store: str) -> None:
    async def measured(at_least: int) -> list[str]:
        async with LoopLagMeter() as meter:
            result = await async_pipeline.run(2, execution_id="async-io-flow")
        assert_loop_stayed_free(meter, slow, at_least=at_least)
        return result

    counts.clear()
    with slow_store() as slow:
        first = asyncio.run(measured(6))  # lease, 2 artifacts and 2 commits, output, finish
    assert first == [f"item-{index}-" + "x" * 2000 for index in range(2)]
    assert counts == Counter({"fetch-0": 1, "fetch-1": 1})
    with slow_store() as slow:
        assert asyncio.run(measured(1)) == first  # completed: the stored output, read off the loop
    assert counts == Counter({"fetch-0": 1, "fetch-1": 1})


def test_async_execution_block_with_concurrent_calls_keeps_keys_and_loop_free(sqlite_file_store: str) -> None:
    """Concurrent tasks without a discriminator get their keys in the order they reached their calls."""
    seen: list[str] = []

    async def work(label: str) -> str:
        await asyncio.sleep(random.random() / 50)
        seen.append(label)
        return label.upper()

    async def run(labels: list[str]) -> list[str]:
        async with LoopLagMeter() as meter, execution("async-io-block", name="block") as context:
            assert context.execution_id == "async-io-block"
            results = await asyncio.gather(*(run_checkpoint_async("work", work, label) for label in labels))
        assert_loop_stayed_free(meter, slow, at_least=len(labels))
        return results

    labels = [f"task-{index}" for index in range(3)]
    with slow_store() as slow:
        assert asyncio.run(run(labels)) == [label.upper() for label in labels]
    keys = {call.call_key: call for call in get_store().load_calls("async-io-block", include_superseded=False)}
    assert sorted(keys) == [f"work:{index}" for index in range(3)]
    stored = kitaru_core.Client().get_execution("async-io-block")
    assert stored.status == "completed"
    assert [keys[f"work:{index}"].output for index in range(3)] != [None] * 3
    seen.clear()

    async def served() -> list[str]:
        async with execution("async-io-block", name="block"):
            return await asyncio.gather(*(run_checkpoint_async("work", work, label) for label in labels))

    assert asyncio.run(served()) == [label.upper() for label in labels]  # in the same order: nothing runs
    assert seen == []


def test_async_retry_and_started_record_go_through_the_lane(sqlite_file_store: str) -> None:
    attempts: Counter[str] = Counter()

    async def flaky() -> int:
        attempts["flaky"] += 1
        if attempts["flaky"] < 2:
            raise ConnectionError("try again")
        return 7

    async def run() -> int:
        async with LoopLagMeter() as meter, execution("async-io-retry", name="retry"):
            value = await run_checkpoint_async(
                "flaky",
                flaky,
                retry=RetryPolicy(max_attempts=3, initial_delay_s=0.0, retry_on=(ConnectionError,)),
                on_interrupted="ask",
            )
        assert_loop_stayed_free(meter, slow, at_least=3)  # started record, completed record, finish
        return value

    with slow_store() as slow:
        assert asyncio.run(run()) == 7
    assert attempts["flaky"] == 2
    (call,) = get_store().load_calls("async-io-retry", include_superseded=False)
    assert (call.status, call.attempts) == ("completed", 2)


@checkpoint
async def draft(topic: str) -> str:
    await kitaru_core.log_async(topic=topic)  # inside a call: kept with the call's record
    return f"draft about {topic}"


@flow
async def reviewed(topic: str) -> dict[str, object]:
    text = await draft(topic)
    await kitaru_core.log_async(stage="drafted")  # outside a call: written to the execution at once
    version = await kitaru_core.save_async("draft.md", text + "x" * 2000)  # over the inline limit
    approved = await kitaru_core.wait_async("approve", question=f"Publish {text!r}?", timeout=0.05)
    return {"approved": approved, "version": version}


def test_async_log_save_and_wait_keep_the_loop_free(small_inline_store: str) -> None:
    """`log_async`, `save_async` and `wait_async` (polling included) do their store I/O off the loop."""

    async def first_run() -> None:
        async with LoopLagMeter() as meter:
            with pytest.raises(kitaru_core.errors.ExecutionWaitingError):
                await reviewed.run("tides", execution_id="async-io-wait")
        assert_loop_stayed_free(meter, slow, at_least=6)  # lease, call, log, artifact, wait, finish

    with slow_store(0.1) as slow:  # 100 ms a store operation: twice the bound, and a shorter test
        asyncio.run(first_run())
    client = kitaru_core.Client()
    assert [wait.name for wait in client.pending_waits("async-io-wait")] == ["approve"]
    client.answer("async-io-wait", "approve", True)
    assert asyncio.run(reviewed.run("tides", execution_id="async-io-wait")) == {"approved": True, "version": 1}
    detail = client.get_execution("async-io-wait")
    assert detail.metadata == {"stage": "drafted"}
    assert [call.metadata for call in detail.calls] == [{"topic": "tides"}]
    assert kitaru_core.load("async-io-wait", "draft.md") == "draft about tides" + "x" * 2000
    assert [artifact.version for artifact in client.list_artifacts("async-io-wait")] == [1]


def test_async_wait_and_save_outside_an_execution_say_so() -> None:
    with pytest.raises(kitaru_core.errors.ConfigurationError, match="needs an execution"):
        asyncio.run(kitaru_core.wait_async(question="Go?"))
    with pytest.raises(kitaru_core.errors.ConfigurationError, match="needs an execution"):
        asyncio.run(kitaru_core.save_async("a", 1))
