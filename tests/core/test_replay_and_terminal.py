"""Replay into a new execution, and waits answered at the terminal."""

from __future__ import annotations

import builtins
from collections import Counter

import pytest
from pydantic import BaseModel
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
    with pytest.raises(
        kitaru_core.errors.ConfigurationError, match=r"Cannot override 'nope:0'.*no checkpoint call with that key"
    ):
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


# -- replay from a call key, with overridden inputs and waits; prepared replays ---------------------


def test_replay_from_a_call_key_and_an_unknown_key_creates_nothing() -> None:
    order(4)
    [original] = Client().list_executions()
    replay_id = Client().replay(original.id, from_call="confirm:0")
    assert [call.source for call in Client().get_execution(replay_id).calls] == ["store", "store", "live"]
    assert counts == Counter({"fetch": 1, "price": 1, "confirm": 2})
    with pytest.raises(kitaru_core.errors.ConfigurationError, match="no checkpoint call with key 'confirm:9'"):
        Client().replay(original.id, from_call="confirm:9")
    with pytest.raises(kitaru_core.errors.CallNotFoundError):
        Client().replay(original.id, from_call=9)
    assert Client().count_executions() == 2


def test_replay_with_changed_inputs_runs_the_calls_whose_inputs_changed() -> None:
    order(4)
    [original] = Client().list_executions()
    replay_id = Client().replay(original.id, inputs={"order_id": 7})
    assert Client().get_output(replay_id) == "total 71"
    assert counts == Counter({"fetch": 2, "price": 2, "confirm": 2})
    calls = Client().get_execution(replay_id).calls
    assert [(call.key, call.source) for call in calls if call.status == "completed"] == [
        ("fetch:0", "live"),
        ("price:0", "live"),
        ("confirm:0", "live"),
    ]  # the copied calls stay in the timeline as superseded: their inputs differ
    with pytest.raises(kitaru_core.errors.ConfigurationError, match="has no input 'order'; its inputs: 'order_id'"):
        Client().replay(original.id, inputs={"order": 7})
    with pytest.raises(kitaru_core.errors.ConfigurationError, match="Invalid inputs"):
        Client().replay(original.id, inputs={"order_id": "seven"})
    assert Client().count_executions() == 2


@checkpoint
def note(text: str) -> str:
    counts[text] += 1
    return text


@flow
def two_questions() -> str:
    first = wait("first question", question="First?", schema=bool)
    middle = note("middle")
    second = wait("second", question="Second?", schema=int)
    return f"{first} {middle} {second}"


def _answered_two_questions() -> str:
    with pytest.raises(kitaru_core.errors.ExecutionWaitingError) as waiting:
        two_questions()
    execution_id = waiting.value.execution_id
    Client().answer(execution_id, "first question", True)
    with pytest.raises(kitaru_core.errors.ExecutionWaitingError):
        Client().resume(execution_id)
    Client().answer(execution_id, "second", 2)
    assert Client().resume(execution_id) == "True middle 2"
    return execution_id


def test_replay_keeps_answers_of_waits_before_the_chosen_call_and_asks_later_ones_again() -> None:
    execution_id = _answered_two_questions()
    with pytest.raises(kitaru_core.errors.ExecutionWaitingError) as waiting:
        Client().replay(execution_id, from_call="note:0")
    assert waiting.value.wait_names == ["second"]
    replayed = Client().get_execution(waiting.value.execution_id)
    assert {wait.name: wait.status for wait in replayed.waits} == {"first question": "answered", "second": "pending"}
    # without from_call every answered wait keeps its answer; an overridden answer replaces one
    assert Client().get_output(Client().replay(execution_id)) == "True middle 2"
    replay_id = Client().replay(execution_id, overrides={"second": 5, "first question": False})
    assert Client().get_output(replay_id) == "False middle 5"
    count = Client().count_executions()
    with pytest.raises(kitaru_core.errors.InvalidAnswerError, match=r"'second'.*; no replay was created"):
        Client().replay(execution_id, overrides={"second": "five"})
    assert Client().count_executions() == count


def test_a_prepared_replay_is_queued_left_alone_by_recover_and_runs_later() -> None:
    order(4)
    [original] = Client().list_executions()
    replay_id = Client().replay(original.id, from_call=2, overrides={"fetch:0": 70}, run=False)
    summary = Client().get_execution(replay_id)
    assert summary.status == "queued"
    assert summary.replay_of == original.id
    assert replay_id not in Client().recover()
    assert Client().get_execution(replay_id).status == "queued"
    assert counts == Counter({"fetch": 1, "price": 1, "confirm": 1})
    assert Client().resume(replay_id) == "total 71"
    assert counts == Counter({"fetch": 1, "price": 2, "confirm": 2})
    assert Client().get_execution(replay_id).status == "completed"


class Quote(BaseModel):
    amount: int
    currency: str = "EUR"


@checkpoint
def quote(amount: int) -> Quote:
    counts["quote"] += 1
    return Quote(amount=amount)


@flow
def quoted(amount: int) -> str:
    result = quote(amount)
    return note(f"{result.amount} {result.currency}")


def test_a_plain_override_is_validated_into_the_stored_model() -> None:
    assert quoted(3) == "3 EUR"
    [original] = Client().list_executions()
    replay_id = Client().replay(original.id, overrides={"quote:0": {"amount": 9, "currency": "USD"}})
    assert Client().get_output(replay_id) == "9 USD"
    with pytest.raises(kitaru_core.errors.ConfigurationError, match="not a valid Quote"):
        Client().replay(original.id, overrides={"quote:0": {"amount": "many"}})


