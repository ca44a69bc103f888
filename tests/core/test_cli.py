"""The `kitaru-adapters` command line, through typer's CliRunner and once as the real console script."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner, Result

from kitaru_core import Client, checkpoint, flow, wait
from kitaru_core._runtime import get_store
from kitaru_core.cli import app
from kitaru_core.errors import ExecutionWaitingError

counts: Counter[str] = Counter()


class ApprovalDecision(BaseModel):
    """Shaped like the adapters' approval answer (the CLI's --approve/--deny fill it)."""

    approved: bool
    message: str | None = None


@checkpoint
def fetch_order(order: str) -> str:
    counts["fetch_order"] += 1
    return f"order {order}"


@flow
def cli_shipping(order: str) -> str:
    fetched = fetch_order(order)
    approved = wait("approve", question=f"Ship {order}?", schema=bool)
    return f"{fetched}: {'shipped' if approved else 'held'}"


@flow
def cli_tool_call(tool: str) -> str:
    decision = wait("tool-approval", question=f"May the agent run {tool}?", schema=ApprovalDecision)
    return "ran" if decision.approved else f"denied: {decision.message}"


@flow
def cli_done(value: int) -> int:
    return int(fetch_order(str(value)).split()[-1]) * 2


def invoke(store_url: str, *args: str) -> Result:
    return CliRunner().invoke(app, ["--store-url", store_url, *args])


def flat(text: str) -> str:
    """Output with Rich's line wrapping undone."""
    return " ".join(text.split())


def start_waiting(flow_object: Any, argument: str, execution_id: str) -> str:
    with pytest.raises(ExecutionWaitingError):
        flow_object.run(argument, execution_id=execution_id)
    return execution_id


@pytest.fixture(autouse=True)
def _reset_counts() -> None:
    counts.clear()


