"""`wait_all`: every question is pending before anything blocks, and all are polled together."""

from __future__ import annotations

import threading
import time

import pytest

from kitaru_core import ApprovalDecision, Client, WaitSpec, configure, flow, request_approvals, wait_all
from kitaru_core._approvals import ApprovalRequest
from kitaru_core.errors import ExecutionWaitingError


@flow
def two_questions() -> list[object]:
    return wait_all(
        [WaitSpec("color", "Which color?", str), WaitSpec("count", "How many?", int)], timeout=10.0
    )


def test_both_waits_are_pending_at_once_and_answered_while_polling(sqlite_file_store: str) -> None:
    configure(wait_poll_interval_s=0.05)
    seen_pending: list[list[str]] = []

    def answer_both() -> None:
        client = Client()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pending = client.pending_waits()
            if len(pending) == 2:
                seen_pending.append(sorted(wait.name for wait in pending))
                execution_id = pending[0].execution_id
                client.answer(execution_id, "count", 3)
                time.sleep(0.2)
                client.answer(execution_id, "color", "teal")
                return
            time.sleep(0.02)

    helper = threading.Thread(target=answer_both)
    helper.start()
    started = time.monotonic()
    assert two_questions() == ["teal", 3]
    helper.join()
    assert seen_pending == [["color", "count"]]
    assert time.monotonic() - started < 5


def test_parallel_approvals_all_wait_before_suspending(sqlite_file_store: str) -> None:
    @flow
    def approve_three() -> dict[str, ApprovalDecision]:
        return request_approvals([ApprovalRequest("refund", {"order": n}, f"call-{n}") for n in range(3)])

    with pytest.raises(ExecutionWaitingError) as waiting:
        approve_three()
    assert waiting.value.wait_names == [f"approve:refund:call-{n}" for n in range(3)]
    client = Client()
    for n in range(3):
        client.answer(waiting.value.execution_id, f"approve:refund:call-{n}", {"approved": n != 1})
    decisions = approve_three()
    assert [decisions[f"call-{n}"].approved for n in range(3)] == [True, False, True]


def test_approvals_asked_together_from_threads_are_all_pending_before_suspending(
    sqlite_file_store: str,
) -> None:
    import contextvars

    from kitaru_core import execution, request_approval_together

    def ask_in_parallel() -> list[object]:
        outcomes: list[object] = [None, None, None]

        def ask(n: int) -> None:
            try:
                outcomes[n] = request_approval_together(
                    ApprovalRequest("refund", {"order": n}, f"call-{n}"), window_s=0.2
                )
            except BaseException as error:  # the suspension reaches every call of the batch
                outcomes[n] = error

        threads = [threading.Thread(target=contextvars.copy_context().run, args=(ask, n)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return outcomes

    def first_try() -> None:
        with execution("together"):
            suspensions = ask_in_parallel()
            # One request for the three: the same suspension reaches every call (asked alone, each
            # call would stop on its own).
            assert isinstance(suspensions[0], BaseException)
            assert suspensions[1] is suspensions[0]
            assert suspensions[2] is suspensions[0]
            raise suspensions[0]

    with pytest.raises(ExecutionWaitingError) as waiting:
        first_try()
    assert sorted(waiting.value.wait_names) == [f"approve:refund:call-{n}" for n in range(3)]
    client = Client()
    for n in range(3):
        client.answer("together", f"approve:refund:call-{n}", {"approved": n != 1})
    with execution("together"):
        decisions = ask_in_parallel()
    assert [decision.approved for decision in decisions] == [True, False, True]  # type: ignore[union-attr]


def test_asking_together_outside_an_execution_is_a_clear_error() -> None:
    from kitaru_core import request_approval_together
    from kitaru_core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="inside an execution"):
        request_approval_together(ApprovalRequest("refund", {}, "call-1"), window_s=0.0)