class _DemoToolOutcomeCodec:
    """Stores outputs in an adapter's own format, and serves replay overrides as the adapters' codecs do."""

    def encode(self, value: str) -> tuple[str, bytes]:
        return "json:demo.ToolOutcome", value.encode()

    def decode(self, format: str, payload: bytes) -> str:
        from kitaru_core.adapters import ModelResponseOverride, ToolResultOverride, read_override

        override = read_override(format, payload)
        if isinstance(override, ToolResultOverride):
            return f"given {override.value!r}"
        if isinstance(override, ModelResponseOverride):
            calls = [(call.name, call.arguments, call.id) for call in override.tool_calls]
            return f"said {override.text!r} calling {calls!r}"
        if format != "json:demo.ToolOutcome":
            raise kitaru_core.errors.SerializationError(f"found format {format!r}")
        return payload.decode()


@flow
def adapter_like() -> list[str]:
    from kitaru_core.adapters import run_checkpoint  # what adapters call

    codec = _DemoToolOutcomeCodec()
    return [
        run_checkpoint("model_request", lambda: "hello", kind="model", codec=codec),
        run_checkpoint("tool:lookup", lambda: "found", kind="tool", codec=codec),
        run_checkpoint("handoff:desk", lambda: "desk", kind="handoff", codec=codec),
        run_checkpoint("tool:after", lambda: "live", kind="tool", codec=codec),
    ]


def test_adapter_calls_are_overridden_in_the_neutral_form_their_codec_converts() -> None:
    assert adapter_like() == ["hello", "found", "desk", "live"]
    [original] = Client().list_executions()
    replay_id = Client().replay(
        original.id,
        from_call="tool:after:0",
        overrides={
            "model_request:0": {"text": "hi", "tool_calls": [{"name": "lookup", "arguments": {"q": 1}}]},
            "tool:lookup:0": {"rows": [1, 2]},
        },
    )
    said, given, handoff, after = Client().get_output(replay_id)
    salted = said.rsplit("'call_replay_", 1)[1]
    assert said.startswith("said 'hi' calling [('lookup', {'q': 1}, 'call_replay_")
    assert salted.endswith("_0')]")
    assert (given, handoff, after) == ("given {'rows': [1, 2]}", "desk", "live")
    # a plain string is the response's text; the derived tool call id is the same on every serve
    text_only = Client().replay(original.id, overrides={"model_request:0": "only text"})
    assert Client().get_output(text_only)[0] == "said 'only text' calling []"
    assert Client().get_output(replay_id)[0] == said


def test_the_override_readers_return_their_kind_and_refuse_the_other() -> None:
    from kitaru_core.adapters import (
        MODEL_RESPONSE_OVERRIDE_FORMAT,
        TOOL_RESULT_OVERRIDE_FORMAT,
        read_model_response_override,
        read_tool_result_override,
    )

    response = (MODEL_RESPONSE_OVERRIDE_FORMAT, b'{"text": "hi", "tool_calls": []}')
    result = (TOOL_RESULT_OVERRIDE_FORMAT, b'{"value": [1]}')
    own = ("json:demo.ToolOutcome", b"found")
    assert read_model_response_override(*response).text == "hi"  # type: ignore[union-attr]
    assert read_tool_result_override(*result).value == [1]  # type: ignore[union-attr]
    assert read_model_response_override(*own) is None
    assert read_tool_result_override(*own) is None
    with pytest.raises(kitaru_core.errors.SerializationError, match="a model call takes a response override"):
        read_model_response_override(*result)
    with pytest.raises(kitaru_core.errors.SerializationError, match="takes its result as plain JSON"):
        read_tool_result_override(*response)
    with pytest.raises(kitaru_core.errors.SerializationError, match="model response override is corrupt"):
        read_model_response_override(MODEL_RESPONSE_OVERRIDE_FORMAT, b'{"text": null}')


def test_adapter_overrides_that_do_not_fit_are_refused_before_anything_is_created() -> None:
    adapter_like()
    [original] = Client().list_executions()
    refusals = {
        "model_request:0": ({"text": None}, "is not a model response"),
        "tool:lookup:0": (float("nan"), "is not plain JSON"),
        "handoff:desk:0": ("other", "'json:demo.ToolOutcome'"),
    }
    for key, (value, expected) in refusals.items():
        with pytest.raises(kitaru_core.errors.ConfigurationError, match=expected):
            Client().replay(original.id, overrides={key: value}, run=False)
    with pytest.raises(kitaru_core.errors.ConfigurationError, match=r"tool_calls\.0\.name"):
        Client().replay(original.id, overrides={"model_request:0": {"tool_calls": [{"arguments": {}}]}})
    assert Client().count_executions() == 1


def test_a_worker_claims_a_prepared_replay_on_its_queue_and_runs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from kitaru_core import _leases
    from kitaru_core._workers import claim_executions

    order(4)
    [original] = Client().list_executions()
    replay_id = Client().replay(original.id, from_call="confirm:0", run=False, queue="replays")
    store = Client().store
    assert claim_executions(store, ["default"], 5, lease_duration_s=30.0) == []
    [claim] = claim_executions(store, ["replays"], 5, lease_duration_s=30.0)
    assert (claim.execution_id, claim.reason) == (replay_id, "queued")
    monkeypatch.setattr(_leases, "lease_handoff", claim.owner)  # as the worker's child takes it over
    assert Client().resume(replay_id, audit=False) == "total 41"
    assert counts == Counter({"fetch": 1, "price": 1, "confirm": 2})
