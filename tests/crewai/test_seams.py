"""Seam self-checks: every CrewAI seam the adapter lists is checked at the first durable().

Each seam is broken in turn (removed, its signature changed, a field or private attribute gone, a
marker no longer honoured) and `durable()` on a real crew must raise `AdapterError` naming crewai,
the installed version, the supported range and the seam.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("crewai")

import crewai.flow.persistence
from crewai import LLM, Agent, Crew, Task
from crewai.llms.base_llm import BaseLLM

from kitaru_adapters.crewai import durable
from kitaru_adapters.crewai._seams import SEAMS
from kitaru_core.adapters import reset_seam_checks
from kitaru_core.errors import AdapterError
from tests.seam_breaking import break_attribute, declared_in_pyproject, expect_refusal, seam_tests

ROOT = Path(__file__).resolve().parents[2]


def _crew() -> Crew:
    llm = LLM(model="openai/gpt-4o-mini", base_url="http://127.0.0.1:9/v1", api_key="unused", max_retries=0)
    agent = Agent(role="Clerk", goal="Answer", backstory="Answers questions.", llm=llm)
    return Crew(agents=[agent], tasks=[Task(description="Answer", expected_output="An answer", agent=agent)])


@pytest.fixture(autouse=True)
def _fresh_checks() -> Iterator[None]:
    reset_seam_checks()
    yield
    reset_seam_checks()


def _private_attribute_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    private = {key: value for key, value in Agent.__private_attributes__.items() if key != "_original_role"}
    monkeypatch.setattr(Agent, "__private_attributes__", private)


def _marker_renamed(monkeypatch: pytest.MonkeyPatch) -> None:
    """BaseLLM as it would be if CrewAI renamed the marker its retry wrapper honours."""
    if not hasattr(BaseLLM, "_wrap_call_method"):
        pytest.skip("this crewai release has no rate-limit retry wrapper, so no marker to rename")

    def wrap_call_method(cls: Any, method_name: str) -> None:
        method = cls.__dict__.get(method_name)
        if method is None or getattr(method, "_crewai_retry_wrapped", False):
            return
        setattr(cls, method_name, functools.wraps(method)(lambda *args, **kwargs: method(*args, **kwargs)))

    monkeypatch.setattr(BaseLLM, "_wrap_call_method", classmethod(wrap_call_method))


def _persist_marks_differently(monkeypatch: pytest.MonkeyPatch) -> None:
    def persist(*args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        def decorate(target: Any) -> Any:
            target.__flow_persistence__ = SimpleNamespace()
            return target

        return decorate

    monkeypatch.setattr(crewai.flow.persistence, "persist", persist)


BREAKERS = {
    "crewai:Agent._original_role": _private_attribute_gone,
    "the _crewai_rate_limit_wrapped marker": _marker_renamed,
    "the __flow_persistence_config__ marker of @persist": _persist_marks_differently,
}
"""How CrewAI would break each seam that is not a plain attribute (fields: `break_fields`)."""


CHECK_SEAMS = [seam for seam in SEAMS if seam.check is not None]

test_a_removed_seam_is_refused, test_a_changed_signature_is_refused, test_a_broken_check_seam_is_refused = (
    seam_tests(SEAMS, lambda: functools.partial(durable, _crew()), ("crewai",), BREAKERS)
)


def test_the_rate_limit_marker_is_checked_by_what_crewai_does_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`_crewai_rate_limit_wrapped` had no test: renaming it leaves every attribute in place."""
    crew = _crew()
    _marker_renamed(monkeypatch)
    assert hasattr(BaseLLM, "_wrap_call_method")
    with pytest.raises(AdapterError, match=re.escape("_crewai_rate_limit_wrapped")):
        durable(crew)


def test_the_supported_range_in_the_error_is_the_one_in_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    crew = _crew()
    seam = next(seam for seam in SEAMS if seam.attribute == "Crew._prepare_tools")
    break_attribute(seam, monkeypatch)
    message = expect_refusal(functools.partial(durable, crew), seam, "crewai")
    assert f"(supported: crewai{declared_in_pyproject(ROOT, 'crewai', 'crewai')})" in message


def test_intact_seams_pass_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert durable(_crew()) is not None
    _marker_renamed(monkeypatch)
    durable(_crew())  # checked once per process
    reset_seam_checks()
    with pytest.raises(AdapterError):
        durable(_crew())


def test_the_docs_page_lists_every_seam() -> None:
    section = (ROOT / "docs" / "crewai.md").read_text().split("## Framework seams", 1)[1]
    assert [seam.name for seam in SEAMS if f"`{seam.name}`" not in section] == []
