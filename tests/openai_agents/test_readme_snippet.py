"""README.md's OpenAI Agents SDK snippet as written: it stops at the refund's approval, and run again it resumes.

The snippet is cut out of README.md under `## OpenAI Agents SDK`, so an edit of the README changes
what runs here. It needs two tools, `lookup_order` and `refund`: a prelude defines them (each
writes a line per run to a file). The program runs in a fresh directory with the SDK's default
model and client, pointed at the scripted model server by `OPENAI_BASE_URL`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kitaru_core import Client
from kitaru_core.testing import Rule, Script, ScriptedModelServer, ScriptedToolCall, read_request_log

from ..conftest import approve_from_the_cli, readme_snippet, run_in

PRELUDE = '''
import os

from agents import function_tool


def _ran(line: str) -> None:
    with open(os.environ["TOOL_RUNS"], "a", encoding="utf-8") as runs:
        runs.write(line + "\\n")


@function_tool
def lookup_order(order_id: int) -> str:
    """Look an order up."""
    _ran(f"lookup_order {order_id}")
    return f"order {order_id}: 25 USD, paid"


@function_tool
def refund(order_id: int, amount: int) -> str:
    """Refund an order."""
    _ran(f"refund {order_id} {amount}")
    return f"refunded {amount} USD for order {order_id}"
'''

EPILOGUE = """
print("final:", result.final_output)
"""

SCRIPT = Script(
    rules=[
        Rule(
            when_last_tool_result_contains="refunded 25 USD",
            text="Order 7 is refunded: 25 USD.",
        ),
        Rule(
            when_last_tool_result_contains="25 USD, paid",
            tool_calls=(ScriptedToolCall("refund", {"order_id": 7, "amount": 25}),),
        ),
        Rule(
            when_last_user_contains="Refund order 7",
            tool_calls=(ScriptedToolCall("lookup_order", {"order_id": 7}),),
        ),
    ]
)


def test_the_readme_snippet_waits_for_the_refund_approval_and_resumes_when_run_again(
    readme_project: Path, tmp_path: Path
) -> None:
    project = readme_project
    program = project / "desk.py"
    program.write_text(PRELUDE + readme_snippet("OpenAI Agents SDK") + EPILOGUE, encoding="utf-8")
    tool_runs = tmp_path / "tool-runs.txt"
    request_log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(SCRIPT, request_log_path=request_log) as server:
        environment = {key: value for key, value in os.environ.items() if not key.startswith("KITARU_")} | {
            "KITARU_INTERACTIVE": "false",
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "scripted",
            "TOOL_RUNS": str(tool_runs),
        }

        first = run_in(project, environment, sys.executable, str(program))
        assert first.returncode == 1, first.stdout + first.stderr
        assert "ExecutionWaitingError" in first.stderr, first.stderr
        assert tool_runs.read_text().splitlines() == ["lookup_order 7"]  # the refund waits for approval
        [summary] = Client().list_executions()
        assert (summary.flow_name, summary.status) == ("openai_agents:desk", "waiting")
        [wait] = Client().pending_waits(summary.id)
        assert wait.name.startswith("approve:refund:")
        approve_from_the_cli(project, environment, summary.id, wait.name)

        second = run_in(project, environment, sys.executable, str(program))  # "run it again: it resumes"
        assert second.returncode == 0, second.stdout + second.stderr
        assert second.stdout == "final: Order 7 is refunded: 25 USD.\n"
    assert tool_runs.read_text().splitlines() == ["lookup_order 7", "refund 7 25"]  # each ran once
    requests = read_request_log(request_log)
    assert {record["path"] for record in requests} == {"/v1/responses"}  # the SDK's default model
    assert len(requests) == 3  # the turn that asked for the refund was served from the store
    [summary] = Client().list_executions()
    assert summary.status == "completed"
