"""README.md's OpenAI Agents SDK snippet as written: it stops at the refund's approval, and run again it resumes.

The snippet is cut out of README.md under `## OpenAI Agents SDK`, so an edit of the README changes
what runs here. It needs two tools, `lookup_order` and `refund`: a prelude defines them (each
writes a line per run to a file). The program runs in a fresh directory with the SDK's default
model and client, pointed at the scripted model server by `OPENAI_BASE_URL`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import kitaru_core
from kitaru_core import Client
from kitaru_core.testing import Rule, Script, ScriptedModelServer, ScriptedToolCall, read_request_log

README = Path(__file__).resolve().parents[2] / "README.md"

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


def readme_snippet() -> str:
    section = README.read_text(encoding="utf-8").split("\n## OpenAI Agents SDK\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "README.md has a python snippet under ## OpenAI Agents SDK"
    return match.group(1)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A fresh project directory; the test process reads its default store `./.kitaru/kitaru.db`."""
    folder = tmp_path / "project"
    folder.mkdir()
    kitaru_core.configure(store_url=f"sqlite:///{folder / '.kitaru' / 'kitaru.db'}", reset=True)
    yield folder
    kitaru_core.configure(reset=True)


def test_the_readme_snippet_waits_for_the_refund_approval_and_resumes_when_run_again(
    project: Path, tmp_path: Path
) -> None:
    program = project / "desk.py"
    program.write_text(PRELUDE + readme_snippet() + EPILOGUE, encoding="utf-8")
    tool_runs = tmp_path / "tool-runs.txt"
    request_log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(SCRIPT, request_log_path=request_log) as server:
        environment = {key: value for key, value in os.environ.items() if not key.startswith("KITARU_")} | {
            "KITARU_INTERACTIVE": "false",
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "scripted",
            "TOOL_RUNS": str(tool_runs),
        }

        def run_program() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, str(program)],
                cwd=project,
                env=environment,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )

        first = run_program()
        assert first.returncode == 1, first.stdout + first.stderr
        assert "ExecutionWaitingError" in first.stderr, first.stderr
        assert tool_runs.read_text().splitlines() == ["lookup_order 7"]  # the refund waits for approval
        [summary] = Client().list_executions()
        assert (summary.flow_name, summary.status) == ("openai_agents:desk", "waiting")
        [wait] = Client().pending_waits(summary.id)
        assert wait.name.startswith("approve:refund:")
        answered = subprocess.run(
            [
                sys.executable,
                "-m",
                "kitaru_core.cli",
                "executions",
                "answer",
                summary.id,
                wait.name,
                "--approve",
            ],
            cwd=project,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert answered.returncode == 0, answered.stdout + answered.stderr

        second = run_program()  # "run it again: it resumes"
        assert second.returncode == 0, second.stdout + second.stderr
        assert second.stdout == "final: Order 7 is refunded: 25 USD.\n"
    assert tool_runs.read_text().splitlines() == ["lookup_order 7", "refund 7 25"]  # each ran once
    requests = read_request_log(request_log)
    assert {record["path"] for record in requests} == {"/v1/responses"}  # the SDK's default model
    assert len(requests) == 3  # the turn that asked for the refund was served from the store
    [summary] = Client().list_executions()
    assert summary.status == "completed"
