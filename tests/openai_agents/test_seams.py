"""Seam self-checks: every OpenAI Agents SDK seam the adapter lists is checked at the first durable().

Each seam is broken in turn (removed, its signature changed, a dataclass field gone, or the SDK
changed so it no longer does what the adapter relies on) and `durable()` on a real agent must raise
`AdapterError` naming openai-agents, the installed version, the supported range and the seam.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents")

import agents.handoffs
from agents import Agent, Runner
from agents.run import AgentRunner

from kitaru_adapters.openai_agents import DurableRunner, durable
from kitaru_adapters.openai_agents._seams import SEAMS
from kitaru_core.adapters import reset_seam_checks
from kitaru_core.errors import AdapterError
from tests.seam_breaking import break_attribute, declared_in_pyproject, expect_refusal, seam_tests

ROOT = Path(__file__).resolve().parents[2]


def _agent() -> Agent[Any]:
    specialist = Agent(name="specialist", instructions="Handle refunds.")
    return Agent(name="desk", instructions="Route the customer.", handoffs=[specialist])


@pytest.fixture(autouse=True)
def _fresh_checks() -> Iterator[None]:
    reset_seam_checks()
    yield
    reset_seam_checks()


def _runner_bypassed(monkeypatch: pytest.MonkeyPatch) -> None:
    """`Runner.run` as it would be if the SDK stopped going through the default agent runner."""

    def run(cls: Any, starting_agent: Any, input: Any, **kwargs: Any) -> Any:
        return AgentRunner().run(starting_agent, input, **kwargs)

    monkeypatch.setattr(Runner, "run", classmethod(run))


def _agent_tools_unmarked(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Agent.as_tool

    def as_tool(self: Any, *args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(original(self, *args, **kwargs), _is_agent_tool=False, _tool_origin=None)

    monkeypatch.setattr(Agent, "as_tool", as_tool)


def _handoff_without_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    original = agents.handoffs.handoff

    def handoff(*args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(original(*args, **kwargs), _agent_ref=None)

    monkeypatch.setattr(agents.handoffs, "handoff", handoff)


BREAKERS = {
    "Runner.run, run_sync and run_streamed use the default agent runner": _runner_bypassed,
    "Agent.as_tool tools are marked _is_agent_tool (or tool_origin)": _agent_tools_unmarked,
    "agents.handoffs:Handoff._agent_ref": _handoff_without_reference,
}
"""How the SDK would break each seam that is not a plain attribute (fields: `break_fields`)."""


CHECK_SEAMS = [seam for seam in SEAMS if seam.check is not None]

test_a_removed_seam_is_refused, test_a_changed_signature_is_refused, test_a_broken_check_seam_is_refused = (
    seam_tests(SEAMS, lambda: functools.partial(durable, _agent()), ("openai-agents",), BREAKERS)
)


def test_losing_the_handoff_agent_reference_is_caught_without_a_crash_test(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Losing `Handoff._agent_ref` was caught only by the slow crash tests."""
    agent = _agent()
    _handoff_without_reference(monkeypatch)
    with pytest.raises(AdapterError, match=re.escape("Handoff._agent_ref")):
        durable(agent)


def test_durable_runner_checks_too(monkeypatch: pytest.MonkeyPatch) -> None:
    _runner_bypassed(monkeypatch)
    with pytest.raises(AdapterError, match="default agent runner"):
        DurableRunner()


def test_the_supported_range_in_the_error_is_the_one_in_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = _agent()
    seam = next(seam for seam in SEAMS if seam.attribute == "Agent.get_all_tools")
    break_attribute(seam, monkeypatch)
    message = expect_refusal(functools.partial(durable, agent), seam, "openai-agents")
    range_in_pyproject = declared_in_pyproject(ROOT, "openai-agents", "openai-agents")
    assert f"(supported: openai-agents{range_in_pyproject})" in message


def test_intact_seams_pass_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert durable(_agent()) is not None
    _handoff_without_reference(monkeypatch)
    durable(_agent())  # checked once per process
    reset_seam_checks()
    with pytest.raises(AdapterError):
        durable(_agent())


def test_the_docs_page_lists_every_seam() -> None:
    section = (ROOT / "docs" / "openai-agents.md").read_text().split("## Framework seams", 1)[1]
    assert [seam.name for seam in SEAMS if f"`{seam.name}`" not in section] == []
