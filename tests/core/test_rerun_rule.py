"""The re-run rule of `durable_run` (what adapters open for an agent run): named and anonymous runs."""

from __future__ import annotations

import pytest

from kitaru_core import Client, checkpoint, current_execution, durable_run, named_run
from kitaru_core.errors import ConfigurationError

runs: list[int] = []


@checkpoint
def step(value: int) -> int:
    runs.append(value)
    return value * 2


@pytest.fixture(autouse=True)
def _store(sqlite_file_store: str) -> None:
    runs.clear()


def agent_run(value: int, **identity: str) -> tuple[str, bool]:
    with durable_run("agent:test", inputs={"prompt": value}, **identity) as execution_id:
        context = current_execution()
        assert context is not None
        step(value)
        return execution_id, context.served_completed


def statuses() -> dict[str, str]:
    return {summary.id: summary.status for summary in Client().list_executions()}


def test_a_named_completed_run_is_served_and_another_input_is_a_new_turn() -> None:
    assert agent_run(1, execution_id="t") == ("t", False)
    assert agent_run(1, execution_id="t") == ("t", True)  # served: the step did not run again
    assert runs == [1]
    assert agent_run(2, execution_id="t") == ("t~2", False)
    assert agent_run(1, execution_id="t") == ("t~3", False)  # the latest turn had another input
    assert runs == [1, 2, 1]
    assert agent_run(1, execution_id="t") == ("t~3", True)
    assert statuses() == {"t": "completed", "t~2": "completed", "t~3": "completed"}


def test_turns_are_found_however_many_there_are() -> None:
    for value in range(11):
        agent_run(value, execution_id="many")
    assert agent_run(10, execution_id="many") == ("many~11", True)
    assert agent_run(11, execution_id="many") == ("many~12", False)


def test_a_named_run_without_inputs_continues_the_latest_turn() -> None:
    def restore(value: int) -> tuple[str, bool]:
        with durable_run("agent:test", inputs=None, execution_id="r") as execution_id:
            context = current_execution()
            assert context is not None
            step(value)
            return execution_id, context.served_completed

    assert restore(1) == ("r", False)  # the first run under the identity
    assert restore(1) == ("r", True)
    agent_run(2, execution_id="r")  # a second turn with an input
    assert restore(2) == ("r~2", True)  # continues (here: serves) the latest turn
    assert runs == [1, 2]


def test_a_named_run_that_failed_resumes() -> None:
    def crash_after_the_step() -> None:
        with durable_run("agent:test", inputs={"prompt": 5}, execution_id="f"):
            step(5)
            raise RuntimeError("crash after the step")

    with pytest.raises(RuntimeError):
        crash_after_the_step()
    assert statuses() == {"f": "failed"}
    assert agent_run(5, execution_id="f") == ("f", False)  # resumed, the step served
    assert runs == [5]
    assert statuses() == {"f": "completed"}


def test_framework_identities_and_named_run_blocks() -> None:
    session_id, _served = agent_run(1, identity="session:customer/7")
    assert session_id.startswith("run-")
    assert "/" not in session_id  # derived from a hash: any identity string is safe in an id
    assert agent_run(1, identity="session:customer/7") == (session_id, True)
    assert agent_run(1, identity="session:other") != (session_id, True)
    with named_run("block-1"):
        assert agent_run(3) == ("block-1", False)
        assert agent_run(3) == ("block-1", True)
    with pytest.raises(ConfigurationError), named_run(""):
        pass


def test_an_anonymous_completed_run_is_a_new_execution() -> None:
    first, served = agent_run(1)
    assert not served
    second, served = agent_run(1)
    assert second != first
    assert not served
    assert runs == [1, 1]
