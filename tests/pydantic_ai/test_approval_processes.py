"""Approval across processes: the run stops `waiting`, another process answers with the CLI, a re-run finishes."""

from __future__ import annotations

import collections
import json

import pytest

from kitaru_core import Client, configure

from .conftest import AgentProcess

REFUND_WAITS = ["approve:refund:", "approve:refund:"]


def _stop_at_approval(agent: AgentProcess, mode: str) -> tuple[str, list[str]]:
    first = agent.run("--mode", mode, "--approve", "refund")
    assert first.returncode == 3, first.stderr
    report = json.loads(first.stdout.strip().splitlines()[-1])
    assert "kitaru-adapters executions answer" in first.stderr
    assert "then resume" in first.stderr
    return report["execution_id"], report["waits"]


@pytest.mark.parametrize("mode", ["sync", "stream"])
def test_approve_from_another_process_runs_each_tool_once(refund_agent: AgentProcess, mode: str) -> None:
    execution_id, waits = _stop_at_approval(refund_agent, mode)
    # both parallel refunds wait at once, each by its tool call id
    assert [name.rsplit(":", 1)[0] + ":" for name in waits] == REFUND_WAITS
    assert refund_agent.model_requests() == 2
    assert collections.Counter(refund_agent.tool_runs()) == {"lookup_order:1": 1, "lookup_order:2": 1}

    configure(store_url=refund_agent.store_url, reset=True)
    assert Client().get_execution(execution_id).status == "waiting"

    listed = refund_agent.cli("executions", "waits", execution_id, "--json")
    assert listed.returncode == 0, listed.stderr
    pending = json.loads(listed.stdout)
    assert sorted(wait["name"] for wait in pending) == sorted(waits)
    assert pending[0]["schema"]["title"] == "ApprovalDecision"
    assert pending[0]["metadata"]["tool_name"] == "refund"

    for name in waits:
        answered = refund_agent.cli("executions", "answer", execution_id, name, "--approve")
        assert answered.returncode == 0, answered.stderr

    resumed = refund_agent.run("--mode", mode, "--approve", "refund")
    assert resumed.returncode == 0, resumed.stderr
    assert "OUTPUT: Done. Last result: refunded 20 for order 2" in resumed.stdout
    # the interrupted turn's model request was not repeated; only the final one is new
    assert refund_agent.model_requests() == 3
    assert collections.Counter(refund_agent.tool_runs()) == {
        "lookup_order:1": 1,
        "lookup_order:2": 1,
        "refund:1:10": 1,
        "refund:2:20": 1,
    }
    assert Client().get_execution(execution_id).status == "completed"
    configure(reset=True)


def test_denial_reaches_the_model_and_the_tool_never_runs(refund_agent: AgentProcess) -> None:
    execution_id, _ = _stop_at_approval(refund_agent, "sync")
    pending = json.loads(refund_agent.cli("executions", "waits", execution_id, "--json").stdout)
    by_order = {wait["metadata"]["arguments"]["order_id"]: wait["name"] for wait in pending}
    assert refund_agent.cli("executions", "answer", execution_id, by_order[1], "--approve").returncode == 0
    denied = refund_agent.cli(
        "executions",
        "answer",
        execution_id,
        by_order[2],
        "--deny",
        "--message",
        "Refunds over 15 need a manager.",
    )
    assert denied.returncode == 0, denied.stderr
    resumed = refund_agent.run("--approve", "refund")
    assert resumed.returncode == 0, resumed.stderr
    assert "OUTPUT: Done. Last result: Refunds over 15 need a manager." in resumed.stdout
    assert collections.Counter(refund_agent.tool_runs()) == {
        "lookup_order:1": 1,
        "lookup_order:2": 1,
        "refund:1:10": 1,
    }


def test_an_answer_of_the_wrong_type_is_refused_and_the_wait_stays_pending(
    refund_agent: AgentProcess,
) -> None:
    execution_id, waits = _stop_at_approval(refund_agent, "sync")
    refused = refund_agent.cli("executions", "answer", execution_id, waits[0], "--value", '"yes"')
    assert refused.returncode == 1
    assert "Answer refused" in refused.stderr
    assert "is not of type 'object'" in refused.stderr
    assert "stays pending" in refused.stderr
    missing_field = refund_agent.cli(
        "executions", "answer", execution_id, waits[0], "--value", '{"message": "ok"}'
    )
    assert missing_field.returncode == 1
    assert "'approved' is a required property" in missing_field.stderr

    configure(store_url=refund_agent.store_url, reset=True)
    assert sorted(wait.name for wait in Client().pending_waits(execution_id)) == sorted(waits)
    # nothing ran while the answers were refused: re-running stops at the same waits without new calls
    again = refund_agent.run("--approve", "refund")
    assert again.returncode == 3
    assert refund_agent.model_requests() == 2
    assert "refund:1:10" not in refund_agent.tool_runs()
    configure(reset=True)


def test_changed_prompt_calls_the_model_again(refund_agent: AgentProcess) -> None:
    """No stale answers: a different prompt is a different run; the stored one is not served."""
    _stop_at_approval(refund_agent, "sync")
    assert refund_agent.model_requests() == 2
    changed = refund_agent.run("--approve", "refund", "--prompt", "Refund order 1 and order 2 now, please.")
    assert changed.returncode == 3
    assert refund_agent.model_requests() == 4
