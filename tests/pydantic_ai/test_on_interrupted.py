"""`durable(agent, side_effects=["refund"])`: a tool call killed inside its body asks a person on resume.

A real PydanticAI agent in a subprocess, against the scripted model server (requests counted on
the wire). The second refund's body is killed with SIGKILL halfway (after it counted its run,
while it sleeps) once its parallel sibling has committed. The re-run stops at the interrupted
call's wait; the answer given from the `kitaru-adapters` command line is the tool's result; the
next re-run completes without running the refund again and without repeating a model request.
"""

from __future__ import annotations

import collections
import json
import sys
import time

import pytest

from kitaru_core import Client, configure
from tests._kill_inside import kill_when_inside

from .conftest import REFUND_AGENT, AgentProcess

MODEL_REQUESTS_IN_RUN = 3  # model 0 (lookups), model 1 (refunds), model 2 (the answer)

pytestmark = pytest.mark.usefixtures("refund_server")


def kill_inside_second_refund(agent: AgentProcess) -> None:
    command = [
        sys.executable,
        str(REFUND_AGENT),
        "--base-url",
        agent.base_url,
        "--counter-file",
        str(agent.counter_file),
        "--side-effect",
        "refund",
    ]

    def sibling_committed() -> None:
        """Kill once the parallel sibling (refund of order 1) has committed: only order 2 is in flight."""
        client = Client()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            executions = client.list_executions()
            calls = client.get_execution(executions[0].id).calls if executions else []
            if any(call.name == "tool:refund" and call.status == "completed" for call in calls):
                return
            time.sleep(0.05)

    kill_when_inside(command, env={**agent.env(), "HANG_IN_REFUND": "2"}, before_kill=sibling_committed)


def test_interrupted_refund_is_answered_with_its_result(refund_agent: AgentProcess) -> None:
    configure(
        store_url=refund_agent.store_url, artifacts_url=str(refund_agent.tmp_path / "artifacts"), reset=True
    )
    try:
        kill_inside_second_refund(refund_agent)
        assert refund_agent.model_requests() == 2
        client = Client()
        [crashed] = client.list_executions()
        statuses = {call.key: call.status for call in client.get_execution(crashed.id).calls}
        assert sorted(statuses.values()) == ["completed"] * 5 + ["interrupted"]

        stopped = refund_agent.run("--side-effect", "refund")
        assert stopped.returncode == 3, stopped.stdout + stopped.stderr
        [wait_name] = json.loads(stopped.stdout.splitlines()[0])["waits"]
        assert wait_name.startswith("interrupted:tool:refund:")
        assert refund_agent.model_requests() == 2  # both model responses were served from the store
        [pending] = client.pending_waits(crashed.id)
        assert pending.question.startswith("`refund(order_id=2, amount=20)` started at ")

        refused = refund_agent.cli(
            "executions", "answer", crashed.id, wait_name, "--value", '{"action": "done"}'
        )
        assert refused.returncode != 0
        assert [wait.name for wait in client.pending_waits(crashed.id)] == [wait_name]

        given = json.dumps({"action": "result", "result": "refunded 20 for order 2 (checked by hand)"})
        answered = refund_agent.cli("executions", "answer", crashed.id, wait_name, "--value", given)
        assert answered.returncode == 0, answered.stderr

        done = refund_agent.run("--side-effect", "refund")
        assert done.returncode == 0, done.stderr
        assert "OUTPUT: Done. Last result: refunded 20 for order 2 (checked by hand)" in done.stdout
        assert refund_agent.model_requests() == MODEL_REQUESTS_IN_RUN  # no completed model request repeated
        runs = collections.Counter(refund_agent.tool_runs())
        assert runs == {"lookup_order:1": 1, "lookup_order:2": 1, "refund:1:10": 1, "refund:2:20": 1}
        detail = client.get_execution(crashed.id)
        assert detail.status == "completed"
        given_calls = [call for call in detail.calls if call.details.get("given_by") == "person"]
        assert [call.name for call in given_calls] == ["tool:refund"]
    finally:
        configure(reset=True)
