"""SIGKILL the refund desk after each k-th checkpoint call; the next run resumes without repeating calls.

The run (see `examples/langgraph_refund_desk.py`): the `research` node makes three model calls in a
row, then `agent` (a model with `bind_tools`) and a `ToolNode` loop look order 7 up, refund it and
answer. That is 8 checkpoint calls: 6 model requests and 2 tool calls when nothing goes wrong.
Beside it, the same crashes without the adapter: LangGraph's own persistence re-runs the crashed
node from its first line, so the model calls it had made are paid again.
"""

from __future__ import annotations

import pytest

from kitaru_core import Client, configure

from ..conftest import slow_beyond
from .conftest import DeskProcess, ModelServer

CALLS_PER_RUN = 8
MODEL_REQUESTS_PER_RUN = 6
TOOL_RUNS = ["lookup_order 7", "refund 7 25"]
OUTPUT = "output=Done: refunded 25 USD for order 7"
NOTES = "notes=plan: look up the order, then refund it | facts: order 7 was paid 25 USD | risks: none found"
KILLED = (-9, 137)


def _timeline(desk: DeskProcess) -> list[tuple[str, str]]:
    configure(store_url=desk.store_url, reset=True)
    try:
        detail = Client().get_execution("refund-7")
    finally:
        configure(reset=True)
    # (a thread without a checkpointer also records which turn each run is: not a model or tool call)
    return [(call.kind, call.status) for call in detail.calls if call.name != "langgraph:turn"]


def test_an_uninterrupted_run_records_every_call(desk: tuple[DeskProcess, ModelServer]) -> None:
    process, server = desk
    done = process.run("--checkpointer", "kitaru")
    assert done.returncode == 0, done.stderr
    assert OUTPUT in done.stdout
    assert len(server.requests()) == MODEL_REQUESTS_PER_RUN
    assert process.tool_runs() == TOOL_RUNS
    kinds = [kind for kind, _ in _timeline(process)]
    assert kinds == ["model", "model", "model", "model", "tool", "model", "tool", "model"]


ALL_CRASHES = [
    *[("kitaru", "invoke", k) for k in range(1, CALLS_PER_RUN + 1)],
    *[("none", "invoke", k) for k in range(1, CALLS_PER_RUN + 1)],
    *[("kitaru", "astream", k) for k in (2, 5, 7)],
    *[("sqlite", "stream", k) for k in (3, 6)],
    ("none", "ainvoke", 4),
    # the same call made again, as is: the adapter turns it into LangGraph's `invoke(None, config)`
    *[("kitaru", "invoke --rerun-as-is", k) for k in (2, 5, 7)],
    ("kitaru", "astream --rerun-as-is", 3),
    ("sqlite", "stream --rerun-as-is", 6),
]
# The default run crashes each checkpointer and mode once; `nox -s slow` at every point listed.
MATRIX = slow_beyond(
    ALL_CRASHES,
    keep=[
        ("kitaru", "invoke", 4),
        ("none", "invoke", 5),
        ("kitaru", "astream", 5),
        ("sqlite", "stream", 3),
        ("none", "ainvoke", 4),
        ("kitaru", "invoke --rerun-as-is", 5),
        ("kitaru", "astream --rerun-as-is", 3),
        ("sqlite", "stream --rerun-as-is", 6),
    ],
)


@pytest.mark.parametrize(("checkpointer", "mode", "crash_after"), MATRIX)
def test_killed_after_k_calls_resumes_without_repeating_them(
    desk: tuple[DeskProcess, ModelServer], checkpointer: str, mode: str, crash_after: int
) -> None:
    process, server = desk
    options = ("--checkpointer", checkpointer, "--mode", *mode.split())
    killed = process.run(*options, "--crash-after", str(crash_after))
    assert killed.returncode in KILLED, killed.stderr
    resumed = process.run(*options)
    assert resumed.returncode == 0, resumed.stderr
    assert OUTPUT in resumed.stdout
    assert NOTES in resumed.stdout
    # no completed model request or tool call ran twice
    assert len(server.requests()) == MODEL_REQUESTS_PER_RUN
    assert process.tool_runs() == TOOL_RUNS
    assert _timeline(process) == [
        (kind, "completed") for kind in ["model", "model", "model", "model", "tool", "model", "tool", "model"]
    ]


@pytest.mark.parametrize(("crash_after_model_calls", "repeated_requests"), [(1, 1), (2, 2)])
def test_without_the_adapter_the_crashed_node_pays_its_model_calls_again(
    desk: tuple[DeskProcess, ModelServer], crash_after_model_calls: int, repeated_requests: int
) -> None:
    """The same crash points inside the `research` node: LangGraph (SQLite checkpointer) re-runs it.

    (After the node's third call the outcome depends on whether LangGraph's background write of the
    node's result landed before the kill, so that point is not asserted here.)
    """
    process, server = desk
    options = ("--checkpointer", "sqlite", "--no-durable")
    killed = process.run(*options, "--crash-after-model-calls", str(crash_after_model_calls))
    assert killed.returncode in KILLED, killed.stderr
    resumed = process.run(*options)
    assert resumed.returncode == 0, resumed.stderr
    assert OUTPUT in resumed.stdout
    assert len(server.requests()) == MODEL_REQUESTS_PER_RUN + repeated_requests


@pytest.mark.parametrize("crash_after_model_calls", [1, 2])
def test_with_the_adapter_the_same_crash_points_repeat_nothing(
    desk: tuple[DeskProcess, ModelServer], crash_after_model_calls: int
) -> None:
    process, server = desk
    options = ("--checkpointer", "sqlite")
    killed = process.run(*options, "--crash-after-model-calls", str(crash_after_model_calls))
    assert killed.returncode in KILLED, killed.stderr
    resumed = process.run(*options)
    assert resumed.returncode == 0, resumed.stderr
    assert len(server.requests()) == MODEL_REQUESTS_PER_RUN
