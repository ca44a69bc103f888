"""One store contract, run on SQLite in memory, SQLite on disk and PostgreSQL (the `store_url` fixture)."""

from __future__ import annotations

import json
import os
import time

import pytest

from kitaru_core import _runtime
from kitaru_core._store import Store
from kitaru_core.errors import (
    ExecutionNotFoundError,
    StoreError,
    WaitAlreadyAnsweredError,
    WaitNotFoundError,
)


@pytest.fixture
def store(store_url: str) -> Store:
    return _runtime.get_store()


def _call_values(execution_id: str, key: str, sequence: int, **extra: object) -> dict[str, object]:
    values: dict[str, object] = {
        "execution_id": execution_id,
        "call_key": key,
        "name": key.split(":")[0],
        "kind": "user",
        "sequence": sequence,
        "status": "completed",
        "fingerprint": "f" * 64,
        "output_format": "json",
        "output": b"1",
        "attempts": 1,
        "run_number": 1,
        "started_at_epoch_s": time.time(),
        "ended_at_epoch_s": time.time(),
    }
    values.update(extra)
    return values


def test_execution_round_trip_and_missing(store: Store) -> None:
    record = store.create_execution(
        "e1", flow_name="flow", entry_point="m:f", inputs_fingerprint="a" * 64, inputs=None
    )
    assert record.status == "running"
    assert record.run_count == 0
    assert store.get_execution("e1").flow_name == "flow"
    assert store.find_execution("nope") is None
    with pytest.raises(ExecutionNotFoundError, match="nope"):
        store.get_execution("nope")
    with pytest.raises(StoreError, match="exists already"):
        store.create_execution("e1", flow_name="flow", entry_point=None, inputs_fingerprint=None, inputs=None)


def test_find_resumable_picks_newest_unfinished_with_same_inputs(store: Store) -> None:
    for index, status in enumerate(["completed", "failed", "waiting", "cancelled"]):
        store.create_execution(
            f"e{index}", flow_name="flow", entry_point=None, inputs_fingerprint="x", inputs=None
        )
        assert store.try_acquire_lease(
            f"e{index}", expected_owner=None, owner=f"o{index}", host="h", pid=1, lease_duration_s=30
        )
        store.finish_execution(f"e{index}", f"o{index}", status=status)  # type: ignore[arg-type]
        time.sleep(0.002)
    found = store.find_resumable("flow", "x")
    assert found is not None
    assert found.id == "e3"  # the newest cancelled one: callers refuse it rather than start over silently
    assert found.status == "cancelled"
    store.create_execution("e9", flow_name="flow", entry_point=None, inputs_fingerprint="x", inputs=None)
    store.try_acquire_lease("e9", expected_owner=None, owner="o9", host="h", pid=1, lease_duration_s=30)
    store.finish_execution("e9", "o9", status="completed")
    newest = store.find_resumable("flow", "x")
    assert newest is not None
    assert newest.id == "e3"  # completed executions are never resumed
    assert store.find_resumable("flow", "other") is None
    assert store.find_resumable("other", "x") is None


def test_lease_is_compare_and_set(store: Store) -> None:
    store.create_execution("e", flow_name="flow", entry_point=None, inputs_fingerprint=None, inputs=None)
    assert store.try_acquire_lease("e", expected_owner=None, owner="a", host="h", pid=1, lease_duration_s=30)
    # a second runner that read the row before the first took it cannot take it with a stale view
    assert not store.try_acquire_lease(
        "e", expected_owner=None, owner="b", host="h", pid=2, lease_duration_s=30
    )
    assert store.try_acquire_lease("e", expected_owner="a", owner="b", host="h", pid=2, lease_duration_s=30)
    record = store.get_execution("e")
    assert (record.lease_owner, record.lease_pid, record.run_count) == ("b", 2, 2)
    assert store.renew_lease("e", "b", 30) == (True, False)
    assert store.renew_lease("e", "a", 30) == (False, False)
    assert not store.finish_execution("e", "a", status="completed")
    assert store.finish_execution("e", "b", status="completed")
    done = store.get_execution("e")
    assert done.status == "completed"
    assert done.lease_owner is None
    assert done.ended_at_epoch_s is not None


def test_cancel_without_runner_is_immediate_and_with_runner_is_flagged(store: Store) -> None:
    store.create_execution("idle", flow_name="flow", entry_point=None, inputs_fingerprint=None, inputs=None)
    assert store.request_cancel("idle").status == "cancelled"
    store.create_execution("busy", flow_name="flow", entry_point=None, inputs_fingerprint=None, inputs=None)
    store.try_acquire_lease("busy", expected_owner=None, owner="a", host="h", pid=1, lease_duration_s=30)
    flagged = store.request_cancel("busy")
    assert flagged.status == "running"
    assert flagged.cancel_requested
    assert store.renew_lease("busy", "a", 30) == (True, True)
    with pytest.raises(ExecutionNotFoundError):
        store.request_cancel("missing")


def test_mark_crashed_is_compare_and_set_on_the_lease_owner(store: Store) -> None:
    store.create_execution("dead", flow_name="flow", entry_point=None, inputs_fingerprint=None, inputs=None)
    store.try_acquire_lease("dead", expected_owner=None, owner="a", host="h", pid=1, lease_duration_s=0.01)
    store.create_execution("live", flow_name="flow", entry_point=None, inputs_fingerprint=None, inputs=None)
    store.try_acquire_lease("live", expected_owner=None, owner="b", host="h", pid=1, lease_duration_s=60)
    # "live" changed hands (owner b) since it was judged dead with owner "stale": it is left alone
    assert store.mark_crashed([("dead", "a"), ("live", "stale")], message="gone") == ["dead"]
    assert store.get_execution("dead").status == "failed"
    assert store.get_execution("dead").error_message == "gone"
    assert store.get_execution("live").status == "running"


