"""Seam self-checks: every PydanticAI seam the adapter lists is checked at the first durable().

Each seam is broken in turn (removed, its signature changed, a dataclass field gone, or a run method
no longer going through `Agent.iter`) and `durable()` on a real agent must raise `AdapterError`
naming pydantic-ai-slim, the installed version, the supported range and the seam.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pydantic_ai")

from pydantic_ai import Agent
from pydantic_ai.models.test import TestModel

from kitaru_adapters.pydantic_ai import durable
from kitaru_adapters.pydantic_ai._seams import SEAMS
from kitaru_core.adapters import reset_seam_checks
from kitaru_core.errors import AdapterError
from tests.seam_breaking import break_attribute, declared_in_pyproject, expect_refusal, seam_tests

ROOT = Path(__file__).resolve().parents[2]


def _agent() -> Agent[None, str]:
    agent: Agent[None, str] = Agent(TestModel(), name="desk", instructions="Answer briefly.")

    @agent.tool_plain
    def lookup_order(order_id: int) -> str:
        return f"order {order_id}"

    return agent


@pytest.fixture(autouse=True)
def _fresh_checks() -> Iterator[None]:
    reset_seam_checks()
    yield
    reset_seam_checks()


def _stream_bypasses_iter(monkeypatch: pytest.MonkeyPatch) -> None:
    """`run_stream` as it would be if PydanticAI stopped opening runs through `iter`."""

    def run_stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    monkeypatch.setattr(Agent, "run_stream", run_stream)


BREAKERS = {
    "Agent.run, run_sync, run_stream and run_stream_events go through Agent.iter": _stream_bypasses_iter
}
"""How PydanticAI would break each seam that is not a plain attribute (fields: `break_fields`)."""


CHECK_SEAMS = [seam for seam in SEAMS if seam.check is not None]

test_a_removed_seam_is_refused, test_a_changed_signature_is_refused, test_a_broken_check_seam_is_refused = (
    seam_tests(SEAMS, lambda: functools.partial(durable, _agent()), ("pydantic-ai-slim",), BREAKERS)
)


def test_a_response_without_model_id_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """2.60-2.63 failed every durable model call: `ModelResponse.model_id` appeared in 2.64."""
    agent = _agent()
    seam = next(seam for seam in SEAMS if seam.name.startswith("pydantic_ai.messages:ModelResponse fields"))
    from pydantic_ai.messages import ModelResponse

    kept = {key: value for key, value in ModelResponse.__dataclass_fields__.items() if key != "model_id"}
    monkeypatch.setattr(ModelResponse, "__dataclass_fields__", kept)
    with pytest.raises(AdapterError, match=re.escape("ModelResponse has no field model_id")):
        durable(agent)
    assert seam.problem() is not None


def test_the_supported_range_in_the_error_is_the_one_in_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = _agent()
    seam = next(seam for seam in SEAMS if seam.attribute == "AbstractCapability.wrap_tool_execute")
    break_attribute(seam, monkeypatch)
    message = expect_refusal(functools.partial(durable, agent), seam, "pydantic-ai-slim")
    range_in_pyproject = declared_in_pyproject(ROOT, "pydantic-ai", "pydantic-ai-slim")
    assert f"(supported: pydantic-ai-slim{range_in_pyproject})" in message


def test_intact_seams_pass_once(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = durable(_agent())
    assert asyncio.run(agent.run("hello")).output  # run_sync would leave its event loop open
    _stream_bypasses_iter(monkeypatch)
    durable(_agent())  # checked once per process
    reset_seam_checks()
    with pytest.raises(AdapterError):
        durable(_agent())


def test_the_docs_page_lists_every_seam() -> None:
    section = (ROOT / "docs" / "pydantic-ai.md").read_text().split("## Framework seams", 1)[1]
    assert [seam.name for seam in SEAMS if f"`{seam.name}`" not in section] == []
