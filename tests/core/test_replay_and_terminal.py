"""Replay into a new execution, and waits answered at the terminal."""

from __future__ import annotations

import builtins
from collections import Counter

import pytest
from typer.testing import CliRunner

import kitaru_core
from kitaru_core import ApprovalDecision, Client, checkpoint, configure, flow, wait
from kitaru_core.cli import app

counts: Counter[str] = Counter()


@checkpoint
def fetch(order_id: int) -> int:
    counts["fetch"] += 1
    return order_id * 10


@checkpoint
def price(amount: int) -> int:
    counts["price"] += 1
    return amount + 1


@checkpoint
def confirm(total: int) -> str:
    counts["confirm"] += 1
    return f"total {total}"


@flow
def order(order_id: int) -> str:
    return confirm(price(fetch(order_id)))


@pytest.fixture(autouse=True)
def _fresh(sqlite_file_store: str) -> None:
    counts.clear()


def test_replay_reuses_calls_before_the_chosen_one_and_runs_the_rest_live() -> None:
    assert order(4) == "total 41"
    [original] = Client().list_executions()
    assert counts == Counter({"fetch": 1, "price": 1, "confirm": 1})

    replay_id = Client().replay(original.id, from_sequence=2)
    assert counts == Counter({"fetch": 1, "price": 2, "confirm": 2})
    replayed = Client().get_execution(replay_id)
    assert replayed.replay_of == original.id
    assert replayed.status == "completed"
    assert [(call.key, call.source) for call in replayed.calls] == [
        ("fetch:0", "store"),
        ("price:0", "live"),
        ("confirm:0", "live"),
    ]
    assert Client().get_output(replay_id) == "total 41"
    # the original is untouched
    assert [call.run_number for call in Client().get_execution(original.id).calls] == [1, 1, 1]


def test_replay_with_an_overridden_output_feeds_it_downstream() -> None:
    order(4)
    [original] = Client().list_executions()
    replay_id = Client().replay(original.id, from_sequence=3, overrides={"price:0": 99})
    assert Client().get_output(replay_id) == "total 99"
    assert counts == Counter({"fetch": 1, "price": 1, "confirm": 2})
    with pytest.raises(kitaru_core.errors.ConfigurationError, match="No completed call with key 'nope:0'"):
        Client().replay(original.id, overrides={"nope:0": 1})


def test_cli_replay_from_a_call(sqlite_file_store: str) -> None:
    order(5)
    [original] = Client().list_executions()
    result = CliRunner().invoke(
        app, ["--store-url", sqlite_file_store, "executions", "replay", original.id, "--from", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "replay execution:" in result.output
    assert counts == Counter({"fetch": 2, "price": 2, "confirm": 2})


@flow
def ask_twice() -> tuple[bool, ApprovalDecision]:
    proceed = wait("proceed", question="Proceed?", schema=bool)
    decision = wait("approve-send", question="Send it?", schema=ApprovalDecision)
    return proceed, decision


def test_waits_are_asked_at_the_terminal_and_bad_answers_asked_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(interactive=True)
    answers = iter(["maybe", "yes", "n too risky today"])
    prompts: list[str] = []

    def fake_input(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(builtins, "input", fake_input)
    proceed, decision = ask_twice()
    assert proceed is True
    assert decision == ApprovalDecision(approved=False, message="too risky today")
    assert len(prompts) == 3
    assert "Proceed?" in prompts[0]
    assert "y/n" in prompts[2]
    assert "Answer refused" in capsys.readouterr().out
    [execution] = Client().list_executions()
    assert execution.status == "completed"
    answered = {wait_view.name: wait_view.answer for wait_view in Client().get_execution(execution.id).waits}
    assert answered == {"proceed": True, "approve-send": {"approved": False, "message": "too risky today"}}


def test_end_of_input_at_the_terminal_suspends(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(interactive=True)

    def no_input(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr(builtins, "input", no_input)
    with pytest.raises(kitaru_core.errors.ExecutionWaitingError) as waiting:
        ask_twice()
    assert waiting.value.wait_names == ["proceed"]


@flow
def needs_go() -> bool:
    return wait("go", question="Go?", schema=bool)


def test_write_commands_print_json(sqlite_file_store: str) -> None:
    import json

    with pytest.raises(kitaru_core.errors.ExecutionWaitingError) as waiting:
        needs_go()
    execution_id = waiting.value.execution_id
    runner = CliRunner()
    base = ["--store-url", sqlite_file_store, "executions"]
    answered = runner.invoke(app, [*base, "answer", execution_id, "go", "--value", "true", "--json"])
    assert answered.exit_code == 0, answered.output
    assert json.loads(answered.output)["answer"] is True
    resumed = runner.invoke(app, [*base, "resume", execution_id, "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.output) == {"execution_id": execution_id, "status": "completed", "output": True}
    replayed = runner.invoke(app, [*base, "replay", execution_id, "--json"])
    assert json.loads(replayed.output)["replay_of"] == execution_id
    cancelled = runner.invoke(app, [*base, "cancel", execution_id, "--json"])
    assert json.loads(cancelled.output)["id"] == execution_id
