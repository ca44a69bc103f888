"""A checkpoint call cut off inside its body: `on_interrupted="retry" | "ask" | "fail"` (design §4.1).

The child is a real process whose `refund` body writes a line to a file, tells the parent it is
inside, and sleeps; the parent kills it with SIGKILL there (inside the call, before its commit),
then re-runs the program and answers from the real `kitaru-adapters` command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kitaru_core
from kitaru_core import Client, SideEffectPolicy, checkpoint, flow, wait
from kitaru_core._interrupted import wait_name
from kitaru_core._runtime import get_store
from kitaru_core.errors import (
    ConfigurationError,
    ExecutionWaitingError,
    InterruptedCallError,
    InvalidAnswerError,
)
from tests._kill_inside import kill_when_inside

CHILD_SCRIPT = """
import os
import sys
import time
from pathlib import Path

from kitaru_core import checkpoint, flow
from kitaru_core.errors import ExecutionWaitingError, InterruptedCallError

LOG = Path(sys.argv[1])
MODE = sys.argv[2]


def log(line: str) -> None:
    with LOG.open("a", encoding="utf-8") as handle:
        handle.write(line + "\\n")


@checkpoint(name="refund", on_interrupted=MODE)
def refund(order: int) -> dict[str, int]:
    log(f"refund:{order}")
    if os.environ.get("HANG_INSIDE") == "1":
        print("INSIDE", flush=True)
        time.sleep(120)
    return {"refunded": order}


@checkpoint(name="notify")
def notify(amount: int) -> str:
    log(f"notify:{amount}")
    return f"sent {amount}"


@flow(name="refund_desk")
def refund_desk(order: int) -> str:
    receipt = refund(order)
    return notify(receipt["refunded"])


if __name__ == "__main__":
    try:
        print("RESULT " + refund_desk.run(42, execution_id=sys.argv[3]), flush=True)
    except ExecutionWaitingError as error:
        print("WAITING " + " ".join(error.wait_names), flush=True)
        sys.exit(3)
    except InterruptedCallError as error:
        print(str(error), file=sys.stderr, flush=True)
        sys.exit(4)
