"""Seam self-checks: every LangGraph/LangChain seam the adapter lists is checked at the first durable().

Each seam is broken in turn (removed, its signature changed, or, for what a running node sees, the
framework changed so a node no longer gets it) and `durable()` on a real compiled graph must raise
`AdapterError` naming the framework, the installed version, the supported range and the seam.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypedDict

import pytest

pytest.importorskip("langgraph")

import langgraph.config
import langgraph.pregel._algo as pregel_algorithm
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.pregel import Pregel

from kitaru_adapters.langgraph import durable
from kitaru_adapters.langgraph._seams import SEAMS, _probe
from kitaru_core.adapters import reset_seam_checks
from kitaru_core.errors import AdapterError
from tests.seam_breaking import break_attribute, declared_in_pyproject, expect_refusal, seam_tests

ROOT = Path(__file__).resolve().parents[2]


class State(TypedDict):
    question: str
    answer: str


def _graph() -> Any:
    builder = StateGraph(State)
    builder.add_node("answer", lambda state: {"answer": state["question"].upper()})
    builder.add_edge(START, "answer")
    return builder.compile(checkpointer=InMemorySaver(), name="seams")


@pytest.fixture(autouse=True)
def _fresh_checks() -> Iterator[None]:
    reset_seam_checks()
    yield
    reset_seam_checks()


def _without(section: str, key: str) -> Callable[[pytest.MonkeyPatch], None]:
    """A breaker: LangGraph no longer puts `key` in a running node's config section."""

    def apply(monkeypatch: pytest.MonkeyPatch) -> None:
        original = langgraph.config.get_config

        def get_config() -> Any:
            config = dict(original())
            config[section] = {
                name: value for name, value in (config.get(section) or {}).items() if name != key
            }
            return config

        monkeypatch.setattr(langgraph.config, "get_config", get_config)

    return apply


def _path_renamed(monkeypatch: pytest.MonkeyPatch) -> None:
    original = langgraph.config.get_config

    def get_config() -> Any:
        config = dict(original())
        metadata = dict(config.get("metadata") or {})
        metadata["langgraph_path"] = ("__pregel_renamed", *metadata.get("langgraph_path", ())[1:])
        config["metadata"] = metadata
        return config

    monkeypatch.setattr(langgraph.config, "get_config", get_config)


def _input_channel_renamed(monkeypatch: pytest.MonkeyPatch) -> None:
    original = InMemorySaver.list

    def listed(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for item in original(self, *args, **kwargs):
            values = dict(item.checkpoint["channel_values"])
            values["__input__"] = values.pop("__start__", None)
            yield item._replace(checkpoint={**item.checkpoint, "channel_values": values})

    monkeypatch.setattr(InMemorySaver, "list", listed)


def _graph_attribute_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Pregel.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        del self.output_channels

    monkeypatch.setattr(Pregel, "__init__", init)


# How LangGraph would break each seam that is not an attribute. A renamed constant in
# `langgraph.pregel._algo` is what a LangGraph release renaming the key would look like.
CHECK_BREAKERS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "node config key configurable['__pregel_task_id']": lambda monkeypatch: monkeypatch.setattr(
        pregel_algorithm, "CONFIG_KEY_TASK_ID", "__pregel_task_identity"
    ),
    "node config key configurable['__pregel_checkpointer']": lambda monkeypatch: monkeypatch.setattr(
        pregel_algorithm, "CONFIG_KEY_CHECKPOINTER", "__pregel_saver"
    ),
    "node config key configurable['checkpoint_ns']": lambda monkeypatch: (
        _without("configurable", "checkpoint_ns")(monkeypatch),
        _without("metadata", "langgraph_checkpoint_ns")(monkeypatch),
    ),
    "node metadata 'langgraph_step' and 'langgraph_node'": _without("metadata", "langgraph_step"),
    "node metadata 'langgraph_path' starting with '__pregel_pull'": _path_renamed,
    "node metadata 'langgraph_path' of a Send task starting with '__pregel_push'": _path_renamed,
    "input checkpoints keep the input in channel '__start__'": _input_channel_renamed,
    "compiled graph attributes checkpointer, output_channels, stream_mode, nodes, name": _graph_attribute_gone,
}

CHECK_SEAMS = [seam for seam in SEAMS if seam.check is not None]

test_a_removed_seam_is_refused, test_a_changed_signature_is_refused, test_a_broken_check_seam_is_refused = (
    seam_tests(
        SEAMS, lambda: functools.partial(durable, _graph()), ("langgraph", "langchain-core"), CHECK_BREAKERS
    )
)


def test_every_seam_that_is_not_an_attribute_has_a_breaker() -> None:
    assert sorted(CHECK_BREAKERS) == sorted(seam.name for seam in CHECK_SEAMS)


@pytest.mark.parametrize("constant", ["CONFIG_KEY_TASK_ID", "CONFIG_KEY_CHECKPOINTER"])
def test_the_silent_breaks_are_loud(constant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Losing `__pregel_task_id` or `__pregel_checkpointer` used to leave the whole suite green."""
    graph = _graph()
    key = getattr(pregel_algorithm, constant)  # today's key, the one the adapter reads
    monkeypatch.setattr(pregel_algorithm, constant, "__pregel_renamed_by_a_release")
    # LangGraph itself runs on: nothing but the adapter would notice.
    assert (
        graph.invoke({"question": "still runs"}, {"configurable": {"thread_id": "plain"}})["answer"]
        == "STILL RUNS"
    )
    with pytest.raises(AdapterError, match=re.escape(f"configurable[{key!r}]")):
        durable(graph)


def test_the_supported_range_in_the_error_is_the_one_in_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    seam = SEAMS[0]
    break_attribute(seam, monkeypatch)
    message = expect_refusal(functools.partial(durable, _graph()), seam, "langgraph", "langchain-core")
    assert f"supported: langgraph{declared_in_pyproject(ROOT, 'langgraph', 'langgraph')})" in message
    assert (
        f"supported: langchain-core{declared_in_pyproject(ROOT, 'langgraph', 'langchain-core')})" in message
    )


def test_intact_seams_pass_and_the_check_runs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    graph = durable(_graph())
    assert graph.invoke({"question": "hi"}, {"configurable": {"thread_id": "seams-ok"}})["answer"] == "HI"
    _path_renamed(monkeypatch)
    durable(_graph())  # checked once per process: a later durable() does not check again
    reset_seam_checks()
    with pytest.raises(AdapterError):
        durable(_graph())


def test_the_docs_page_lists_every_seam() -> None:
    page = (ROOT / "docs" / "langgraph.md").read_text()
    section = page.split("## Framework seams", 1)[1]
    missing = [seam.name for seam in SEAMS if f"`{seam.name}`" not in section]
    assert missing == []


def test_the_probe_is_never_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    """With LangSmith tracing on, the probe graph must not send a run anywhere."""
    monkeypatch.setenv("LANGSMITH_TRACING", "true")
    monkeypatch.setenv("LANGSMITH_API_KEY", "not-used")
    durable(_graph())
    for config in _probe().configs.values():
        handlers = getattr(config.get("callbacks"), "handlers", None) or []
        assert [type(handler).__name__ for handler in handlers] == []
