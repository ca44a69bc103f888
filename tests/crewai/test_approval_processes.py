"""Approvals and human input across processes: the desk stops, the CLI answers, the desk runs again."""

from __future__ import annotations

import json
import re

import pytest

from .conftest import DeskProcess, ModelServer

# The CLI and the waits across processes are ours; the framework's approval seams have in-process
# tests. The oldest_* sessions run this only under `nox -s slow`.
pytestmark = pytest.mark.newest

EXIT_WAITING = 3


def _waiting_on(stderr: str) -> tuple[str, str]:
    """The execution id and the (single) wait name from the runner's `ExecutionWaitingError` text."""
    execution = re.search(r"Execution '([0-9a-f]+)' is waiting", stderr)
    wait = re.search(r"^\s+- ((?:approve|human_input):\S+):", stderr, re.MULTILINE)
    assert execution, stderr
    assert wait, stderr
    return execution.group(1), wait.group(1)


@pytest.mark.parametrize("mode", ["native", "react"])
def test_an_approval_answered_from_the_cli_lets_the_refund_run_once(
    desk_process: DeskProcess, model_server: ModelServer, mode: str
) -> None:
    first = desk_process.run("--mode", mode, "--approve")
    assert first.returncode == EXIT_WAITING, first.stderr
    execution_id, wait_name = _waiting_on(first.stderr)
    assert wait_name.startswith("approve:refund:refund:")
    assert "refund 7" not in desk_process.tool_runs()
    requests_at_wait = len(model_server.requests())

    answered = desk_process.cli("executions", "answer", execution_id, wait_name, "--approve")
    assert answered.returncode == 0, answered.stderr

    second = desk_process.run("--mode", mode, "--approve")
    assert second.returncode == 0, second.stderr
    assert "output=Done: refund" in second.stdout
    assert desk_process.tool_runs().count("refund 7") == 1
    assert desk_process.tool_runs().count("lookup_order 7") == 1
    # The stop was no agent error and no retry; the resumed run asked only for the final answer.
    assert len(model_server.requests()) == requests_at_wait + 1


def test_a_denial_from_the_cli_reaches_the_agent_as_crewais_blocked_text(
    desk_process: DeskProcess, model_server: ModelServer
) -> None:
    first = desk_process.run("--approve")
    execution_id, wait_name = _waiting_on(first.stderr)
    denied = desk_process.cli(
        "executions", "answer", execution_id, wait_name, "--deny", "--message", "Refunds are frozen."
    )
    assert denied.returncode == 0, denied.stderr
    second = desk_process.run("--approve")
    assert second.returncode == 0, second.stderr
    assert "output=Done: Tool execution blocked by hook. Tool: refund. Refunds are frozen." in second.stdout
    assert "refund 7" not in desk_process.tool_runs()


def test_an_invalid_answer_is_refused_and_the_desk_keeps_waiting(
    desk_process: DeskProcess, model_server: ModelServer
) -> None:
    first = desk_process.run("--approve")
    execution_id, wait_name = _waiting_on(first.stderr)
    refused = desk_process.cli(
        "executions", "answer", execution_id, wait_name, "--value", json.dumps({"approved": "maybe"})
    )
    assert refused.returncode != 0
    assert "approved" in refused.stdout + refused.stderr
    again = desk_process.run("--approve")
    assert again.returncode == EXIT_WAITING, again.stderr
    assert _waiting_on(again.stderr) == (execution_id, wait_name)
    assert "refund 7" not in desk_process.tool_runs()


def test_human_input_answered_from_the_cli(desk_process: DeskProcess, model_server: ModelServer) -> None:
    first = desk_process.run("--review")
    assert first.returncode == EXIT_WAITING, first.stderr
    execution_id, wait_name = _waiting_on(first.stderr)
    assert wait_name == "human_input:refund"
    assert desk_process.tool_runs().count("refund 7") == 1
    requests_at_wait = len(model_server.requests())

    accepted = desk_process.cli("executions", "answer", execution_id, wait_name, "--value", '""')
    assert accepted.returncode == 0, accepted.stderr
    second = desk_process.run("--review")
    assert second.returncode == 0, second.stderr
    assert "output=Done: refunded 25 USD for order 7" in second.stdout
    assert desk_process.tool_runs().count("refund 7") == 1
    assert len(model_server.requests()) == requests_at_wait