"""


class Program:
    """The child program, its store and the log of what its bodies did."""

    def __init__(self, tmp_path: Path, store_url: str, mode: str, execution_id: str) -> None:
        self.tmp_path = tmp_path
        self.script = tmp_path / "refund_desk.py"
        self.script.write_text(CHILD_SCRIPT, encoding="utf-8")
        self.log = tmp_path / "bodies.log"
        self.mode = mode
        self.execution_id = execution_id
        self.env = {
            **os.environ,
            "KITARU_STORE_URL": store_url,
            "KITARU_ARTIFACTS_URL": str(tmp_path / "artifacts"),
            "KITARU_INTERACTIVE": "false",
        }

    def bodies(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").split() if self.log.exists() else []

    def command(self) -> list[str]:
        return [sys.executable, str(self.script), str(self.log), self.mode, self.execution_id]

    def kill_inside_refund(self) -> None:
        """Run until the refund body is running, then SIGKILL the process there."""
        kill_when_inside(self.command(), env={**self.env, "HANG_INSIDE": "1"}, cwd=self.tmp_path)

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(), capture_output=True, text=True, env=self.env, cwd=self.tmp_path, timeout=120
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        script = Path(sys.executable).with_name("kitaru-adapters")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "kitaru_core.cli"]
        return subprocess.run(
            [*command, *args], capture_output=True, text=True, env=self.env, cwd=self.tmp_path, timeout=120
        )


def refund_wait(execution_id: str) -> str:
    waits = Client().get_execution(execution_id).waits
    assert [wait.status for wait in waits] == ["pending"], waits
    return waits[0].name


def test_retry_runs_the_interrupted_body_again(shared_store: str, tmp_path: Path) -> None:
    program = Program(tmp_path, shared_store, "retry", "desk-retry")
    program.kill_inside_refund()
    assert program.bodies() == ["refund:42"]
    calls = Client().get_execution("desk-retry").calls
    assert calls == []  # the default records nothing before the body

    done = program.run()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "RESULT sent 42"
    assert program.bodies() == ["refund:42", "refund:42", "notify:42"]  # at most twice in total


def test_fail_raises_a_clear_error_until_resolved(shared_store: str, tmp_path: Path) -> None:
    program = Program(tmp_path, shared_store, "fail", "desk-fail")
    program.kill_inside_refund()
    started = Client().get_execution("desk-fail").calls
    assert [(call.name, call.status) for call in started] == [("refund", "interrupted")]

    failed = program.run()
    assert failed.returncode == 4, failed.stdout + failed.stderr
    name = wait_name("refund:0", 1)
    assert "refund(order=42)" in failed.stderr
    assert "may have acted" in failed.stderr
    assert f"kitaru-adapters executions answer desk-fail {name}" in failed.stderr
    assert program.bodies() == ["refund:42"]  # the body ran once
    detail = Client().get_execution("desk-fail")
    assert detail.status == "failed"
    assert detail.error is not None
    assert "InterruptedCallError" in detail.error
    assert refund_wait("desk-fail") == name

    # Still unresolved: a re-run fails the same way and runs nothing.
    assert program.run().returncode == 4
    assert program.bodies() == ["refund:42"]

    answered = program.cli("executions", "answer", "desk-fail", name, "--value", '{"action": "retry"}')
    assert answered.returncode == 0, answered.stderr
    done = program.run()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "RESULT sent 42"
    assert program.bodies() == ["refund:42", "refund:42", "notify:42"]


def test_ask_stops_at_a_wait_answered_with_retry(shared_store: str, tmp_path: Path) -> None:
    program = Program(tmp_path, shared_store, "ask", "desk-ask-retry")
    program.kill_inside_refund()

    stopped = program.run()
    name = wait_name("refund:0", 1)
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    assert stopped.stdout.strip() == f"WAITING {name}"
    assert program.bodies() == ["refund:42"]
    detail = Client().get_execution("desk-ask-retry")
    assert detail.status == "waiting"
    (pending,) = detail.waits
    assert pending.question.startswith("`refund(order=42)` started at ")
    assert "may have acted" in pending.question
    assert pending.metadata["call_key"] == "refund:0"

    refused = program.cli("executions", "answer", "desk-ask-retry", name, "--value", '{"action": "later"}')
    assert refused.returncode != 0
    assert "refused" in (refused.stdout + refused.stderr).lower()
    assert refund_wait("desk-ask-retry") == name

    answered = program.cli("executions", "answer", "desk-ask-retry", name, "--value", '{"action": "retry"}')
    assert answered.returncode == 0, answered.stderr
    done = program.run()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "RESULT sent 42"
    assert program.bodies() == ["refund:42", "refund:42", "notify:42"]
    calls = Client().get_execution("desk-ask-retry").calls
    assert [(call.name, call.status, call.attempts) for call in calls] == [
        ("refund", "superseded", 1),
        ("refund", "completed", 2),
        ("notify", "completed", 1),
    ]


def test_ask_answered_with_a_result_serves_it_without_running_the_body(
    shared_store: str, tmp_path: Path
) -> None:
    program = Program(tmp_path, shared_store, "ask", "desk-ask-result")
    program.kill_inside_refund()
    assert program.run().returncode == 3
    name = refund_wait("desk-ask-result")

    # The result is validated against the call's return annotation (dict[str, int]).
    wrong = program.cli(
        "executions",
        "answer",
        "desk-ask-result",
        name,
        "--value",
        '{"action": "result", "result": {"refunded": "x"}}',
    )
    assert wrong.returncode != 0
    assert refund_wait("desk-ask-result") == name

    answered = program.cli(
        "executions",
        "answer",
        "desk-ask-result",
        name,
        "--value",
        '{"action": "result", "result": {"refunded": 7}}',
    )
    assert answered.returncode == 0, answered.stderr
    done = program.run()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "RESULT sent 7"  # the flow and the downstream call got the given value
    assert program.bodies() == ["refund:42", "notify:7"]  # the refund body did not run again
    calls = Client().get_execution("desk-ask-result").calls
    refund = [call for call in calls if call.name == "refund" and call.status == "completed"]
    assert len(refund) == 1
    assert refund[0].details["given_by"] == "person"
    assert refund[0].details["wait"] == name

    # A later run serves it from the store like any completed call.
    again = program.run()
    assert again.stdout.strip() == "RESULT sent 7"
    assert program.bodies() == ["refund:42", "notify:7"]


# -- in one process ----------------------------------------------------------------------------------

seen_during_body: list[list[tuple[str, str]]] = []


@checkpoint(on_interrupted="ask")
def observed(value: int) -> int:
    store = get_store()
    execution = kitaru_core.current_execution()
    assert execution is not None
    seen_during_body.append([(call.name, call.status) for call in store.load_calls(execution.execution_id)])
    return value * 2


@checkpoint
def plain(value: int) -> int:
    return value + 1


@flow
def observed_flow(value: int) -> int:
    return plain(observed(value))


def test_started_record_is_committed_before_the_body_and_becomes_the_outcome(store_url: str) -> None:
    seen_during_body.clear()
    assert observed_flow.run(5, execution_id="observed-1") == 11
    assert seen_during_body == [[("observed", "started")]]
    calls = get_store().load_calls("observed-1", include_superseded=True)
    assert [(call.name, call.status) for call in calls] == [("observed", "completed"), ("plain", "completed")]
    assert observed_flow.run(5, execution_id="observed-1") == 11  # served
    assert len(seen_during_body) == 1


@checkpoint(on_interrupted="fail")
def asks_inside(value: int) -> int:
    return value if wait("confirm", question="go on?", schema=bool) else -value


@flow
def asks_inside_flow(value: int) -> int:
    return asks_inside(value)


def test_a_body_that_stops_at_a_wait_is_not_interrupted(sqlite_file_store: str) -> None:
    with pytest.raises(ExecutionWaitingError) as stopped:
        asks_inside_flow(3)
    assert stopped.value.wait_names == ["confirm"]
    execution_id = stopped.value.execution_id
    assert get_store().load_calls(execution_id, include_superseded=True) == []
    Client().answer(execution_id, "confirm", True)
    assert asks_inside_flow(3) == 3


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="on_interrupted"):
        checkpoint(on_interrupted="later")(plain.function)  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="on_interrupted"):
        kitaru_core.configure(on_interrupted="maybe")


def test_wait_names_are_short_and_safe_for_any_key() -> None:
    assert wait_name("refund:0", 1) == "interrupted:refund:0:run1"
    nested = wait_name("pydantic_ai:desk:0/tool:refund:call 1", 2)
    assert "/" not in nested
    assert " " not in nested
    assert nested.endswith(":run2")
    long_key = "scope:0/" * 40 + "tool:refund:x"
    long_name = wait_name(long_key, 3)
    assert len(long_name) <= 200
    assert long_name != wait_name(long_key + "y", 3)


def test_error_message_names_the_call_and_the_commands() -> None:
    error = InterruptedCallError("desk-1", "refund:0", "refund(order=42)", 0.0, "interrupted:refund:0:run1")
    text = str(error)
    assert "refund(order=42)" in text
    assert "1970-01-01T00:00:00Z" in text
    assert "kitaru-adapters executions answer desk-1 interrupted:refund:0:run1" in text
    assert "kitaru-adapters executions resume desk-1" in text


def test_replay_does_not_serve_a_started_record(sqlite_file_store: str) -> None:
    store = get_store()
    record = store.create_execution(
        "replay-src", flow_name="observed_flow", entry_point=None, inputs_fingerprint=None, inputs=None
    )
    now = time.time()
    store.record_call(
        {
            "execution_id": record.id,
            "call_key": "observed:0",
            "name": "observed",
            "kind": "user",
            "sequence": 1,
            "status": "started",
            "attempts": 1,
            "run_number": 1,
            "started_at_epoch_s": now,
            "ended_at_epoch_s": now,
        }
    )
    detail = Client().get_execution("replay-src")
    assert [(call.name, call.status) for call in detail.calls] == [("observed", "interrupted")]
    replayed = Client().replay("replay-src", run=False)
    copied = get_store().load_calls(replayed)
    assert copied == []
    assert json.dumps(detail.model_dump(mode="json"))  # the view serializes


interrupt_next: list[bool] = [False]
body_runs: list[int] = []


@checkpoint(on_interrupted="ask")
def wire(amount: int) -> int:
    body_runs.append(amount)
    if interrupt_next[0]:
        interrupt_next[0] = False
        raise KeyboardInterrupt  # stops the body halfway, like a kill: the started record stays
    return amount


@flow
def wire_flow(amount: int) -> int:
    return plain(wire(amount))


def test_ctrl_c_inside_the_body_is_an_interruption_on_every_backend(store_url: str) -> None:
    body_runs.clear()
    interrupt_next[0] = True
    with pytest.raises(KeyboardInterrupt):
        wire_flow.run(10, execution_id="wire-1")
    with pytest.raises(ExecutionWaitingError) as stopped:
        wire_flow.run(10, execution_id="wire-1")
    (name,) = stopped.value.wait_names
    assert '{"action": "retry"}' in str(stopped.value)  # the example answer in the message
    assert body_runs == [10]
    with pytest.raises(InvalidAnswerError):
        Client().answer("wire-1", name, {"action": "result", "result": "ten"})  # not an int
    Client().answer("wire-1", name, {"action": "result", "result": 12})
    assert wire_flow.run(10, execution_id="wire-1") == 13
    assert body_runs == [10]


def test_global_default_and_side_effect_policy(sqlite_file_store: str) -> None:
    kitaru_core.configure(on_interrupted="fail")
    seen_during_body.clear()
    try:
        assert plain_observed_flow(1) == 2
    finally:
        kitaru_core.configure(on_interrupted="retry")
    assert seen_during_body == [[("plain_observed", "started")]]

    assert SideEffectPolicy(["refund"]).mode("refund") == "ask"
    assert SideEffectPolicy(["refund"]).mode("lookup") is None
    assert SideEffectPolicy({"refund": "fail"}, "ask").mode("lookup") == "ask"
    assert SideEffectPolicy({"refund": "fail"}).mode("refund") == "fail"
    with pytest.raises(ConfigurationError, match=r"side_effects=\['refund'\]"):
        SideEffectPolicy("refund")
    with pytest.raises(ConfigurationError, match="on_interrupted"):
        SideEffectPolicy({"refund": "sometimes"})


@checkpoint
def plain_observed(value: int) -> int:
    execution = kitaru_core.current_execution()
    assert execution is not None
    seen_during_body.append(
        [(call.name, call.status) for call in get_store().load_calls(execution.execution_id)]
    )
    return value + 1


@flow
def plain_observed_flow(value: int) -> int:
    return plain_observed(value)
