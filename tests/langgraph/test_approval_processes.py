"""Approval across processes: the refund desk stops, another process answers, a new process finishes it."""

from __future__ import annotations

import json
import re

import pytest

from kitaru_core import Client, configure

from .conftest import DeskProcess, ModelServer

# The CLI and the waits across processes are ours; the framework's approval seams have in-process
# tests. The oldest_* sessions run this only under `nox -s slow`.
pytestmark = pytest.mark.newest

EXIT_WAITING = 3
REQUESTS_BEFORE_REFUND = 5  # three research calls, two agent turns (lookup, then the refund call)


def _stop_at_the_wait(process: DeskProcess, server: ModelServer) -> str:
    stopped = process.run("--checkpointer", "none", "--approve")
    assert stopped.returncode == EXIT_WAITING, stopped.stderr
    match = re.search(r"executions answer refund-7 (approve:refund:call_\w+-[0-9a-f]{8})", stopped.stderr)
    assert match, stopped.stderr
    assert len(server.requests()) == REQUESTS_BEFORE_REFUND
    assert process.tool_runs() == ["lookup_order 7"]
    return match.group(1)


def test_durable_wait_approved_with_the_cli(desk: tuple[DeskProcess, ModelServer]) -> None:
    process, server = desk
    wait_name = _stop_at_the_wait(process, server)
    answered = process.cli("executions", "answer", "refund-7", wait_name, "--approve")
    assert answered.returncode == 0, answered.stderr
    done = process.run("--checkpointer", "none", "--approve")
    assert done.returncode == 0, done.stderr
    assert "output=Done: refunded 25 USD for order 7" in done.stdout
    assert process.tool_runs() == ["lookup_order 7", "refund 7 25"]
    assert len(server.requests()) == REQUESTS_BEFORE_REFUND + 1  # only the final answer is new


def test_durable_wait_rejected_with_the_cli(desk: tuple[DeskProcess, ModelServer]) -> None:
    process, server = desk
    wait_name = _stop_at_the_wait(process, server)
    denied = process.cli(
        "executions", "answer", "refund-7", wait_name, "--deny", "--message", "needs a manager"
    )
    assert denied.returncode == 0, denied.stderr
    done = process.run("--checkpointer", "none", "--approve")
    assert done.returncode == 0, done.stderr
    assert "output=Not refunded: The tool call refund" in done.stdout
    assert "needs a manager" in done.stdout
    assert process.tool_runs() == ["lookup_order 7"]


def test_an_invalid_cli_answer_is_refused_and_the_wait_stays_pending(
    desk: tuple[DeskProcess, ModelServer],
) -> None:
    process, server = desk
    wait_name = _stop_at_the_wait(process, server)
    refused = process.cli("executions", "answer", "refund-7", wait_name, "--value", '{"approve": "yes"}')
    assert refused.returncode != 0
    assert "approved" in refused.stdout + refused.stderr
    still = process.run("--checkpointer", "none", "--approve")
    assert still.returncode == EXIT_WAITING, still.stderr
    assert process.tool_runs() == ["lookup_order 7"]
    assert len(server.requests()) == REQUESTS_BEFORE_REFUND
    configure(store_url=process.store_url, reset=True)
    try:
        detail = Client().get_execution("refund-7")
    finally:
        configure(reset=True)
    (wait,) = detail.waits
    assert wait.status == "pending"


def _interrupts(stdout: str) -> list[tuple[str, dict[str, object]]]:
    found: list[tuple[str, dict[str, object]]] = []
    for line in stdout.splitlines():
        if line.startswith("interrupt "):
            _, interrupt_id, value = line.split(" ", 2)
            found.append((interrupt_id, json.loads(value)))
    return found


@pytest.mark.parametrize(
    ("answer", "output", "tools"),
    [
        ('{"approved": true}', "output=Done: refunded 25 USD", ["lookup_order 7", "refund 7 25"]),
        ('{"approved": false, "message": "no"}', "output=Not refunded:", ["lookup_order 7"]),
    ],
    ids=["approve", "reject"],
)
def test_interrupt_answered_from_a_new_process(
    desk: tuple[DeskProcess, ModelServer], answer: str, output: str, tools: list[str]
) -> None:
    process, server = desk
    stopped = process.run("--checkpointer", "kitaru", "--approve")
    assert stopped.returncode == EXIT_WAITING, stopped.stderr
    ((_, request),) = _interrupts(stopped.stdout)
    assert request["kind"] == "tool_approval"
    assert request["tool"] == "refund"
    assert request["arguments"] == {"order_id": 7, "amount": 25}
    invalid = process.run("--checkpointer", "kitaru", "--approve", "--resume", '"perhaps"')
    assert invalid.returncode == EXIT_WAITING, invalid.stderr
    ((_, asked_again),) = _interrupts(invalid.stdout)
    assert "Invalid approval answer" in str(asked_again["problem"])
    done = process.run("--checkpointer", "kitaru", "--approve", "--resume", answer)
    assert done.returncode == 0, done.stderr
    assert output in done.stdout
    assert process.tool_runs() == tools
    assert len(server.requests()) == REQUESTS_BEFORE_REFUND + 1
