"""The SDK author's own examples (openai-agents sdist, `examples/`), unchanged, run durably.

Each test runs `examples/run_openai_agents_example.py` in a subprocess against the scripted model
server and a SQLite file store: `customer_service/main.py` (handoffs, a random flight number drawn
in a handoff hook, a tool that needs it) and `agent_patterns/human_in_the_loop.py` (a tool that
needs approval), in the examples' own auto mode.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents")

from kitaru_core import Client, configure
from kitaru_core.testing import Script, ScriptedModelServer, read_request_log
from tests.openai_agents._examples_support import openai_agents_examples_root

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "examples" / "run_openai_agents_example.py"
SCRIPTS = ROOT / "examples" / "scripts"
CUSTOMER_SERVICE = "examples.customer_service.main"
HUMAN_IN_THE_LOOP = "examples.agent_patterns.human_in_the_loop"
EXECUTION = "example"
FLIGHT = re.compile(r"^FLT-\d{3}$")

# An uninterrupted customer-service run: triage model call -> handoff -> seat booking model call
# -> update_seat -> final model call.
CUSTOMER_SERVICE_REQUESTS = 3
CUSTOMER_SERVICE_CALLS = 5


@pytest.fixture(scope="session")
def sdist_examples() -> Path:
    """The folder holding the sdist's `examples/` package (downloaded once, then cached)."""
    return openai_agents_examples_root()


