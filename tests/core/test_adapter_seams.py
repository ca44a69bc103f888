"""`kitaru_core.adapters` seam checks: seams checked once per process, thread-safe, with an error naming everything.

Framework-free: the seams here point into the standard library and this module, so the machinery is
tested without any adapter installed (each adapter's own seams are tested in its environment).
"""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kitaru_core.adapters import (
    Seam,
    check_seams,
    declared_range,
    fields_seam,
    per_check,
    reset_seam_checks,
    seam_check,
)
from kitaru_core.errors import AdapterError

ROOT = Path(__file__).resolve().parents[2]
THIS = __name__


class Host:
    """A stand-in framework class."""

    def hook(self, request: Any, handler: Any) -> Any:
        return handler(request)


class _LazyModule:
    """Stands in for a module whose lazy `__getattr__` fails to import what it names."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"importing {name} failed")


LAZY = _LazyModule()


@pytest.fixture(autouse=True)
def _fresh_checks() -> Iterator[None]:
    reset_seam_checks()
    yield
    reset_seam_checks()


def test_a_seam_that_holds_passes() -> None:
    check_seams("pytest", ">=8", [Seam(THIS, "Host.hook", ("self", "request", "handler"))])


@pytest.mark.parametrize(
    ("seam", "problem"),
    [
        (Seam("no_such_module_for_kitaru"), "cannot be imported"),
        (Seam(THIS, "Host.missing"), "Host.missing is missing"),
        (Seam(THIS, "LAZY.Model"), "LAZY.Model cannot be read (RuntimeError: importing Model failed)"),
        (Seam(THIS, "Host.hook", ("request", "context")), "no parameter context"),
        (Seam(THIS, "THIS", ("value",)), "no longer callable"),
        (Seam(THIS, check=lambda: "the key moved"), "the key moved"),
        (Seam(THIS, check=lambda: 1 // 0), "its check failed with ZeroDivisionError"),
        (fields_seam("dataclasses", "Field", ("name",)), "Field has no field name"),  # not a dataclass
    ],
)
def test_every_broken_seam_is_named_with_the_version_and_range(seam: Seam, problem: str) -> None:
    working = Seam(THIS, "Host")
    with pytest.raises(AdapterError) as raised:
        check_seams("pytest", ">=8,<10", [working, seam], adapter="kitaru_adapters.example")
    message = str(raised.value)
    assert f"pytest {pytest.__version__} (supported: pytest>=8,<10)" in message
    assert f"  - {seam.name} (" in message
    assert problem in message
    assert f"  - {working.name} (" not in message
    assert "pip install 'kitaru-adapters[example]'" in message


def test_public_and_private_seams_are_told_apart() -> None:
    assert Seam("langgraph.pregel", "Pregel.invoke").is_private is False
    assert Seam("langchain_core.tools", "BaseTool._filter_injected_args").is_private is True
    assert Seam("agents", check=lambda: None, label="a key", private=True).is_private is True


def test_success_is_cached_and_a_reset_checks_again() -> None:
    calls: list[int] = []

    def check() -> str | None:
        calls.append(1)
        return None

    seams = [Seam(THIS, check=check)]
    check_seams("pytest", ">=8", seams)
    check_seams("pytest", ">=8", seams)
    assert len(calls) == 1
    reset_seam_checks()
    check_seams("pytest", ">=8", seams)
    assert len(calls) == 2


def test_a_failure_is_not_cached() -> None:
    broken = {"now": True}
    seams = [Seam(THIS, check=lambda: "broken" if broken["now"] else None)]
    with pytest.raises(AdapterError):
        check_seams("pytest", ">=8", seams)
    broken["now"] = False
    check_seams("pytest", ">=8", seams)


def test_threads_calling_at_once_check_once() -> None:
    calls: list[int] = []
    barrier = threading.Barrier(8)

    def slow_check() -> str | None:
        calls.append(1)
        threading.Event().wait(0.05)
        return None

    def call() -> None:
        barrier.wait()
        check_seams("pytest", ">=8", [Seam(THIS, check=slow_check)])

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1


def test_a_probe_runs_once_per_round_of_checks() -> None:
    runs: list[int] = []
    probe = per_check(lambda: runs.append(1) or len(runs))
    seams = [
        Seam(THIS, check=lambda: None if probe() else "no"),
        Seam(THIS, check=lambda: None if probe() else "no"),
    ]
    check_seams("pytest", ">=8", seams)
    assert len(runs) == 1
    reset_seam_checks()
    check_seams("pytest", ">=8", seams)
    assert len(runs) == 2


def test_the_range_is_read_only_when_a_seam_is_broken() -> None:
    asked: list[int] = []

    def supported() -> str:
        asked.append(1)
        return ">=8"

    check_seams("pytest", supported, [Seam(THIS)])
    assert asked == []
    reset_seam_checks()
    with pytest.raises(AdapterError, match=r"supported: pytest>=8\)"):
        check_seams("pytest", supported, [Seam(THIS, "Host.gone")])


@pytest.mark.parametrize(
    ("extra", "distribution"),
    [
        ("crewai", "crewai"),
        ("langgraph", "langgraph"),
        ("langgraph", "langchain-core"),
        ("openai-agents", "openai-agents"),
        ("pydantic-ai", "pydantic-ai-slim"),
    ],
)
def test_declared_ranges_are_the_ones_in_pyproject(extra: str, distribution: str) -> None:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        lines: list[str] = tomllib.load(handle)["project"]["optional-dependencies"][extra]
    [line] = [line for line in lines if line.split("[")[0].split(">")[0].split("<")[0] == distribution]
    assert line.endswith(declared_range(extra, distribution))
    assert declared_range(extra, distribution).startswith(">=")


def test_an_unknown_extra_has_no_range() -> None:
    assert declared_range("no-such-extra", "crewai") == "unknown"


def test_a_check_that_reaches_durable_again_does_not_wait_for_itself() -> None:
    """A probe builds a framework object; a user's hook may make it durable, which checks again."""
    entered: list[int] = []

    def probe() -> str | None:
        entered.append(1)
        check_seams("pytest", ">=8", seams)  # the nested durable() call, in the same thread
        return None

    seams = [Seam(THIS, check=probe)]
    finished = threading.Event()
    worker = threading.Thread(
        target=lambda: (check_seams("pytest", ">=8", seams), finished.set()), daemon=True
    )
    worker.start()
    worker.join(timeout=10)
    assert finished.is_set(), "the check waited for itself"
    assert entered == [1]


def test_seam_check_names_the_ranges_the_extra_declares() -> None:
    """`seam_check` builds an adapter's `check()`: the framework's range and related ones from our extra."""
    check = seam_check(
        "langgraph",
        "pytest",  # not in the langgraph extra: "unknown"
        [Seam(THIS, "Host.gone")],
        adapter="kitaru_adapters.langgraph",
        related=["langchain-core"],
    )
    with pytest.raises(AdapterError) as raised:
        check()
    message = str(raised.value)
    assert "(supported: pytest unknown)" in message  # said in words, not run into the name
    assert f"(supported: langchain-core{declared_range('langgraph', 'langchain-core')})" in message
    assert "Host.gone is missing" in message
    assert "pip install 'kitaru-adapters[langgraph]'" in message
    reset_seam_checks()
    seam_check("langgraph", "pytest", [Seam(THIS, "Host.hook")], adapter="kitaru_adapters.langgraph")()
