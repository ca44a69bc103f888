"""What every adapter's budget test uses (`tests/<framework>/test_budgets.py`).

A scripted conversation of three model calls (a tool call, another tool call, the final answer),
each reporting 1,000,000 prompt tokens, so with `gpt-4o-mini`'s price ($0.15 per million input
tokens, genai-prices) each call costs $0.15: a `Budget(usd=0.2)` is reached after two calls. The
budget wait is raised through the real CLI (typer's CliRunner on `kitaru-adapters`).
Imports only `kitaru_core`, so every framework's environment can use it.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from kitaru_core import Budget, Client, ExecutionDetail
from kitaru_core.cli import app
from kitaru_core.testing import Rule, Script, ScriptedModelServer, ScriptedToolCall, ScriptedUsage

PRICED_MODEL = "gpt-4o-mini"
"""A model genai-prices knows, so the cost of each call is known."""

CALL_USAGE = ScriptedUsage(prompt_tokens=1_000_000, completion_tokens=10)
BUDGET = Budget(usd=0.2)
"""Reached after two of the script's three calls ($0.30 spent)."""

THREE_CALLS = Script(
    [
        Rule(when_turn=0, tool_calls=[ScriptedToolCall("lookup", {"n": 1})], usage=CALL_USAGE),
        Rule(when_turn=1, tool_calls=[ScriptedToolCall("lookup", {"n": 2})], usage=CALL_USAGE),
        Rule(text="Done: {last_tool_result}", usage=CALL_USAGE),
    ]
)


def lookup(n: int) -> str:
    """The tool the script calls: `lookup(n)` answers `found n`."""
    return f"found {n}"


def cli(store_url: str, *args: str) -> str:
    """Run `kitaru-adapters --store-url URL ARGS...`; return its output (the exit code must be 0)."""
    result = CliRunner().invoke(app, ["--store-url", store_url, *args])
    assert result.exit_code == 0, result.output
    return result.output


def only_execution_id() -> str:
    (execution,) = Client().list_executions()
    return execution.id


def check_stopped_at_budget(server: ScriptedModelServer, store_url: str) -> str:
    """Two requests sent, the execution `waiting` at the `budget` wait, shown by the CLI; returns its id."""
    assert server.request_count == 2
    execution_id = only_execution_id()
    detail = Client().get_execution(execution_id)
    assert detail.status == "waiting"
    [wait] = [wait for wait in detail.waits if wait.status == "pending"]
    assert wait.name == "budget"
    assert wait.question.startswith("budget of $0.20 reached: $0.30 spent."), wait.question
    shown = cli(store_url, "executions", "show", execution_id)
    assert "budget: $0.30 of $0.20 REACHED" in shown, shown
    return execution_id


def raise_from_cli(store_url: str, execution_id: str) -> None:
    """Raise the budget to $1.00 with `kitaru-adapters executions answer ID budget --value ...`."""
    cli(store_url, "executions", "answer", execution_id, "budget", "--value", json.dumps({"action": "raise", "usd": 1.0}))


def check_completed_without_repeats(server: ScriptedModelServer, execution_id: str) -> ExecutionDetail:
    """Three requests in all (none repeated), completed, $0.45 spent of the raised $1.00."""
    assert server.request_count == 3
    detail = Client().get_execution(execution_id)
    assert detail.status == "completed"
    assert detail.budget is not None
    assert detail.budget.limits == {"usd": 1.0}
    assert round(detail.budget.spent["usd"], 3) == 0.45
    assert detail.budget.spent["model_calls"] == 3
    assert [call.source for call in detail.calls if call.kind == "model"] == ["store", "store", "live"]
    return detail


def stop_from_cli(store_url: str, execution_id: str) -> None:
    """Answer the budget wait `stop` with a reason, through the CLI."""
    value = json.dumps({"action": "stop", "reason": "over the limit"})
    cli(store_url, "executions", "answer", execution_id, "budget", "--value", value)


def check_cancelled_with_reason(server: ScriptedModelServer, execution_id: str) -> None:
    """No third request; the execution `cancelled`, its error and budget naming the reason."""
    assert server.request_count == 2
    detail = Client().get_execution(execution_id)
    assert detail.status == "cancelled"
    assert detail.error is not None
    assert detail.error.endswith("budget: over the limit")
    assert detail.budget is not None
    assert detail.budget.stopped == "over the limit"