def _environment(tmp_path: Path, sdist_examples: Path) -> dict[str, str]:
    return {
        **os.environ,
        "KITARU_STORE_URL": f"sqlite:///{tmp_path / 'kitaru.db'}",
        "KITARU_ARTIFACTS_URL": str(tmp_path / "artifacts"),
        "KITARU_INTERACTIVE": "false",
        "EXAMPLES_INTERACTIVE_MODE": "auto",
        "PYTHONPATH": os.pathsep.join([str(sdist_examples), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
    }


def _run(
    module: str, base_url: str, tmp_path: Path, sdist_examples: Path, *options: str
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(RUNNER), module, "--base-url", base_url, "--execution-id", EXECUTION]
    return subprocess.run(
        [*command, *options],
        env=_environment(tmp_path, sdist_examples),
        cwd=tmp_path,  # human_in_the_loop saves its RunState under ./.cache
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _cli(tmp_path: Path, sdist_examples: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kitaru_core.cli", *arguments],
        env=_environment(tmp_path, sdist_examples),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    """A client on the subprocesses' store."""
    configure(
        store_url=f"sqlite:///{tmp_path / 'kitaru.db'}", artifacts_url=str(tmp_path / "artifacts"), reset=True
    )
    yield Client()
    configure(reset=True)


def _stored_flight_numbers(client: Client) -> dict[str, Any]:
    """The flight number stored with the handoff and the one `update_seat` saw, with their calls."""
    detail = client.get_execution(EXECUTION)
    handoffs = [call for call in detail.calls if call.name == "handoff:transfer_to_seat_booking_agent"]
    assert all(call.kind == "handoff" for call in handoffs)  # a handoff takes no replay override
    seat_updates = [call for call in detail.calls if call.name == "tool:update_seat"]
    found: dict[str, Any] = {"handoffs": handoffs, "seat_updates": seat_updates}
    if handoffs:
        stored = client.call_output(EXECUTION, handoffs[0].sequence)
        assert stored["agent"] == "Seat Booking Agent"
        found["handoff"] = stored["context"]["flight_number"]
    if seat_updates:
        found["update_seat"] = client.call_output(EXECUTION, seat_updates[0].sequence)["context"][
            "flight_number"
        ]
    return found


def test_customer_service_runs_durably_and_a_rerun_pays_nothing(
    tmp_path: Path, sdist_examples: Path, client: Client
) -> None:
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(
        Script.from_json(SCRIPTS / "customer_service.json"), request_log_path=log
    ) as server:
        first = _run(CUSTOMER_SERVICE, server.base_url, tmp_path, sdist_examples)
        assert first.returncode == 0, first.stderr
        assert "Handed off from Triage Agent to Seat Booking Agent" in first.stdout
        assert (
            "Seat Booking Agent: Tool call output: Updated seat to 12A for confirmation number KX4Q2Z"
            in first.stdout
        )
        assert "Seat Booking Agent: Done: Updated seat to 12A" in first.stdout
        assert len(read_request_log(log)) == CUSTOMER_SERVICE_REQUESTS
        again = _run(CUSTOMER_SERVICE, server.base_url, tmp_path, sdist_examples)
        assert again.returncode == 0, again.stderr
        assert again.stdout == first.stdout
        assert len(read_request_log(log)) == CUSTOMER_SERVICE_REQUESTS
    detail = client.get_execution(EXECUTION)
    assert detail.status == "completed"
    assert [call.kind for call in detail.calls] == ["model", "handoff", "model", "tool", "model"]
    assert {call.source for call in detail.calls} == {"store"}
    flights = _stored_flight_numbers(client)
    assert FLIGHT.match(flights["handoff"]), flights
    assert flights["update_seat"] == flights["handoff"]


@pytest.mark.parametrize("kill_after", [1, 2, 3, 4])
def test_customer_service_resumes_after_sigkill_with_the_same_flight_number(
    tmp_path: Path, sdist_examples: Path, client: Client, kill_after: int
) -> None:
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(
        Script.from_json(SCRIPTS / "customer_service.json"), request_log_path=log
    ) as server:
        killed = _run(
            CUSTOMER_SERVICE, server.base_url, tmp_path, sdist_examples, "--crash-after", str(kill_after)
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        # calls 1, 3 and 5 are model calls: the kill came after (kill_after + 1) // 2 requests
        assert len(read_request_log(log)) == (kill_after + 1) // 2
        before = _stored_flight_numbers(client)
        assert len(client.get_execution(EXECUTION).calls) == kill_after
        resumed = _run(CUSTOMER_SERVICE, server.base_url, tmp_path, sdist_examples)
        assert resumed.returncode == 0, resumed.stderr
        assert (
            "Seat Booking Agent: Done: Updated seat to 12A for confirmation number KX4Q2Z" in resumed.stdout
        )
        # no completed model call is made again: the total is an uninterrupted run's
        assert len(read_request_log(log)) == CUSTOMER_SERVICE_REQUESTS
    detail = client.get_execution(EXECUTION)
    assert detail.status == "completed"
    assert len([call for call in detail.calls if call.status == "completed"]) == CUSTOMER_SERVICE_CALLS
    after = _stored_flight_numbers(client)
    assert FLIGHT.match(after["handoff"]), after
    # the seat booking tool of the resumed process saw the flight number drawn once, by the hook
    assert after["update_seat"] == after["handoff"]
    if kill_after >= 2:  # the hook ran before the kill: its flight number survives it
        assert before["handoff"] == after["handoff"]
        assert after["handoffs"][0].run_number == 1
        assert after["handoffs"][0].source == "store"
    assert len(after["handoffs"]) == 1
    assert len(after["seat_updates"]) == 1


def test_human_in_the_loop_interrupt_mode_keeps_the_examples_runstate_flow(
    tmp_path: Path, sdist_examples: Path, client: Client
) -> None:
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(
        Script.from_json(SCRIPTS / "human_in_the_loop.json"), request_log_path=log
    ) as server:
        result = _run(
            HUMAN_IN_THE_LOOP, server.base_url, tmp_path, sdist_examples, "--approval-mode", "interrupt"
        )
        assert result.returncode == 0, result.stderr
        assert "Run interrupted - tool approval required" in result.stdout
        assert "✓ Approved: get_temperature" in result.stdout
        assert result.stdout.rstrip().endswith("Oakland is sunny and 20° Celsius.")
        saved = json.loads((tmp_path / ".cache/agent_patterns/human_in_the_loop/result.json").read_text())
        assert saved  # the example's own to_json()/from_json() round trip ran
        # the interrupted turn's model call is not repeated: one call, then the answer
        records = read_request_log(log)
        assert [record["matched_rule"] for record in records] == [0, 1]
        again = _run(
            HUMAN_IN_THE_LOOP, server.base_url, tmp_path, sdist_examples, "--approval-mode", "interrupt"
        )
        assert again.returncode == 0, again.stderr
        assert len(read_request_log(log)) == 2
    detail = client.get_execution(EXECUTION)
    assert detail.status == "completed"
    assert detail.waits == []
    temperature = [call for call in detail.calls if call.name == "tool:get_temperature"]
    assert len(temperature) == 1
    assert temperature[0].run_number == 1
    assert client.call_output(EXECUTION, temperature[0].sequence)["output"] == (
        "The temperature in Oakland is 20° Celsius"
    )


def _stop_at_the_approval(
    tmp_path: Path, sdist_examples: Path, client: Client, base_url: str, log: Path
) -> str:
    """Run human_in_the_loop in wait mode up to its approval wait; return the wait's name."""
    first = _run(HUMAN_IN_THE_LOOP, base_url, tmp_path, sdist_examples)
    assert first.returncode == 3, first.stdout + first.stderr
    assert "Final Output" not in first.stdout
    pending = client.pending_waits(EXECUTION)
    assert len(pending) == 1
    name = pending[0].name
    assert name.startswith("approve:get_temperature:call_")
    assert name in first.stderr
    assert client.get_execution(EXECUTION).status == "waiting"
    assert len(read_request_log(log)) == 1
    return name


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_human_in_the_loop_waits_durably_for_the_cli_answer(
    tmp_path: Path, sdist_examples: Path, client: Client, decision: str
) -> None:
    log = tmp_path / "requests.jsonl"
    denial = "The user does not want Oakland's temperature looked up."
    with ScriptedModelServer(
        Script.from_json(SCRIPTS / "human_in_the_loop.json"), request_log_path=log
    ) as server:
        name = _stop_at_the_approval(tmp_path, sdist_examples, client, server.base_url, log)
        options = ["--approve"] if decision == "approve" else ["--deny", "--message", denial]
        answered = _cli(tmp_path, sdist_examples, "executions", "answer", EXECUTION, name, *options)
        assert answered.returncode == 0, answered.stdout + answered.stderr
        resumed = _run(HUMAN_IN_THE_LOOP, server.base_url, tmp_path, sdist_examples)
        assert resumed.returncode == 0, resumed.stderr
        records = read_request_log(log)
    # the interrupted turn's model call is served; only the answer's model call is new
    assert len(records) == 2
    assert "Run interrupted" not in resumed.stdout  # wait mode: the example never sees an interruption
    final = resumed.stdout.rstrip().splitlines()[-1]
    detail = client.get_execution(EXECUTION)
    assert detail.status == "completed"
    temperature = [call for call in detail.calls if call.name == "tool:get_temperature"]
    if decision == "approve":
        assert final == "Oakland is sunny and 20° Celsius."
        assert records[-1]["matched_rule"] == 1
        assert len(temperature) == 1
        assert temperature[0].run_number == 2
    else:
        # the denial message reached the model as the tool's output (echoed by the script)
        assert final == f"Oakland is sunny; the temperature was refused: {denial}"
        assert records[-1]["matched_rule"] == 3
        assert temperature == []  # a denied tool does not run
    assert [wait.status for wait in detail.waits] == ["answered"]


def test_an_invalid_answer_is_refused_and_the_wait_stays_pending(
    tmp_path: Path, sdist_examples: Path, client: Client
) -> None:
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(
        Script.from_json(SCRIPTS / "human_in_the_loop.json"), request_log_path=log
    ) as server:
        name = _stop_at_the_approval(tmp_path, sdist_examples, client, server.base_url, log)
        refused = _cli(
            tmp_path,
            sdist_examples,
            "executions",
            "answer",
            EXECUTION,
            name,
            "--value",
            '{"approved": "maybe"}',
        )
        assert refused.returncode == 1
        assert "the wait stays pending" in refused.stderr
        assert "'maybe' is not of type 'boolean'" in refused.stderr
        assert [wait.name for wait in client.pending_waits(EXECUTION)] == [name]
        still_waiting = _run(HUMAN_IN_THE_LOOP, server.base_url, tmp_path, sdist_examples)
        assert still_waiting.returncode == 3, still_waiting.stderr
        assert client.get_execution(EXECUTION).status == "waiting"
        assert len(read_request_log(log)) == 1


STREAMING_GUARDRAILS = "examples.agent_patterns.streaming_guardrails"
AGENTS_AS_TOOLS_STREAMING = "examples.agent_patterns.agents_as_tools_streaming"
OBJECT_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def _comparable(stdout: str) -> str:
    """Output with object addresses (in reprs of agents and tools) left out: they differ per process."""
    return OBJECT_ADDRESS.sub(" at 0x…", stdout)


def _run_on_responses(
    module: str, base_url: str, directory: Path, sdist_examples: Path, *options: str
) -> str:
    directory.mkdir(exist_ok=True)
    done = _run(module, base_url, directory, sdist_examples, "--openai-api", "responses", *options)
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("module", "script", "crash_after"),
    [
        (STREAMING_GUARDRAILS, "streaming_guardrails.json", 1),
        (AGENTS_AS_TOOLS_STREAMING, "agents_as_tools_streaming.json", 2),
    ],
)
def test_streaming_examples_served_from_the_store_stream_as_they_did_live(
    tmp_path: Path, sdist_examples: Path, module: str, script: str, crash_after: int
) -> None:
    """A served streamed model call replays the recorded events: the examples print what they printed live."""
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(Script.from_json(SCRIPTS / script), request_log_path=log) as server:
        live = _run_on_responses(module, server.base_url, tmp_path / "live", sdist_examples)
        live_requests = len(read_request_log(log))
        assert live_requests >= 3
        served = _run_on_responses(module, server.base_url, tmp_path / "live", sdist_examples)
        assert len(read_request_log(log)) == live_requests  # completed: every call served
        assert _comparable(served) == _comparable(live)

        (tmp_path / "crash").mkdir()
        killed = _run(
            module,
            server.base_url,
            tmp_path / "crash",
            sdist_examples,
            "--openai-api",
            "responses",
            "--crash-after",
            str(crash_after),
        )
        # SIGKILLed after its first committed calls: mid-stream, or (when the streamed call commits before a
        # guardrail check, as under load) after it printed everything; what it printed is never more than live.
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert len(_comparable(killed.stdout)) <= len(_comparable(live))
        resumed = _run_on_responses(module, server.base_url, tmp_path / "crash", sdist_examples)
        assert _comparable(resumed) == _comparable(live)
    records = read_request_log(log)[live_requests:]  # the killed run's and the resumed run's
    # the streamed model calls committed before the kill were replayed, not requested again
    streamed_live = [record for record in read_request_log(log)[:live_requests] if record["streamed"]]
    assert len([record for record in records if record["streamed"]]) == len(streamed_live)
    if module == STREAMING_GUARDRAILS:
        assert "Running guardrail check" in live
        assert "black hole is a place in space" in resumed
    else:
        assert resumed.rstrip().endswith("Your bill for this month is $100.")
        assert (
            resumed.count("[stream] agent=Billing Agent") == live.count("[stream] agent=Billing Agent") > 20
        )
        assert len(records) == live_requests  # killed after two calls: no completed call repeated


AGENTS_AS_TOOLS_CONDITIONAL = "examples.agent_patterns.agents_as_tools_conditional"


def _run_plain(
    module: str, base_url: str, directory: Path, sdist_examples: Path
) -> subprocess.CompletedProcess[str]:
    """The example as its author runs it (no durable(), no execution), on the same scripted model."""
    directory.mkdir(exist_ok=True)
    program = (
        "import runpy, sys\n"
        f"sys.path.insert(0, {str(RUNNER.parent)!r})\n"
        "from run_openai_agents_example import inject_model\n"
        f"inject_model({base_url!r}, 'gpt-4o-mini', 'responses')\n"
        f"runpy.run_module({module!r}, run_name='__main__')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", program],
        env=_environment(directory, sdist_examples),
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_in_process_approval_interrupt_mode_matches_a_plain_run_and_wait_mode_waits(
    tmp_path: Path, sdist_examples: Path
) -> None:
    """agents_as_tools_conditional answers the SDK's interruptions itself (RunState.approve, run again).

    With approval_mode="interrupt" its output and its stderr are the plain program's (no SDK
    warnings); with the default "wait" the approval is a durable wait answered from outside.
    """
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(
        Script.from_json(SCRIPTS / "agents_as_tools_conditional.json"), request_log_path=log
    ) as server:
        plain = _run_plain(AGENTS_AS_TOOLS_CONDITIONAL, server.base_url, tmp_path / "plain", sdist_examples)
        assert plain.returncode == 0, plain.stderr
        assert "✓ Approved: get_user_name" in plain.stdout
        plain_requests = len(read_request_log(log))
        durable_run = _run(
            AGENTS_AS_TOOLS_CONDITIONAL,
            server.base_url,
            tmp_path,
            sdist_examples,
            "--openai-api",
            "responses",
            "--approval-mode",
            "interrupt",
        )
        assert durable_run.returncode == 0, durable_run.stderr
        assert durable_run.stdout == plain.stdout
        assert durable_run.stderr == plain.stderr  # no "RunState context was serialized..." warnings
        assert len(read_request_log(log)) == 2 * plain_requests
        (tmp_path / "wait").mkdir()
        waiting = _run(
            AGENTS_AS_TOOLS_CONDITIONAL,
            server.base_url,
            tmp_path / "wait",
            sdist_examples,
            "--openai-api",
            "responses",
        )
    assert waiting.returncode == 3, waiting.stderr  # the default: a durable wait, answered from outside
    assert "approve:respond_spanish:call_" in waiting.stderr