def test_list_and_show_as_json(sqlite_file_store: str) -> None:
    assert cli_done(21) == 42
    start_waiting(cli_shipping, "A", "ship-a")
    (done_id,) = [summary.id for summary in Client().list_executions(status="completed")]

    listed = invoke(sqlite_file_store, "executions", "list", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert {(row["id"], row["status"]) for row in rows} == {(done_id, "completed"), ("ship-a", "waiting")}
    assert {row["flow_name"] for row in rows} == {"cli_done", "cli_shipping"}

    only_waiting = invoke(sqlite_file_store, "executions", "list", "--status", "waiting", "--json")
    assert [row["id"] for row in json.loads(only_waiting.stdout)] == ["ship-a"]

    shown = invoke(sqlite_file_store, "executions", "show", done_id, "--json")
    assert shown.exit_code == 0, shown.output
    detail = json.loads(shown.stdout)
    assert (detail["id"], detail["status"], detail["run_count"]) == (done_id, "completed", 1)
    (call,) = detail["calls"]
    assert {key: call[key] for key in ("key", "kind", "status", "source")} == {
        "key": "fetch_order:0",
        "kind": "user",
        "status": "completed",
        "source": "live",
    }
    assert isinstance(call["duration_s"], float)
    assert call["duration_s"] >= 0
    assert detail["output_preview"] == "42"

    table = invoke(sqlite_file_store, "executions", "show", "ship-a")
    assert table.exit_code == 0, table.output
    assert "fetch_order:0" in table.stdout
    assert "approve" in table.stdout
    assert "waiting" in table.stdout


def test_waits_answer_and_resume(sqlite_file_store: str) -> None:
    start_waiting(cli_shipping, "B", "ship-b")

    listed = invoke(sqlite_file_store, "executions", "waits")
    assert listed.exit_code == 0, listed.output
    assert "ship-b" in listed.stdout
    assert "approve" in listed.stdout
    assert "Ship B?" in listed.stdout
    as_json = json.loads(invoke(sqlite_file_store, "executions", "waits", "ship-b", "--json").stdout)
    assert [(wait["name"], wait["status"], wait["schema"]) for wait in as_json] == [
        ("approve", "pending", {"type": "boolean"})
    ]

    answered = invoke(sqlite_file_store, "executions", "answer", "ship-b", "approve", "--value", "true")
    assert answered.exit_code == 0, answered.output
    assert "answered wait approve of ship-b: true" in flat(answered.stdout)
    (wait_view,) = Client().get_execution("ship-b").waits
    assert (wait_view.status, wait_view.answer) == ("answered", True)

    resumed = invoke(sqlite_file_store, "executions", "resume", "ship-b")
    assert resumed.exit_code == 0, resumed.output
    assert "'order B: shipped'" in resumed.stdout
    assert Client().get_execution("ship-b").status == "completed"
    assert counts == Counter({"fetch_order": 1})


def test_invalid_answer_exits_non_zero_and_the_wait_stays_pending(sqlite_file_store: str) -> None:
    start_waiting(cli_shipping, "C", "ship-c")

    refused = invoke(sqlite_file_store, "executions", "answer", "ship-c", "approve", "--value", '"nope"')
    assert refused.exit_code == 1
    message = flat(refused.stderr)
    assert "'nope' is not of type 'boolean'" in message
    assert "stays pending" in message

    not_json = invoke(sqlite_file_store, "executions", "answer", "ship-c", "approve", "--value", "nope")
    assert not_json.exit_code == 2
    assert "--value must be JSON" in flat(not_json.stderr)

    unknown_wait = invoke(sqlite_file_store, "executions", "answer", "ship-c", "aprove", "--value", "true")
    assert unknown_wait.exit_code == 1
    assert "no wait named 'aprove'" in flat(unknown_wait.stderr)

    assert [(view.name, view.status) for view in Client().pending_waits("ship-c")] == [("approve", "pending")]


def test_approve_shortcut_answers_an_approval_wait(sqlite_file_store: str) -> None:
    start_waiting(cli_tool_call, "delete_user", "tool-1")
    result = invoke(sqlite_file_store, "executions", "answer", "tool-1", "tool-approval", "--approve")
    assert result.exit_code == 0, result.output
    (wait_view,) = Client().get_execution("tool-1").waits
    assert wait_view.answer == {"approved": True, "message": None}
    assert cli_tool_call.run("delete_user", execution_id="tool-1") == "ran"

    start_waiting(cli_tool_call, "drop_table", "tool-2")
    denied = invoke(
        sqlite_file_store,
        "executions",
        "answer",
        "tool-2",
        "tool-approval",
        "--deny",
        "--message",
        "too risky",
    )
    assert denied.exit_code == 0, denied.output
    assert cli_tool_call.run("drop_table", execution_id="tool-2") == "denied: too risky"


def test_cancel_and_recover(sqlite_file_store: str) -> None:
    start_waiting(cli_shipping, "D", "ship-d")
    cancelled = invoke(sqlite_file_store, "executions", "cancel", "ship-d")
    assert cancelled.exit_code == 0, cancelled.output
    assert "cancelled" in cancelled.stdout
    assert Client().get_execution("ship-d").status == "cancelled"

    store = get_store()
    store.create_execution(
        "crashed-1", flow_name="cli_done", entry_point=None, inputs_fingerprint=None, inputs=None
    )
    assert store.try_acquire_lease(
        "crashed-1", expected_owner=None, owner="gone", host="other-host", pid=4242, lease_duration_s=-1.0
    )
    recovered = invoke(sqlite_file_store, "executions", "recover", "--json")
    assert recovered.exit_code == 0, recovered.output
    assert json.loads(recovered.stdout) == ["crashed-1"]
    assert Client().get_execution("crashed-1").status == "failed"
    assert json.loads(invoke(sqlite_file_store, "executions", "recover", "--json").stdout) == []


def test_unknown_execution_id_exits_non_zero_with_a_clear_message(sqlite_file_store: str) -> None:
    for command in (["show", "nope"], ["cancel", "nope"], ["answer", "nope", "approve", "--value", "true"]):
        result = invoke(sqlite_file_store, "executions", *command)
        assert result.exit_code == 1, (command, result.output)
        assert "No execution 'nope'" in flat(result.stderr), command


def test_error_messages_are_not_parsed_as_markup(sqlite_file_store: str) -> None:
    start_waiting(cli_shipping, "E", "ship-e")
    result = invoke(sqlite_file_store, "executions", "answer", "ship-e", "approve", "--value", '"[/x]"')
    assert result.exit_code == 1, result.output
    assert "'[/x]' is not of type 'boolean'" in flat(result.stderr)


def test_real_console_script(sqlite_file_store: str) -> None:
    assert cli_done(1) == 2
    script = Path(sys.executable).with_name("kitaru-adapters")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "kitaru_core.cli"]
    helped = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert helped.returncode == 0, helped.stderr
    assert "executions" in helped.stdout
    started = time.monotonic()
    listed = subprocess.run(
        [*command, "--store-url", sqlite_file_store, "executions", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert [row["flow_name"] for row in json.loads(listed.stdout)] == ["cli_done"]
    assert time.monotonic() - started < 30


def test_migrate_brings_a_new_store_to_head_and_says_so_and_refuses_a_newer_schema(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    from kitaru_core.migrations import SCHEMA_REVISION, upgrade_database

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    first = invoke(url, "migrate")
    assert first.exit_code == 0, first.output
    assert flat(first.output) == f"store {url}: schema revision none -> {SCHEMA_REVISION}"
    again = invoke(url, "migrate", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.output) == {
        "store": url,
        "revision_before": SCHEMA_REVISION,
        "revision": SCHEMA_REVISION,
    }

    newer = f"sqlite:///{tmp_path / 'newer.db'}"  # a store a later version migrated
    engine = create_engine(newer)
    upgrade_database(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE kitaru_alembic_version SET version_num = '9999'"))
    engine.dispose()
    refused = invoke(newer, "migrate")
    assert refused.exit_code == 1
    assert "9999" in flat(refused.output)
    assert "newer than this version" in flat(refused.output)
