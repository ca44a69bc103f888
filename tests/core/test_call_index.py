"""A resume keeps an index of the stored calls and pages their records in (`_call_index.StoredCalls`).

Pages of 4 records here, so a resume of 23 calls crosses several pages, a superseded call and a
call recorded live after the served ones; the outcome must be the one a resume holding every
record gives.
"""

from __future__ import annotations

import pytest

from kitaru_core import _call_index, checkpoint, flow
from kitaru_core._runtime import current_execution, get_store

RAN: list[int] = []


class Stop(Exception):
    """Ends the first run after its calls, so the next run resumes the execution."""


@checkpoint
def square(i: int) -> int:
    RAN.append(i)
    return i * i


@flow(name="test_call_index.paged")
def paged(n: int, stop: bool) -> list[int]:
    values = [square(i) for i in range(n)]
    if stop:
        raise Stop
    return values


def test_a_resume_serves_every_call_from_pages(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_call_index, "PAGE_SIZE", 4)
    RAN.clear()
    with pytest.raises(Stop):
        paged.run(23, True, execution_id="paged-1")
    assert list(range(23)) == RAN
    RAN.clear()
    with pytest.raises(Stop):
        paged.run(23, True, execution_id="paged-1")  # served: pages of 4 records from the store
    assert RAN == []
    RAN.clear()
    assert paged.run(25, False, execution_id="paged-1") == [i * i for i in range(25)]
    assert RAN == [23, 24]  # only the two new calls ran; the 23 stored ones were served
    calls = get_store().load_calls("paged-1")
    assert [call.call_key for call in calls] == [f"{square.name}:{i}" for i in range(25)]


def test_the_cache_stays_within_two_pages(sqlite_file_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_call_index, "PAGE_SIZE", 4)
    seen: list[int] = []

    @flow(name="test_call_index.bounded")
    def bounded(n: int, stop: bool) -> None:
        for i in range(n):
            square(i)
            context = current_execution()
            assert context is not None
            seen.append(len(context._calls._cache))  # pyright: ignore[reportPrivateUsage]
        if stop:
            raise Stop

    with pytest.raises(Stop):
        bounded(30, True)
    with pytest.raises(Stop):
        bounded(30, True)  # served
    assert max(seen) <= 8
