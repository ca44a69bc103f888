"""Flow steps are checkpoint calls: after a SIGKILL a re-run repeats no completed step, no
`input()` prompt, no side effect; a `@persist` flow is restored with CrewAI's own
`kickoff(inputs={"id": ...})` and served."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kitaru_adapters.crewai import durable
from kitaru_core import Client, configure, execution
from kitaru_core.errors import ConfigurationError
from kitaru_core.testing import Rule, Script, ScriptedModelServer, read_request_log

from .conftest import lines, store_environment

PROGRAM = Path(__file__).resolve().parent / "programs" / "review_flow.py"
SCRIPT = Script(rules=[Rule(text="Announced.")], model_names=("gpt-4o-mini",))


def _run(tmp_path: Path, base_url: str, stdin: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = store_environment(tmp_path)
    command = [
        sys.executable,
        str(PROGRAM),
        "--base-url",
        base_url,
        "--log",
        str(tmp_path / "steps.log"),
        *arguments,
    ]
    return subprocess.run(
        command, input=stdin, env=environment, capture_output=True, text=True, timeout=300, check=False
    )


def _executions(tmp_path: Path) -> list[tuple[str, str]]:
    configure(store_url=f"sqlite:///{tmp_path / 'kitaru.db'}", reset=True)
    try:
        return [(summary.id, summary.status) for summary in Client().list_executions()]
    finally:
        configure(reset=True)


@pytest.mark.parametrize("persisted", [False, True], ids=["anonymous", "persist"])
def test_a_killed_flow_repeats_no_completed_step_prompt_or_side_effect(
    tmp_path: Path, persisted: bool
) -> None:
    persist = ["--persist", str(tmp_path / "flows.db")] if persisted else []
    log = tmp_path / "requests.jsonl"
    with ScriptedModelServer(SCRIPT, request_log_path=log) as server:
        crashed = _run(tmp_path, server.base_url, "yes\n", "--crash-in-publish", *persist)
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
        assert lines(tmp_path / "steps.log") == ["draft", "review yes", "publish"]
        match = re.search(r"flow_id=(\S+)", crashed.stdout)
        assert match is not None
        flow_id = match.group(1)

        # Run again with nothing on stdin: an `input()` asked again would fail with EOFError.
        restore = ["--flow-id", flow_id] if persisted else []
        resumed = _run(tmp_path, server.base_url, "", *persist, *restore)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "result=Announced." in resumed.stdout
        # Only the crashed step ran again; `draft` and the router's prompt were served.
        assert lines(tmp_path / "steps.log") == ["draft", "review yes", "publish", "publish"]
        assert len(read_request_log(log)) == 1
        # One execution, resumed and completed (no crashed one left behind).
        assert [status for _, status in _executions(tmp_path)] == ["completed"]
        if persisted:
            ((execution_id, _),) = _executions(tmp_path)
            assert execution_id == f"crewai_flow:ReviewFlow:{flow_id}"
            # The completed persisted flow kicked off again with its id: served, nothing runs.
            again = _run(tmp_path, server.base_url, "", *persist, "--flow-id", flow_id)
            assert again.returncode == 0, again.stderr[-3000:]
            assert "result=Announced." in again.stdout
            assert len(read_request_log(log)) == 1
            assert lines(tmp_path / "steps.log") == ["draft", "review yes", "publish", "publish"]


# -- in one process ----------------------------------------------------------------------------------

RUNS: list[str] = []


def _counting_flow(base_url: str, persistence_path: Path | None = None) -> type[Any]:
    from crewai import LLM
    from crewai.flow.flow import Flow, listen, start
    from crewai.flow.persistence import SQLiteFlowPersistence, persist

    class CountingFlow(Flow[dict[str, Any]]):  # type: ignore[misc]
        @start()
        def refresh(self) -> str:
            RUNS.append("refresh")
            return "fresh"

        @listen(refresh)
        def write(self) -> str:
            RUNS.append("write")
            llm = LLM(model="openai/gpt-4o-mini", base_url=base_url, api_key="k", max_retries=0)
            self.state["text"] = str(llm.call(f"Write about {self.state.get('topic', 'refunds')}."))
            return self.state["text"]

    if persistence_path is None:
        return CountingFlow
    return persist(SQLiteFlowPersistence(str(persistence_path)))(CountingFlow)


WRITER = Script(rules=[Rule(text="A text.")], model_names=("gpt-4o-mini",))


@pytest.mark.parametrize("script", [WRITER])
def test_always_run_steps_run_every_time_the_others_are_served(
    sqlite_file_store: str, model_server: Any
) -> None:
    RUNS.clear()
    flow_class = _counting_flow(model_server.base_url)
    for _ in range(2):
        with execution("writer"):
            assert durable(flow_class(), always_run=["refresh"]).kickoff() == "A text."
    # `refresh` opted out: it ran both times; `write` was served the second time, with its state.
    assert RUNS == ["refresh", "write", "refresh"]
    assert len(model_server.requests()) == 1
    keys = [call.key for call in Client().get_execution("writer").calls]
    assert "crewai_flow:CountingFlow:0/step:write:0" in keys  # inside an execution: the flow is a scope
    assert not any("step:refresh" in key for key in keys)
    # a flow step's outcome (its value and the flow state after it) cannot be overridden in a replay
    refused = r"'json:crewai\.FlowStep'.*only model requests and tool calls"
    with pytest.raises(ConfigurationError, match=refused):
        Client().replay("writer", overrides={"crewai_flow:CountingFlow:0/step:write:0": "B text."}, run=False)
    assert Client().count_executions() == 1
    with pytest.raises(ConfigurationError, match="list of flow step names"):
        durable(flow_class(), always_run="refresh")


@pytest.mark.parametrize("script", [WRITER])
def test_a_persisted_flow_id_is_its_identity_other_inputs_are_a_new_turn(
    sqlite_file_store: str, model_server: Any, tmp_path: Path
) -> None:
    RUNS.clear()
    flow_class = durable(_counting_flow(model_server.base_url, tmp_path / "flows.db"))
    first = flow_class()
    first.kickoff(inputs={"topic": "refunds"})
    flow_id = first.state["id"]
    assert RUNS == ["refresh", "write"]
    # Restored by id with nothing else: the same turn, served (no step runs, no request).
    restored = flow_class()
    assert restored.kickoff(inputs={"id": flow_id}) == "A text."
    assert restored.state["text"] == "A text."
    assert RUNS == ["refresh", "write"]
    assert len(model_server.requests()) == 1
    # Restored by id with the first kickoff's input: the same turn, served.
    assert flow_class().kickoff(inputs={"id": flow_id, "topic": "refunds"}) == "A text."
    assert RUNS == ["refresh", "write"]
    # Restored by id with another input: a new turn under the same identity, run live.
    flow_class().kickoff(inputs={"id": flow_id, "topic": "returns"})
    assert RUNS == ["refresh", "write", "refresh", "write"]
    assert len(model_server.requests()) == 2
    identity = f"crewai_flow:CountingFlow:{flow_id}"
    assert sorted(summary.id for summary in Client().list_executions()) == [identity, f"{identity}~2"]
    # Restored by id alone: the latest turn (the second one), served.
    RUNS.clear()
    restored = flow_class()
    assert restored.kickoff(inputs={"id": flow_id}) == "A text."
    assert restored.state["topic"] == "returns"
    assert RUNS == []
    assert len(model_server.requests()) == 2
