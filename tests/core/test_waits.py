"""`wait()`: suspension, answers validated against the schema, polling, cancellation (design §4.6)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from pydantic import BaseModel

import kitaru_core
from kitaru_core import Client, checkpoint, flow, wait
from kitaru_core.errors import (
    ConfigurationError,
    ExecutionCancelledError,
    ExecutionWaitingError,
    InvalidAnswerError,
    WaitAlreadyAnsweredError,
    WaitNotFoundError,
)

counts: Counter[str] = Counter()


class Refund(BaseModel):
    amount: float
    reason: str


@pytest.fixture(autouse=True)
def _reset_counts() -> None:
    counts.clear()


@checkpoint
def prepare(order: str) -> str:
    counts["prepare"] += 1
    return f"prepared {order}"


@flow
def shipping(order: str) -> str:
    prepared = prepare(order)
    approved = wait("approve", question=f"Ship order {order}?", schema=bool)
    counts["after_wait"] += 1
    return f"{prepared}: {'shipped' if approved else 'held'}"


@flow
def refunding(order: str) -> Refund:
    prepare(order)
    return wait("refund", question="How much do we refund?", schema=Refund)


@flow
def swallowing() -> str:
    try:
        return str(wait("swallow", question="Can you swallow me?"))
    except Exception:
        counts["swallowed"] += 1
        return "swallowed"


@flow
def two_unnamed() -> tuple[bool, str]:
    first = wait(question="First?", schema=bool)
    second = wait(question="Second?", schema=str)
    return first, second


@flow
def reviews(items: list[str]) -> list[bool]:
    return [wait("review", question=f"Is {item} fine?", schema=bool) for item in items]


def waiting_error(flow_object: object, *args: object) -> ExecutionWaitingError:
    with pytest.raises(ExecutionWaitingError) as caught:
        flow_object(*args)  # type: ignore[operator]
    return caught.value


def test_unanswered_wait_suspends_with_instructions_then_a_valid_answer_resumes(
    sqlite_file_store: str,
) -> None:
    error = waiting_error(shipping, "o-1")
    execution_id = error.execution_id
    assert error.wait_names == ["approve"]
    assert error.waits[0].question == "Ship order o-1?"
    assert error.waits[0].schema == {"type": "boolean"}
    message = str(error)
    assert "Ship order o-1?" in message
    assert f"kitaru-adapters executions answer {execution_id} approve --value 'true'" in message
    assert f"kitaru-adapters executions resume {execution_id}" in message
    assert counts == Counter({"prepare": 1})
    client = Client()
    assert client.get_execution(execution_id).status == "waiting"
    assert [(view.execution_id, view.name, view.status) for view in client.pending_waits()] == [
        (execution_id, "approve", "pending")
    ]

    with pytest.raises(InvalidAnswerError) as refused:
        client.answer(execution_id, "approve", "yes")
    assert "not of type 'boolean'" in str(refused.value)
    assert "stays pending" in str(refused.value)
    assert [view.name for view in client.pending_waits(execution_id)] == ["approve"]
    assert waiting_error(shipping, "o-1").execution_id == execution_id  # still waiting on a re-run
    assert counts == Counter({"prepare": 1})

    answered = client.answer(execution_id, "approve", True)
    assert (answered.status, answered.answer) == ("answered", True)
    assert client.pending_waits(execution_id) == []
    assert shipping("o-1") == "prepared o-1: shipped"
    assert counts == Counter({"prepare": 1, "after_wait": 1})  # the checkpoint before the wait did not rerun
    assert [summary.id for summary in client.list_executions()] == [execution_id]
    detail = client.get_execution(execution_id)
    assert detail.status == "completed"
    assert detail.run_count == 3
    assert [(wait.name, wait.status, wait.answer) for wait in detail.waits] == [("approve", "answered", True)]


def test_custom_pydantic_schema_is_validated_and_returned_typed(sqlite_file_store: str) -> None:
    error = waiting_error(refunding, "o-2")
    schema = error.waits[0].schema
    assert schema["title"] == "Refund"
    assert set(schema["required"]) == {"amount", "reason"}
    client = Client()
    with pytest.raises(InvalidAnswerError) as missing:
        client.answer(error.execution_id, "refund", {"amount": 12.5})
    assert missing.value.problems == ["value: 'reason' is a required property"]
    with pytest.raises(InvalidAnswerError) as wrong_type:
        client.answer(error.execution_id, "refund", {"amount": "lots", "reason": "late"})
    assert wrong_type.value.problems == ["amount: 'lots' is not of type 'number'"]
    assert [view.status for view in client.pending_waits(error.execution_id)] == ["pending"]

    client.answer(error.execution_id, "refund", {"amount": 12.5, "reason": "late"})
    result = refunding("o-2")
    assert result == Refund(amount=12.5, reason="late")
    assert type(result) is Refund
    assert counts == Counter({"prepare": 1})


def test_except_exception_cannot_swallow_the_suspension(sqlite_file_store: str) -> None:
    error = waiting_error(swallowing)
    assert error.wait_names == ["swallow"]
    assert counts["swallowed"] == 0
    assert Client().get_execution(error.execution_id).status == "waiting"


def test_wait_with_timeout_polls_and_continues_in_the_same_run(sqlite_file_store: str) -> None:
    kitaru_core.configure(wait_poll_interval_s=0.05)
    answered_at: list[float] = []

    def answer_later() -> None:
        client = Client()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pending = client.pending_waits()
            if pending:
                time.sleep(0.3)
                client.answer(pending[0].execution_id, pending[0].name, True)
                answered_at.append(time.monotonic())
                return
            time.sleep(0.02)

    @flow
    def polling() -> bool:
        return wait("poll", question="Go?", timeout=5.0)

    answerer = threading.Thread(target=answer_later)
    answerer.start()
    started = time.monotonic()
    try:
        assert polling() is True
    finally:
        answerer.join(timeout=10)
    returned = time.monotonic()
    assert answered_at, "the answering thread never saw the pending wait"
    assert 0.3 <= returned - started < 2.0
    assert returned - answered_at[0] < 0.5  # picked up within a few poll intervals
    (summary,) = Client().list_executions()
    detail = Client().get_execution(summary.id)
    assert (detail.status, detail.run_count) == ("completed", 1)  # never suspended


def test_wait_timeout_without_an_answer_suspends(sqlite_file_store: str) -> None:
    kitaru_core.configure(wait_poll_interval_s=0.05)

    @flow
    def impatient() -> bool:
        return wait("nobody", question="Anyone?", timeout=0.2)

    started = time.monotonic()
    error = waiting_error(impatient)
    assert 0.2 <= time.monotonic() - started < 2.0
    assert error.wait_names == ["nobody"]


def test_wait_outside_an_execution_is_a_configuration_error(sqlite_file_store: str) -> None:
    with pytest.raises(ConfigurationError, match="inside a @flow"):
        wait(question="Nobody to suspend?")
    assert Client().list_executions() == []


def test_two_waits_in_one_run_get_distinct_names(sqlite_file_store: str) -> None:
    client = Client()
    first = waiting_error(two_unnamed)
    assert first.wait_names == ["wait-1"]
    client.answer(first.execution_id, "wait-1", False)
    second = waiting_error(two_unnamed)
    assert second.execution_id == first.execution_id
    assert second.wait_names == ["wait-2"]
    client.answer(first.execution_id, "wait-2", "fine")
    assert two_unnamed() == (False, "fine")

    repeated = waiting_error(reviews, ["a", "b"])
    client.answer(repeated.execution_id, "review", True)
    again = waiting_error(reviews, ["a", "b"])
    assert again.wait_names == ["review-2"]
    assert again.waits[0].question == "Is b fine?"
    client.answer(repeated.execution_id, "review-2", False)
    assert reviews(["a", "b"]) == [True, False]
    names = [view.name for view in client.get_execution(repeated.execution_id).waits]
    assert names == ["review", "review-2"]


def test_answering_twice_or_an_unknown_wait_is_refused(sqlite_file_store: str) -> None:
    error = waiting_error(shipping, "o-3")
    client = Client()
    client.answer(error.execution_id, "approve", False)
    with pytest.raises(WaitAlreadyAnsweredError, match="already answered"):
        client.answer(error.execution_id, "approve", True)
    with pytest.raises(WaitNotFoundError) as unknown:
        client.answer(error.execution_id, "aprove", True)
    assert unknown.value.wait_name == "aprove"
    assert "Its waits: approve." in str(unknown.value)
    assert shipping("o-3") == "prepared o-3: held"  # the first answer stands


def test_cancelling_a_waiting_execution_by_id(sqlite_file_store: str) -> None:
    with pytest.raises(ExecutionWaitingError):
        shipping.run("o-4", execution_id="cancel-me")
    summary = Client().cancel("cancel-me")
    assert summary.status == "cancelled"
    assert Client().get_execution("cancel-me").status == "cancelled"
    with pytest.raises(ExecutionCancelledError, match="cancel-me"):
        shipping.run("o-4", execution_id="cancel-me")
    assert Client().get_execution("cancel-me").status == "cancelled"
    assert counts == Counter({"prepare": 1})


def test_rerunning_a_cancelled_flow_with_the_same_inputs_raises(sqlite_file_store: str) -> None:
    error = waiting_error(shipping, "o-5")
    assert Client().cancel(error.execution_id).status == "cancelled"
    with pytest.raises(ExecutionCancelledError):
        shipping("o-5")  # today: a new execution is created and stops at the wait again
    assert len(Client().list_executions()) == 1
    assert counts == Counter({"prepare": 1})