def test_calls_are_recorded_in_order_and_superseded(store: Store) -> None:
    store.create_execution("e", flow_name="flow", entry_point=None, inputs_fingerprint=None, inputs=None)
    store.try_acquire_lease("e", expected_owner=None, owner="a", host="h", pid=1, lease_duration_s=30)
    first = store.record_call(_call_values("e", "step:0", 1), lease=("e", "a"))
    store.record_call(_call_values("e", "step:1", 2, details=json.dumps({"tool": "x"})), lease=("e", "a"))
    replacement = store.record_call(
        _call_values("e", "step:0", 3, fingerprint="0" * 64), supersede_ids=[first]
    )
    assert replacement > first
    live = store.load_calls("e")
    assert [(call.call_key, call.sequence) for call in live] == [("step:1", 2), ("step:0", 3)]
    assert live[0].details == {"tool": "x"}
    everything = store.load_calls("e", include_superseded=True)
    assert [call.status for call in everything] == ["superseded", "completed", "completed"]
    store.mark_served([replacement], run_number=2)
    assert {call.call_key: call.last_served_run for call in store.load_calls("e")} == {
        "step:1": None,
        "step:0": 2,
    }


def test_record_call_refuses_a_runner_without_the_lease(store: Store) -> None:
    store.create_execution("e", flow_name="flow", entry_point=None, inputs_fingerprint=None, inputs=None)
    store.try_acquire_lease("e", expected_owner=None, owner="a", host="h", pid=1, lease_duration_s=30)
    assert store.record_call(_call_values("e", "step:0", 1), lease=("e", "intruder")) == -1
    assert store.load_calls("e") == []


def test_large_values_go_to_the_artifact_store_and_corruption_is_reported(store: Store) -> None:
    small = store.prepare_value("json", b"[1]")
    assert small.payload == b"[1]"
    assert small.reference is None
    payload = json.dumps(["x" * 100] * 50).encode()
    large = store.prepare_value("json", payload)
    assert large.payload is None
    assert large.reference is not None
    assert store.load_value(large) == payload
    filesystem = store.artifacts._fs()
    with filesystem.open(store.artifacts._path(large.reference), "wb") as handle:
        handle.write(b"tampered")
    with pytest.raises(StoreError, match="Corrupt artifact"):
        store.load_value(large)


def test_waits_answer_once_and_refused_answers_keep_it_pending(store: Store) -> None:
    store.create_execution("e", flow_name="flow", entry_point=None, inputs_fingerprint=None, inputs=None)
    created = store.create_wait(
        "e", "approve", call_key="/", question="ok?", schema={"type": "boolean"}, details=None
    )
    again = store.create_wait(
        "e", "approve", call_key="/", question="ok?", schema={"type": "boolean"}, details=None
    )
    assert created.id == again.id
    assert created.status == "pending"
    answered = store.answer_wait("e", "approve", "true")
    assert (answered.status, answered.answer) == ("answered", True)
    with pytest.raises(WaitAlreadyAnsweredError):
        store.answer_wait("e", "approve", "false")
    store.refuse_answer("e", "approve", ["value: not what the flow expects"])
    pending = store.find_wait("e", "approve")
    assert pending is not None
    assert pending.status == "pending"
    assert pending.answer is None
    assert pending.refused_answers == [{"answer": True, "problems": ["value: not what the flow expects"]}]
    with pytest.raises(WaitNotFoundError, match="approve"):
        store.answer_wait("e", "other", "true")
    assert [wait.name for wait in store.list_waits("e", status="pending")] == ["approve"]


def test_corrupt_wait_record_is_reported_not_skipped(store: Store) -> None:
    from sqlalchemy import update

    from kitaru_core import _tables

    store.create_execution("e", flow_name="flow", entry_point=None, inputs_fingerprint=None, inputs=None)
    store.create_wait("e", "w", call_key="/", question="?", schema={"type": "boolean"}, details=None)
    with store.engine.begin() as connection:
        connection.execute(update(_tables.waits).values(schema="{not json"))
    with pytest.raises(StoreError, match="Corrupt record"):
        store.list_waits("e")


def test_list_executions_filters_and_pages(store: Store) -> None:
    for index in range(5):
        store.create_execution(
            f"e{index}",
            flow_name="a" if index % 2 else "b",
            entry_point=None,
            inputs_fingerprint=None,
            inputs=None,
        )
        time.sleep(0.002)
    assert [record.id for record in store.list_executions(limit=2)] == ["e4", "e3"]
    assert [record.id for record in store.list_executions(limit=2, offset=2)] == ["e2", "e1"]
    assert [record.id for record in store.list_executions(flow_name="a")] == ["e3", "e1"]
    assert store.list_executions(statuses=["completed"]) == []
    cutoff = store.get_execution("e3").created_at_epoch_s
    assert [record.id for record in store.list_executions(created_after_epoch_s=cutoff)] == ["e4", "e3"]


def test_concurrent_writers_from_threads_all_land(store: Store) -> None:
    import threading

    store.create_execution("e", flow_name="flow", entry_point=None, inputs_fingerprint=None, inputs=None)
    store.try_acquire_lease(
        "e", expected_owner=None, owner="a", host="h", pid=os.getpid(), lease_duration_s=30
    )

    def write(start: int) -> None:
        for index in range(start, start + 20):
            store.record_call(_call_values("e", f"step:{index}", index + 1), lease=("e", "a"))

    threads = [threading.Thread(target=write, args=(start,)) for start in (0, 20, 40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.load_calls("e")) == 60
