"""`KitaruSaver` against LangGraph's own checkpointer conformance suite, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import BASE_CAPABILITIES

from kitaru_adapters.langgraph import KitaruSaver


def _validate(url: str) -> None:
    @checkpointer_test(name="KitaruSaver")
    async def saver() -> AsyncIterator[KitaruSaver]:
        checkpointer = KitaruSaver(url)
        yield checkpointer
        checkpointer.close()

    report = asyncio.run(validate(saver))
    failures = {name: result.failures for name, result in report.results.items() if result.failures}
    assert failures == {}
    assert report.passed_all_base()
    passed = {name for name, result in report.results.items() if result.passed}
    assert {capability.value for capability in BASE_CAPABILITIES} <= passed


def test_conformance_on_sqlite_file(tmp_path: Path) -> None:
    _validate(f"sqlite:///{tmp_path / 'graph.db'}")


def test_conformance_on_sqlite_in_memory() -> None:
    _validate("sqlite://")


@pytest.mark.postgres
def test_conformance_on_postgres(postgres_database: str) -> None:
    _validate(postgres_database)
