"""README.md's CrewAI snippet as written: the kickoff stops at the refund's approval, and run again it resumes.

The snippet is cut out of README.md under `## CrewAI`, so an edit of the README changes what runs
here. It needs two agents (`clerk`, `refunder`) and two tasks (`lookup`, `refund`): a prelude
defines them, the refunder with a tool named `refund` (each tool writes a line per run to a file),
and their LLM pointed at the scripted model server. The program runs in a fresh directory.
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

from crewai import LLM, Agent, Task
from crewai.tools import tool


def _ran(line: str) -> None:
    with open(os.environ["TOOL_RUNS"], "a", encoding="utf-8") as runs:
        runs.write(line + "\\n")


@tool("lookup_order")
def lookup_order(order_id: int) -> str:
    """Look up an order's amount."""
    _ran(f"lookup_order {order_id}")
    return f"order {order_id}: 25 USD, paid"


@tool("refund")
def refund_order(order_id: int, amount: int) -> str:
    """Refund an order."""
    _ran(f"refund {order_id} {amount}")
    return f"refunded {amount} USD for order {order_id}"


llm = LLM(model="openai/gpt-4o-mini", base_url=os.environ["MODEL_BASE_URL"], api_key="scripted", max_retries=0)
clerk = Agent(role="Order clerk", goal="Find order amounts", backstory="You know the orders.", llm=llm,
              tools=[lookup_order])
refunder = Agent(role="Refund agent", goal="Refund orders", backstory="You move money carefully.", llm=llm,
                 tools=[refund_order])
lookup = Task(description="Look up order {order}.", expected_output="Its amount.", agent=clerk)
refund = Task(description="Refund order {order} in full.", expected_output="A confirmation.", agent=refunder)
'''

EPILOGUE = """
print("final:", result.raw)
"""

SCRIPT = Script(
    rules=[
        Rule(
            when_tools_offered="lookup_order",
            when_turn=0,
            tool_calls=(ScriptedToolCall("lookup_order", {"order_id": 7}),),
        ),
        Rule(when_tools_offered="lookup_order", text="Order 7: 25 USD."),
        Rule(
            when_tools_offered="refund",
            when_turn=0,
            tool_calls=(ScriptedToolCall("refund", {"order_id": 7, "amount": 25}),),
        ),
        Rule(when_tools_offered="refund", text="Done: {last_tool_result}"),
    ],
    model_names=("gpt-4o-mini",),
)


def test_the_readme_snippet_waits_for_the_refund_approval_and_resumes_when_run_again(
    readme_project: Path, tmp_path: Path
) -> None:
    project = readme_project
    program = project / "desk.py"
    program.write_text(PRELUDE + readme_snippet("CrewAI") + EPILOGUE, encoding="utf-8")
    tool_runs = tmp_path / "tool-runs.txt"
    request_log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(SCRIPT, request_log_path=request_log) as server:
        environment = {key: value for key, value in os.environ.items() if not key.startswith("KITARU_")} | {
            "KITARU_INTERACTIVE": "false",
            "MODEL_BASE_URL": server.base_url,
            "TOOL_RUNS": str(tool_runs),
        }

        first = run_in(project, environment, sys.executable, str(program), timeout_s=180)
        assert first.returncode == 1, first.stdout + first.stderr
        assert "ExecutionWaitingError" in first.stderr, first.stderr
        assert tool_runs.read_text().splitlines() == ["lookup_order 7"]  # the refund waits for approval
        [summary] = Client().list_executions()
        assert summary.status == "waiting"
        [wait] = Client().pending_waits(summary.id)
        assert wait.name.startswith("approve:refund:")
        approve_from_the_cli(project, environment, summary.id, wait.name)
        requests_before_resume = len(read_request_log(request_log))

        second = run_in(project, environment, sys.executable, str(program), timeout_s=180)  # "run it again: it resumes"
        assert second.returncode == 0, second.stdout + second.stderr
        assert second.stdout.endswith("final: Done: refunded 25 USD for order 7\n"), second.stdout
    assert tool_runs.read_text().splitlines() == ["lookup_order 7", "refund 7 25"]  # each ran once
    # the lookup task's calls and the request that asked for the refund were served from the store
    assert len(read_request_log(request_log)) == requests_before_resume + 1
    assert Client().get_execution(summary.id).status == "completed"
