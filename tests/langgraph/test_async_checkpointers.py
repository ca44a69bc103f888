"""Async graphs on async checkpointers (`AsyncSqliteSaver`, `AsyncPostgresSaver`) under `durable()`.

The refund desk (`examples/langgraph_refund_desk.py`) runs with `ainvoke` / `astream` on an async
checkpointer in a subprocess that is SIGKILLed right after its k-th committed checkpoint call (inside
the `research` node for k = 1, 2, inside the agent/tool loop for larger k), then run again. The
adapter must not make a synchronous checkpointer call from the event loop (LangGraph's async savers
refuse them with `InvalidStateError`), and the resumed run repeats no completed model request or
tool call and ends in the same state as plain LangGraph.
"""

from __future__ import annotations

import uuid

import pytest

from kitaru_core import Client, configure
from kitaru_core.testing import ScriptedModelServer

from .conftest import DeskProcess, ModelServer, desk_script_of_example

MODEL_REQUESTS_PER_RUN = 6
TOOL_RUNS = ["lookup_order 7", "refund 7 25"]
KINDS = ["model", "model", "model", "model", "tool", "model", "tool", "model"]
KILLED = (-9, 137)


def _lines(stdout: str, prefix: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(prefix)]


def _timeline(desk: DeskProcess, thread: str) -> list[tuple[str, str]]:
    configure(store_url=desk.store_url, reset=True)
    try:
        detail = Client().get_execution(thread)
    finally:
        configure(reset=True)
    return [(call.kind, call.status) for call in detail.calls]


def _options(checkpointer: str, mode: str, request: pytest.FixtureRequest, thread: str) -> list[str]:
    options = ["--checkpointer", checkpointer, "--mode", *mode.split(), "--thread", thread]
    if checkpointer == "async-postgres":
        url: str = request.getfixturevalue("postgres_database")
        options += ["--postgres-url", url.replace("postgresql+psycopg://", "postgresql://")]
    return options


def _state(stdout: str) -> list[str]:
    return [*_lines(stdout, "notes="), *_lines(stdout, "output="), *_lines(stdout, "messages=")]


@pytest.fixture(scope="module")
def plain_state(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """What plain LangGraph (no adapter, no crash) ends with: the desk's notes, output and messages."""
    tmp_path = tmp_path_factory.mktemp("plain")
    with ScriptedModelServer(desk_script_of_example()) as server:
        plain = DeskProcess(server.base_url, tmp_path).run("--checkpointer", "none", "--no-durable")
    assert plain.returncode == 0, plain.stderr
    return _state(plain.stdout)


MATRIX = [
    ("async-sqlite", "ainvoke", 1),
    ("async-sqlite", "astream", 5),
    ("async-sqlite", "ainvoke --rerun-as-is", 2),  # the same call again: the adapter continues the run
    pytest.param("async-postgres", "ainvoke", 2, marks=pytest.mark.postgres),
    pytest.param("async-postgres", "astream --rerun-as-is", 6, marks=pytest.mark.postgres),
]


@pytest.mark.parametrize(("checkpointer", "mode", "crash_after"), MATRIX)
def test_killed_async_run_resumes_without_repeating_calls(
    desk: tuple[DeskProcess, ModelServer],
    plain_state: list[str],
    request: pytest.FixtureRequest,
    checkpointer: str,
    mode: str,
    crash_after: int,
) -> None:
    process, server = desk
    thread = f"refund-{uuid.uuid4().hex[:8]}"
    options = _options(checkpointer, mode, request, thread)
    killed = process.run(*options, "--crash-after", str(crash_after))
    assert killed.returncode in KILLED, killed.stderr
    assert "InvalidStateError" not in killed.stderr
    resumed = process.run(*options)
    assert resumed.returncode == 0, resumed.stderr
    assert _state(resumed.stdout) == plain_state
    # no completed model request or tool call ran twice (counted on the wire and in the tool bodies)
    assert len(server.requests()) == MODEL_REQUESTS_PER_RUN
    assert process.tool_runs() == TOOL_RUNS
    assert _timeline(process, thread) == [(kind, "completed") for kind in KINDS]
