"""`executions replay` with overrides and inputs, `executions diff`, and the CLI papercuts of issue 15."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field, TypeAdapter
from typer.testing import CliRunner, Result

from kitaru_core import Client, checkpoint, flow, wait
from kitaru_core.cli import app
from kitaru_core.errors import ExecutionWaitingError

counts: Counter[str] = Counter()


@checkpoint
def lookup(order_id: int) -> int:
    counts["lookup"] += 1
    return order_id * 10


@checkpoint(name=":child:")
def child(amount: int) -> int:
    counts["child"] += 1
    return amount + 1


@checkpoint
def summarize(total: int) -> str:
    counts["summarize"] += 1
    print(f"summarizing {total}")  # as agent frameworks print while they run
    return f"total {total}"


@flow
def replay_cli_order(order_id: int) -> str:
    return summarize(child(lookup(order_id)))


@pytest.fixture(autouse=True)
def _fresh(sqlite_file_store: str) -> None:
    counts.clear()


def invoke(store_url: str, *args: str) -> Result:
    return CliRunner().invoke(app, ["--store-url", store_url, *args])


def flat(text: str) -> str:
    return " ".join(text.split())


def test_replay_from_a_key_with_an_override_and_an_input(sqlite_file_store: str) -> None:
    assert replay_cli_order(4) == "total 41"
    [original] = Client().list_executions()
    result = invoke(
        sqlite_file_store,
        "executions",
        "replay",
        original.id,
        "--from",
        "summarize:0",
        "--override",
        ":child::0=99",
        "--json",
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)  # the flow's own printing went to stderr: stdout is the JSON alone
    assert "summarizing 99" in result.stderr
    assert document["replay_of"] == original.id
    assert Client().get_output(document["execution_id"]) == "total 99"
    assert counts == Counter({"lookup": 1, "child": 1, "summarize": 2})

    with_input = invoke(sqlite_file_store, "executions", "replay", original.id, "--input", "order_id=2")
    assert with_input.exit_code == 0, with_input.output
    new_id = flat(with_input.stdout).split("replay execution: ")[1].split()[0]
    assert Client().get_output(new_id) == "total 21"
    assert f"executions diff {original.id} {new_id}" in flat(with_input.stdout)


def test_replay_refuses_bad_arguments_and_creates_nothing(sqlite_file_store: str) -> None:
    replay_cli_order(1)
    [original] = Client().list_executions()
    no_equals = invoke(sqlite_file_store, "executions", "replay", original.id, "--override", "lookup:0")
    assert no_equals.exit_code == 2
    assert "takes NAME=JSON" in flat(no_equals.stderr)
    not_json = invoke(sqlite_file_store, "executions", "replay", original.id, "--input", "order_id=seven")
    assert not_json.exit_code == 2
    assert "is not JSON" in flat(not_json.stderr)
    unknown = invoke(sqlite_file_store, "executions", "replay", original.id, "--input", "order=7")
    assert unknown.exit_code == 1
    assert "has no input 'order'; its inputs: 'order_id'" in flat(unknown.stderr)
    assert Client().count_executions() == 1


def test_a_no_run_replay_is_queued_and_recover_leaves_it(sqlite_file_store: str) -> None:
    replay_cli_order(3)
    [original] = Client().list_executions()
    prepared = invoke(sqlite_file_store, "executions", "replay", original.id, "--from", "2", "--no-run", "--json")
    assert prepared.exit_code == 0, prepared.output
    new_id = json.loads(prepared.stdout)["execution_id"]
    assert json.loads(prepared.stdout)["status"] == "queued"
    recovered = invoke(sqlite_file_store, "executions", "recover", "--json")
    assert json.loads(recovered.stdout) == []
    listed = invoke(sqlite_file_store, "executions", "list", "--status", "queued", "--json")
    assert [row["id"] for row in json.loads(listed.stdout)] == [new_id]
    text = invoke(sqlite_file_store, "executions", "list")
    assert "runner gone" not in text.stdout
    assert counts == Counter({"lookup": 1, "child": 1, "summarize": 1})


def test_diff_lines_up_an_execution_and_its_replay(sqlite_file_store: str) -> None:
    replay_cli_order(4)
    [original] = Client().list_executions()
    replay_id = Client().replay(original.id, from_call="summarize:0", overrides={":child::0": 99})
    result = invoke(sqlite_file_store, "executions", "diff", original.id, replay_id, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [(row["key"], row["change"]) for row in document["rows"]] == [
        ("lookup:0", "same"),
        (":child::0", "changed"),
        ("summarize:0", "changed"),
    ]
    assert document["counts"] == {"same": 1, "changed": 2, "new": 0, "missing": 0}
    assert (document["rows"][2]["a"]["output_preview"], document["rows"][2]["b"]["output_preview"]) == (
        '"total 41"',
        '"total 99"',
    )
    table = invoke(sqlite_file_store, "executions", "diff", original.id, replay_id)
    assert table.exit_code == 0, table.output
    assert ":child::0" in table.stdout  # printed literally, never as an emoji
    assert "\N{CHILD}" not in table.stdout
    assert "1 same, 2 changed, 0 new, 0 missing" in flat(table.stdout)
    missing = invoke(sqlite_file_store, "executions", "diff", original.id, "nope")
    assert missing.exit_code == 1
    assert "No execution 'nope'" in flat(missing.stderr)


@flow
def replay_cli_branch(order_id: int, extra: bool) -> str:
    total = lookup(order_id)
    if extra:
        total = child(total)
    return summarize(total)


def test_diff_shows_new_and_missing_calls(sqlite_file_store: str) -> None:
    replay_cli_branch(1, False)
    [original] = Client().list_executions()
    replay_id = Client().replay(original.id, from_call="summarize:0", inputs={"extra": True})
    rows = Client().diff(original.id, replay_id).rows
    assert [(row.key, row.change) for row in rows] == [
        ("lookup:0", "same"),
        (":child::0", "new"),
        ("summarize:0", "changed"),
    ]
    reverse = Client().diff(replay_id, original.id).rows
    assert [row.change for row in reverse] == ["same", "missing", "changed"]


def test_show_prints_keys_literally_and_its_json_has_the_inputs(sqlite_file_store: str) -> None:
    replay_cli_order(6)
    [original] = Client().list_executions()
    shown = invoke(sqlite_file_store, "executions", "show", original.id)
    assert ":child::0" in shown.stdout
    assert "\N{CHILD}" not in shown.stdout
    document = json.loads(invoke(sqlite_file_store, "executions", "show", original.id, "--json").stdout)
    assert document["inputs"] == {"order_id": 6}


def test_list_refuses_an_unknown_status(sqlite_file_store: str) -> None:
    result = invoke(sqlite_file_store, "executions", "list", "--status", "bogus")
    assert result.exit_code == 2
    assert "unknown --status bogus; valid values: queued, running, waiting, completed, failed, cancelled" in flat(
        result.stderr
    )


class Shipment(BaseModel):
    carrier: str = Field(min_length=5)
    parcels: int = Field(ge=1)
    express: bool
    notes: list[str] = Field(min_length=1)


@flow
def needs_shipment() -> str:
    shipment = wait("ship it now", question="How to ship?", schema=Shipment)
    return f"{shipment.parcels} via {shipment.carrier}"


def test_the_printed_answer_command_runs_for_a_model_typed_wait_with_spaces(sqlite_file_store: str) -> None:
    with pytest.raises(ExecutionWaitingError) as waiting:
        needs_shipment.run(execution_id="ship order 7")
    [command] = waiting.value.answer_commands
    argv = shlex.split(command)
    assert argv[:5] == ["kitaru-adapters", "executions", "answer", "ship order 7", "ship it now"]
    suggested = json.loads(argv[-1])
    assert list(Draft202012Validator(Shipment.model_json_schema()).iter_errors(suggested)) == []
    answered = invoke(sqlite_file_store, *argv[1:])
    assert answered.exit_code == 0, answered.output
    assert Client().resume("ship order 7") == "1 via ....."


def test_resume_imports_a_flow_from_the_working_directory(
    tmp_path: Path, sqlite_file_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    project = tmp_path / "project"
    project.mkdir()
    (project / "shipflows.py").write_text(
        textwrap.dedent(
            """
            from kitaru_core import flow, wait

            @flow
            def ship(order: str) -> str:
                return order + (" shipped" if wait("go", question="Ship?", schema=bool) else " held")
            """
        )
    )
    monkeypatch.syspath_prepend(str(project))
    module = importlib.import_module("shipflows")
    monkeypatch.setitem(sys.modules, "shipflows", module)  # forgotten again after the test
    with pytest.raises(ExecutionWaitingError):
        module.ship.run("A7", execution_id="ship-a7")
    assert Client().get_execution("ship-a7").entry_point == "shipflows:ship"
    Client().answer("ship-a7", "go", True)
    environment = {
        key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "KITARU_STORE_URL"}
    }
    environment["KITARU_STORE_URL"] = sqlite_file_store
    environment["KITARU_INTERACTIVE"] = "false"
    script = Path(sys.executable).with_name("kitaru-adapters")
    assert script.exists()
    resumed = subprocess.run(  # the console script, whose sys.path[0] is its own folder, not the project
        [str(script), "executions", "resume", "ship-a7", "--json"],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["output"] == "A7 shipped"

class Address(BaseModel):
    city: str
    postcode: str = Field(pattern=r"^\d+$", default="1000")


class Order(BaseModel):
    kind: Literal["refund", "exchange"]
    when: datetime
    address: Address
    backup: Address | None = None
    amount: Decimal = Field(gt=10, le=20, multiple_of=5)
    tags: set[str] = Field(min_length=2)
    email: str = Field(json_schema_extra={"format": "email"})
    pair: tuple[int, str]


@pytest.mark.parametrize(
    "schema",
    [
        Order.model_json_schema(),
        TypeAdapter(list[Order]).json_schema(),
        TypeAdapter(int | None).json_schema(),
        TypeAdapter(Literal[3]).json_schema(),
        TypeAdapter(float).json_schema(),
        {"type": "integer", "exclusiveMinimum": 7, "maximum": 9},
        {"type": "string", "minLength": 12},
        {},
    ],
    ids=["model", "list", "optional", "literal", "float", "bounded", "long string", "anything"],
)
def test_the_suggested_answer_satisfies_the_schema(schema: dict[str, Any]) -> None:
    from kitaru_core._schema_example import example_for_schema

    example = example_for_schema(schema)
    json.dumps(example)
    assert list(Draft202012Validator(schema).iter_errors(example)) == []
