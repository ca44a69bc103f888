"""Checkpoint semantics of the durable core (design §4.1-4.4, 4.7, 4.8).

The main resume semantics run on every backend (`store_url`: SQLite in memory, SQLite file,
PostgreSQL); the rest on a fresh SQLite file (`sqlite_file_store`).
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import text

import kitaru_core
from kitaru_core import Client, RetryPolicy, checkpoint, current_execution, flow, idempotency_key
from kitaru_core._runtime import copy_context_run, get_store
from kitaru_core._store import Store
from kitaru_core.errors import ConfigurationError, DivergenceError, SerializationError


class Crash(Exception):
    """Simulates a crash of the program in the middle of a flow."""


# -- module-level types and flows (importable: used for typed decoding and `Client().resume`) -----


class Ticket(BaseModel):
    id: int
    tags: list[str]


@dataclass
class Point:
    x: int
    y: int


class Opaque:
    """A plain class JSON cannot represent."""

    def __init__(self, value: int) -> None:
        self.value = value


dbos_counts: Counter[str] = Counter()


@checkpoint
def dbos_step(index: int) -> int:
    dbos_counts[f"step-{index}"] += 1
    return index + 100


@flow
def dbos_flow(count: int) -> int:
    dbos_counts["flow"] += 1
    return sum(dbos_step(index) for index in range(count))


# -- helpers ---------------------------------------------------------------------------------------


def executions_of(flow_object: Any) -> list[str]:
    return [summary.id for summary in Client().list_executions(flow=flow_object.name)]


def only_execution(flow_object: Any) -> str:
    ids = executions_of(flow_object)
    assert len(ids) == 1, ids
    return ids[0]


def calls_by_key(execution_id: str) -> dict[str, Any]:
    return {
        call.key: call for call in Client().get_execution(execution_id).calls if call.status != "superseded"
    }


# -- resume after a crash (all backends) ----------------------------------------------------------

N_STEPS = 5


@pytest.mark.parametrize("crash_at", [0, 3])
def test_rerun_after_crash_resumes_without_rerunning_completed_calls(store_url: str, crash_at: int) -> None:
    counts: Counter[int] = Counter()
    state: dict[str, int | None] = {"crash_at": crash_at}

    @checkpoint
    def step(index: int, salt: str) -> str:
        counts[index] += 1
        return f"{salt}-{index * 10}"

    @flow
    def pipeline(steps: int, salt: str) -> list[str]:
        results = []
        for index in range(steps):
            if state["crash_at"] == index:
                raise Crash(f"crash before call {index}")
            results.append(step(index, salt))
        return results

    with pytest.raises(Crash):
        pipeline(N_STEPS, "s")
    execution_id = only_execution(pipeline)
    assert dict(counts) == {index: 1 for index in range(crash_at)}
    assert Client().get_execution(execution_id).status == "failed"

    state["crash_at"] = None
    resumed = pipeline(N_STEPS, "s")

    assert only_execution(pipeline) == execution_id
    assert dict(counts) == {index: 1 for index in range(N_STEPS)}  # none ran twice, the rest ran once
    detail = Client().get_execution(execution_id)
    assert detail.status == "completed"
    assert detail.run_count == 2
    assert [call.key for call in detail.calls] == [f"step:{index}" for index in range(N_STEPS)]
    assert [call.source for call in detail.calls] == ["store"] * crash_at + ["live"] * (N_STEPS - crash_at)

    uninterrupted = pipeline.run(N_STEPS, "s", fresh=True)
    assert resumed == uninterrupted == [f"s-{index * 10}" for index in range(N_STEPS)]
    assert len(executions_of(pipeline)) == 2
    assert dict(counts) == {index: 2 for index in range(N_STEPS)}  # the fresh execution ran everything


def test_completed_execution_flipped_back_resumes_by_client_without_running_checkpoints(
    store_url: str,
) -> None:
    dbos_counts.clear()
    assert dbos_flow(3) == 303
    execution_id = only_execution(dbos_flow)
    assert dbos_flow.entry_point is not None
    assert dbos_flow.entry_point.endswith(":dbos_flow")
    assert dbos_counts == Counter({"flow": 1, "step-0": 1, "step-1": 1, "step-2": 1})

    store = get_store()
    with store.engine.begin() as connection:
        connection.execute(
            text("UPDATE kitaru_executions SET status = 'running' WHERE id = :id"), {"id": execution_id}
        )
    assert Client().get_execution(execution_id).status == "running"

    assert Client().resume(execution_id) == 303
    assert dbos_counts == Counter({"flow": 2, "step-0": 1, "step-1": 1, "step-2": 1})
    detail = Client().get_execution(execution_id)
    assert detail.status == "completed"
    assert detail.run_count == 2
    assert {call.source for call in detail.calls} == {"store"}


def test_output_is_committed_before_the_call_returns(store_url: str, tmp_path: Any) -> None:
    settings = kitaru_core.configure()
    readers = [Client().store]
    if store_url != "sqlite://":  # an in-memory database cannot be opened by a second engine
        readers.append(Store(store_url, settings.resolved_artifacts_url(), inline_limit_bytes=1024))
    observed: list[tuple[str, list[list[str]]]] = []

    def snapshot(label: str) -> None:
        context = current_execution()
        assert context is not None
        observed.append(
            (
                label,
                [[call.call_key for call in reader.load_calls(context.execution_id)] for reader in readers],
            )
        )

    @checkpoint
    def step(index: int) -> int:
        snapshot(f"inside {index}")
        return index

    @flow
    def two_steps() -> int:
        step(0)
        snapshot("after 0")
        step(1)
        snapshot("after 1")
        return 1

    try:
        assert two_steps() == 1
    finally:
        for reader in readers[1:]:
            reader.close()
    width = len(readers)
    assert observed == [
        ("inside 0", [[]] * width),
        ("after 0", [["step:0"]] * width),
        ("inside 1", [["step:0"]] * width),
        ("after 1", [["step:0", "step:1"]] * width),
    ]


# -- stable keys -----------------------------------------------------------------------------------


def test_occurrence_discriminators_count_per_name(sqlite_file_store: str) -> None:
    @checkpoint
    def alpha(value: int) -> int:
        return value

    @checkpoint(name="beta")
    def second(value: int) -> int:
        return value

    @flow
    def interleaved() -> int:
        return alpha(1) + second(2) + alpha(3) + alpha(4) + second(5)

    assert interleaved() == 15
    execution_id = only_execution(interleaved)
    keys = [call.key for call in Client().get_execution(execution_id).calls]
    assert keys == ["alpha:0", "beta:0", "alpha:1", "alpha:2", "beta:1"]


def test_nested_checkpoints_get_parent_child_keys_and_inner_calls_are_served(sqlite_file_store: str) -> None:
    counts: Counter[str] = Counter()
    state = {"crash": True}

    @checkpoint
    def inner(value: int) -> int:
        counts[f"inner-{value}"] += 1
        return value * 2

    @checkpoint
    def outer(value: int) -> int:
        counts["outer"] += 1
        total = inner(value) + inner(value + 1)
        if state["crash"]:
            raise Crash("outer crashes after its inner calls returned")
        return total

    @flow
    def nested() -> int:
        return outer(1) + outer(10)

    with pytest.raises(Crash):
        nested()
    execution_id = only_execution(nested)
    state["crash"] = False
    assert nested() == (2 + 4) + (20 + 22)
    assert only_execution(nested) == execution_id
    # the inner calls of the first outer call were committed before the crash: served, not rerun
    assert counts == Counter({"outer": 3, "inner-1": 1, "inner-2": 1, "inner-10": 1, "inner-11": 1})
    calls = calls_by_key(execution_id)
    assert set(calls) == {
        "outer:0",
        "outer:0/inner:0",
        "outer:0/inner:1",
        "outer:1",
        "outer:1/inner:0",
        "outer:1/inner:1",
    }
    assert calls["outer:0/inner:0"].source == "store"
    assert calls["outer:0"].source == "live"
    history = [(call.key, call.status) for call in Client().get_execution(execution_id).calls]
    assert ("outer:0", "superseded") in history  # the failed attempt is kept in history


def test_discriminator_gives_stable_keys_for_calls_made_in_threads(store_url: str) -> None:
    counts: Counter[int] = Counter()
    state = {"crash": True, "run": 0}
    items = list(range(8))

    @checkpoint(discriminator=lambda item: f"item-{item}")
    def work(item: int) -> int:
        time.sleep(random.random() / 200)
        counts[item] += 1
        return item * item

    @flow
    def fan_out(values: list[int]) -> dict[int, int]:
        state["run"] += 1
        order = list(values)
        random.Random(state["run"]).shuffle(order)
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {}
            for position, item in enumerate(order):
                if position % 2:
                    futures[item] = pool.submit(copy_context_run(work), item)
                else:
                    futures[item] = pool.submit(contextvars.copy_context().run, work, item)
            results = {item: future.result() for item, future in futures.items()}
        if state["crash"]:
            raise Crash("crash after every thread finished")
        return results

    with pytest.raises(Crash):
        fan_out(items)
    execution_id = only_execution(fan_out)
    state["crash"] = False
    assert fan_out(items) == {item: item * item for item in items}
    assert counts == Counter(dict.fromkeys(items, 1))
    detail = Client().get_execution(execution_id)
    assert sorted(call.key for call in detail.calls) == sorted(f"work:item-{item}" for item in items)
    assert {call.source for call in detail.calls} == {"store"}


def test_discriminator_gives_stable_keys_for_asyncio_gather(store_url: str) -> None:
    counts: Counter[str] = Counter()
    state = {"crash": True, "run": 0}
    names = ["a", "b", "c", "d", "e", "f"]

    @checkpoint(discriminator=lambda name: name)
    async def fetch(name: str) -> str:
        await asyncio.sleep(random.random() / 100)
        counts[name] += 1
        return name.upper()

    @flow
    async def gather_all(values: list[str]) -> list[str]:
        state["run"] += 1
        order = list(values)
        random.Random(state["run"]).shuffle(order)
        results = await asyncio.gather(*(fetch(name) for name in order))
        if state["crash"]:
            raise Crash("crash after gather")
        return sorted(results)

    with pytest.raises(Crash):
        asyncio.run(gather_all(names))
    execution_id = only_execution(gather_all)
    state["crash"] = False
    assert asyncio.run(gather_all(names)) == [name.upper() for name in names]
    assert counts == Counter(dict.fromkeys(names, 1))
    detail = Client().get_execution(execution_id)
    assert sorted(call.key for call in detail.calls) == [f"fetch:{name}" for name in names]
    assert {call.source for call in detail.calls} == {"store"}


# -- fingerprints: no stale answers ----------------------------------------------------------------


def test_changed_arguments_run_live_and_the_old_record_is_superseded(store_url: str) -> None:
    counts: Counter[int] = Counter()
    state = {"argument": 1, "crash": True}

    @checkpoint
    def step(value: int) -> int:
        counts[value] += 1
        return value * 10

    @flow
    def diverging() -> int:
        result = step(state["argument"])
        if state["crash"]:
            raise Crash("crash after step")
        return result

    with pytest.raises(Crash):
        diverging()
    execution_id = only_execution(diverging)
    state.update(argument=2, crash=False)
    assert diverging() == 20
    assert only_execution(diverging) == execution_id
    assert counts == Counter({1: 1, 2: 1})
    calls = Client().get_execution(execution_id).calls
    assert [(call.key, call.status, call.output_preview) for call in calls] == [
        ("step:0", "superseded", "10"),
        ("step:0", "completed", "20"),
    ]


def test_on_divergence_error_raises_divergence_error(sqlite_file_store: str) -> None:
    counts: Counter[int] = Counter()
    state = {"argument": 1, "crash": True}

    @checkpoint(on_divergence="error")
    def strict_step(value: int) -> int:
        counts[value] += 1
        return value * 10

    @flow
    def strict() -> int:
        result = strict_step(state["argument"])
        if state["crash"]:
            raise Crash("crash after step")
        return result

    with pytest.raises(Crash):
        strict()
    execution_id = only_execution(strict)
    state.update(argument=2, crash=False)
    with pytest.raises(DivergenceError) as caught:
        strict()
    error = caught.value
    assert (error.execution_id, error.call_key) == (execution_id, "strict_step:0")
    assert error.stored_fingerprint != error.new_fingerprint
    assert counts == Counter({1: 1})  # the diverging call did not run
    calls = Client().get_execution(execution_id).calls
    assert [(call.key, call.status) for call in calls] == [("strict_step:0", "completed")]


def test_inputs_without_a_fingerprint_fall_back_to_key_only_matching(sqlite_file_store: str) -> None:
    counts: Counter[str] = Counter()
    state = {"crash": True, "value": 1}

    @checkpoint
    def uses_opaque(thing: Opaque) -> int:
        counts["ran"] += 1
        return thing.value

    @flow
    def opaque_inputs() -> int:
        result = uses_opaque(Opaque(state["value"]))
        if state["crash"]:
            raise Crash("crash")
        return result

    with pytest.raises(Crash):
        opaque_inputs()
    state.update(crash=False, value=2)
    assert opaque_inputs() == 1  # served by key: no fingerprint to compare
    assert counts == Counter({"ran": 1})
    (call,) = get_store().load_calls(only_execution(opaque_inputs))
    assert call.fingerprint is None



def test_an_iterator_argument_reaches_the_body_unread(sqlite_file_store: str) -> None:
    """Fingerprinting must not consume a generator argument (it did: the body summed nothing)."""

    @checkpoint
    def total(items: Iterator[int], *, scale: int) -> int:
        return scale * sum(items)

    @flow
    def sums() -> int:
        return total((n for n in range(4)), scale=2) + total(iter([10, 20]), scale=1)

    assert sums() == 12 + 30
    calls = get_store().load_calls(only_execution(sums))
    assert [(call.call_key, call.fingerprint) for call in calls] == [("total:0", None), ("total:1", None)]
    assert sums() == 42  # completed: served


# -- explicit execution ids ------------------------------------------------------------------------


def test_explicit_execution_id_is_an_idempotency_key(sqlite_file_store: str) -> None:
    counts: Counter[str] = Counter()

    @checkpoint
    def charge(amount: int) -> str:
        counts["charge"] += 1
        return f"charged {amount}"

    @flow
    def billing(amount: int) -> str:
        counts["body"] += 1
        return charge(amount)

    @flow
    def other_flow(amount: int) -> int:
        return amount

    assert billing.run(5, execution_id="ticket-42") == "charged 5"
    assert billing.run(5, execution_id="ticket-42") == "charged 5"
    assert counts == Counter({"body": 1, "charge": 1})  # the second call returned the stored output
    assert Client().get_execution("ticket-42").run_count == 1

    with pytest.raises(ConfigurationError, match="ticket-42"):
        other_flow.run(5, execution_id="ticket-42")
    assert executions_of(other_flow) == []


def test_fresh_starts_a_new_execution_even_when_an_unfinished_one_exists(sqlite_file_store: str) -> None:
    counts: Counter[str] = Counter()
    state = {"crash": True}

    @checkpoint
    def step() -> str:
        counts["step"] += 1
        return "done"

    @flow
    def job(name: str) -> str:
        result = step()
        if state["crash"]:
            raise Crash("crash")
        return result

    with pytest.raises(Crash):
        job("x")
    crashed_id = only_execution(job)
    state["crash"] = False
    assert job.run("x", fresh=True) == "done"
    assert counts == Counter({"step": 2})  # the fresh execution served nothing
    ids = executions_of(job)
    assert len(ids) == 2
    fresh_id = next(execution_id for execution_id in ids if execution_id != crashed_id)
    assert Client().get_execution(fresh_id).status == "completed"
    assert Client().get_execution(crashed_id).status == "failed"
    # a plain re-run still resumes the crashed execution
    assert job("x") == "done"
    assert counts == Counter({"step": 2})
    assert Client().get_execution(crashed_id).status == "completed"


# -- async -----------------------------------------------------------------------------------------


def test_async_flow_with_async_and_sync_checkpoints_resumes_after_crash(store_url: str) -> None:
    counts: Counter[str] = Counter()
    state = {"crash": True}

    @checkpoint
    async def fetch(index: int) -> int:
        await asyncio.sleep(0)
        counts[f"fetch-{index}"] += 1
        return index

    @checkpoint
    def total(values: list[int]) -> int:
        counts["total"] += 1
        return sum(values)

    @flow
    async def async_pipeline(count: int) -> int:
        values = [await fetch(index) for index in range(count)]
        if state["crash"]:
            raise Crash("crash after fetches")
        return total(values)

    with pytest.raises(Crash):
        asyncio.run(async_pipeline(3))
    execution_id = only_execution(async_pipeline)
    state["crash"] = False
    assert asyncio.run(async_pipeline(3)) == 3
    assert only_execution(async_pipeline) == execution_id
    assert counts == Counter({"fetch-0": 1, "fetch-1": 1, "fetch-2": 1, "total": 1})
    detail = Client().get_execution(execution_id)
    assert detail.status == "completed"
    assert [call.source for call in detail.calls] == ["store", "store", "store", "live"]
    assert asyncio.run(async_pipeline.run(3, execution_id=execution_id)) == 3  # completed: stored output
    assert counts["total"] == 1


# -- retries and recorded errors -------------------------------------------------------------------


def test_retry_policy_retries_until_success_and_records_attempts(sqlite_file_store: str) -> None:
    attempts: Counter[str] = Counter()

    @checkpoint(retry=RetryPolicy(max_attempts=3, initial_delay_s=0))
    def flaky() -> str:
        attempts["flaky"] += 1
        if attempts["flaky"] < 3:
            raise ConnectionError(f"attempt {attempts['flaky']} failed")
        return "ok"

    @flow
    def retrying() -> str:
        return flaky()

    assert retrying() == "ok"
    assert attempts == Counter({"flaky": 3})
    (call,) = Client().get_execution(only_execution(retrying)).calls
    assert (call.status, call.attempts, call.error) == ("completed", 3, None)


def test_failure_is_recorded_and_rerun_resumes_the_failed_call(sqlite_file_store: str) -> None:
    attempts: Counter[str] = Counter()
    state = {"fail": True}

    @checkpoint
    def prepare() -> int:
        attempts["prepare"] += 1
        return 1

    @checkpoint(retry=RetryPolicy(max_attempts=3, initial_delay_s=0, retry_on=(ConnectionError,)))
    def submit(value: int) -> int:
        attempts["submit"] += 1
        if state["fail"]:
            raise ValueError("bad payload 17")
        return value + 1

    @flow
    def submitting() -> int:
        return submit(prepare())

    with pytest.raises(ValueError, match="bad payload 17"):
        submitting()
    assert attempts == Counter({"prepare": 1, "submit": 1})  # not retryable: failed at once
    execution_id = only_execution(submitting)
    detail = Client().get_execution(execution_id)
    assert detail.status == "failed"
    assert detail.error == "ValueError: bad payload 17"
    failed = calls_by_key(execution_id)["submit:0"]
    assert (failed.status, failed.attempts, failed.error) == ("failed", 1, "ValueError: bad payload 17")
    stored = {call.call_key: call for call in get_store().load_calls(execution_id)}["submit:0"]
    assert stored.error_type == "ValueError"
    assert stored.error_traceback is not None
    assert "Traceback" in stored.error_traceback
    assert "in submit" in stored.error_traceback

    state["fail"] = False
    assert submitting() == 2
    assert only_execution(submitting) == execution_id
    assert attempts == Counter({"prepare": 1, "submit": 2})
    history = [(call.key, call.status) for call in Client().get_execution(execution_id).calls]
    assert history == [("prepare:0", "completed"), ("submit:0", "superseded"), ("submit:0", "completed")]
    assert Client().get_execution(execution_id).status == "completed"


def test_exhausted_retries_record_every_attempt(sqlite_file_store: str) -> None:
    attempts: Counter[str] = Counter()

    @checkpoint(retry=RetryPolicy(max_attempts=3, initial_delay_s=0))
    def always_down() -> None:
        attempts["down"] += 1
        raise ConnectionError("still down")

    @flow
    def hopeless() -> None:
        always_down()

    with pytest.raises(ConnectionError):
        hopeless()
    assert attempts == Counter({"down": 3})
    (call,) = Client().get_execution(only_execution(hopeless)).calls
    assert (call.status, call.attempts, call.error) == ("failed", 3, "ConnectionError: still down")


def test_client_exposes_the_recorded_traceback(sqlite_file_store: str) -> None:
    @checkpoint
    def broken() -> None:
        raise RuntimeError("boom")

    @flow
    def failing() -> None:
        broken()

    with pytest.raises(RuntimeError):
        failing()
    detail = Client().get_execution(only_execution(failing))
    call = detail.calls[0].model_dump()
    assert "Traceback" in str(call.get("error_traceback") or call.get("traceback"))


# -- serialization ---------------------------------------------------------------------------------


def test_models_dataclasses_and_dicts_round_trip_typed(sqlite_file_store: str) -> None:
    counts: Counter[str] = Counter()
    state = {"crash": True}
    seen: list[list[Any]] = []

    @checkpoint
    def typed_ticket() -> Ticket:
        counts["typed_ticket"] += 1
        return Ticket(id=1, tags=["a"])

    @checkpoint
    def typed_point() -> Point:
        counts["typed_point"] += 1
        return Point(1, 2)

    @checkpoint
    def typed_mapping() -> dict[str, list[Ticket]]:
        counts["typed_mapping"] += 1
        return {"open": [Ticket(id=2, tags=[]), Ticket(id=3, tags=["x", "y"])]}

    @checkpoint
    def untyped_ticket():
        counts["untyped_ticket"] += 1
        return Ticket(id=4, tags=["z"])

    @checkpoint
    def untyped_point():
        counts["untyped_point"] += 1
        return Point(5, 6)

    @checkpoint
    def untyped_dict():
        counts["untyped_dict"] += 1
        return {"numbers": [1, 2.5], "nested": {"none": None, "flag": True}}

    makers = [typed_ticket, typed_point, typed_mapping, untyped_ticket, untyped_point, untyped_dict]

    @flow
    def build() -> None:
        seen.append([maker() for maker in makers])
        if state["crash"]:
            raise Crash("crash after building")

    with pytest.raises(Crash):
        build()
    state["crash"] = False
    build()
    assert counts == Counter({maker.name: 1 for maker in makers})
    live, resumed = seen
    assert resumed == live
    assert [type(value) for value in resumed] == [Ticket, Point, dict, Ticket, Point, dict]
    assert all(type(ticket) is Ticket for ticket in resumed[2]["open"])


def test_non_json_output_is_refused_with_a_pickle_hint(sqlite_file_store: str) -> None:
    counts: Counter[str] = Counter()

    @checkpoint
    def opaque() -> Any:
        counts["opaque"] += 1
        return Opaque(1)

    @flow
    def refusing() -> None:
        opaque()

    with pytest.raises(SerializationError, match="allow_pickle=True") as caught:
        refusing()
    assert "Opaque" in str(caught.value)
    execution_id = only_execution(refusing)
    assert get_store().load_calls(execution_id) == []  # nothing unsafe was stored
    assert Client().get_execution(execution_id).status == "failed"


def test_pickle_opt_in_round_trips_and_is_refused_when_read_without_opt_in(sqlite_file_store: str) -> None:
    counts: Counter[str] = Counter()
    state = {"crash": True, "pickle": True}
    seen: list[Any] = []

    def make_opaque(value: int):  # no return annotation: see the annotated case below
        counts["make"] += 1
        return Opaque(value)

    pickling = checkpoint(name="opaque", allow_pickle=True)(make_opaque)
    not_pickling = checkpoint(name="opaque")(make_opaque)

    @flow
    def pickled() -> int:
        maker = pickling if state["pickle"] else not_pickling
        value = maker(7)
        seen.append(value)
        if state["crash"]:
            raise Crash("crash after the pickled call")
        return value.value

    with pytest.raises(Crash):
        pickled()
    execution_id = only_execution(pickled)
    (call,) = get_store().load_calls(execution_id)
    assert call.output is not None
    assert call.output.format == "pickle"

    state["pickle"] = False
    with pytest.raises(SerializationError, match="pickle"):
        pickled()
    assert counts == Counter({"make": 1})

    state.update(pickle=True, crash=False)
    assert pickled() == 7
    assert counts == Counter({"make": 1})  # served from the store, unpickled
    assert isinstance(seen[-1], Opaque)
    assert seen[-1] is not seen[0]


@pytest.mark.parametrize("allow_pickle", [True, False])
def test_annotated_plain_class_output_pickles_or_is_refused_at_decoration(
    sqlite_file_store: str, allow_pickle: bool
) -> None:
    if not allow_pickle:
        with pytest.raises(ConfigurationError, match="allow_pickle=True"):

            @checkpoint(allow_pickle=allow_pickle)
            def refused() -> Opaque:
                return Opaque(3)

        return

    @checkpoint(allow_pickle=allow_pickle)
    def annotated() -> Opaque:
        return Opaque(3)

    @flow
    def annotated_flow() -> int:
        return annotated().value

    assert annotated_flow() == 3


def test_large_outputs_go_to_the_artifact_store_and_come_back(store_url: str) -> None:
    counts: Counter[str] = Counter()
    state = {"crash": True}
    large = "x" * 5000
    seen: list[tuple[str, str]] = []

    @checkpoint
    def big() -> str:
        counts["big"] += 1
        return large

    @checkpoint
    def small() -> str:
        counts["small"] += 1
        return "y"

    @flow
    def sized() -> int:
        pair = (big(), small())
        seen.append(pair)
        if state["crash"]:
            raise Crash("crash")
        return len(pair[0])

    with pytest.raises(Crash):
        sized()
    execution_id = only_execution(sized)
    store = get_store()
    stored = {call.call_key: call.output for call in store.load_calls(execution_id)}
    big_value, small_value = stored["big:0"], stored["small:0"]
    assert big_value is not None
    assert small_value is not None
    assert big_value.payload is None
    assert big_value.reference is not None
    assert big_value.size_bytes == len(large) + 2
    assert store.artifacts.get(big_value.reference) == f'"{large}"'.encode()
    assert (small_value.payload, small_value.reference) == (b'"y"', None)

    state["crash"] = False
    assert sized() == 5000
    assert counts == Counter({"big": 1, "small": 1})
    assert seen[1] == (large, "y")


# -- idempotency keys ------------------------------------------------------------------------------


def test_idempotency_key_is_execution_and_call_key_and_stable_on_resume(sqlite_file_store: str) -> None:
    keys: list[str] = []
    state = {"crash_inside": True}

    @checkpoint
    def send_email(to: str) -> str:
        keys.append(idempotency_key())
        if state["crash_inside"]:
            raise Crash("crash while the call is in flight")
        return f"sent to {to}"

    @checkpoint
    def outer() -> str:
        keys.append(idempotency_key())
        return send_email("a@example.com")

    @flow
    def mailer() -> str:
        with pytest.raises(ConfigurationError):
            idempotency_key()  # inside the flow but outside any checkpoint call
        return outer()

    with pytest.raises(Crash):
        mailer()
    execution_id = only_execution(mailer)
    state["crash_inside"] = False
    assert mailer() == "sent to a@example.com"
    assert keys == [f"{execution_id}/outer:0", f"{execution_id}/outer:0/send_email:0"] * 2
    with pytest.raises(ConfigurationError, match="idempotency_key"):
        idempotency_key()


# -- outside an execution, and `execution(...)` blocks --------------------------------------------


def test_checkpoint_outside_an_execution_just_runs(sqlite_file_store: str) -> None:
    counts: Counter[str] = Counter()

    @checkpoint
    def plain(value: int) -> int:
        counts["plain"] += 1
        assert current_execution() is None
        with pytest.raises(ConfigurationError):
            idempotency_key()
        return value + 1

    @checkpoint
    async def plain_async(value: int) -> int:
        counts["plain_async"] += 1
        return value + 2

    assert plain(1) == 2
    assert plain(1) == 2
    assert asyncio.run(plain_async(1)) == 3
    assert counts == Counter({"plain": 2, "plain_async": 1})
    assert Client().list_executions() == []


def test_execution_block_records_calls_and_reentering_serves_them(sqlite_file_store: str) -> None:
    counts: Counter[str] = Counter()

    @checkpoint
    def lookup(order: str) -> dict[str, str]:
        counts[order] += 1
        return {"order": order, "state": "shipped"}

    results = []
    for _ in range(2):
        with kitaru_core.execution("ticket-7") as context:
            assert context.execution_id == "ticket-7"
            results.append([lookup("A"), lookup("B")])

    assert (
        results[0] == results[1] == [{"order": "A", "state": "shipped"}, {"order": "B", "state": "shipped"}]
    )
    assert counts == Counter({"A": 1, "B": 1})
    detail = Client().get_execution("ticket-7")
    assert detail.status == "completed"
    assert detail.run_count == 2
    assert [(call.key, call.source) for call in detail.calls] == [
        ("lookup:0", "store"),
        ("lookup:1", "store"),
    ]
