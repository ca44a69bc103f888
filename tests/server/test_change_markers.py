"""Open event streams share the store's change markers: one query batch per interval, however many pages."""

from __future__ import annotations

import contextlib

import anyio

from kitaru_core import Client
from kitaru_core.errors import ExecutionWaitingError
from kitaru_core.server._app import ChangeMarkers
from tests.server import flows


class CountingClient(Client):
    """A real client that counts how often the store is asked for a marker."""

    asked: int = 0

    def change_marker(self, execution_id: str | None = None) -> str:
        self.asked += 1
        return super().change_marker(execution_id)


def test_streams_share_one_read_per_interval(sqlite_store: tuple[str, str]) -> None:
    client = CountingClient(*sqlite_store)
    markers = ChangeMarkers(client, max_age_s=5.0)
    seen: list[str] = []

    async def many_streams() -> None:
        async def one() -> None:
            seen.append(await markers.get(None))

        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(one)

    anyio.run(many_streams)
    assert client.asked == 1
    assert len(set(seen)) == 1
    assert len(seen) == 50

    with contextlib.suppress(ExecutionWaitingError):
        flows.confirm.run("M-1", execution_id="m-1")
    assert anyio.run(markers.get, None) == seen[0]  # still within max_age: the shared read is reused
    assert anyio.run(markers.get, "m-1") != seen[0]  # each execution has its own marker
    assert client.asked == 2

    fresh = ChangeMarkers(client, max_age_s=0.0)
    assert anyio.run(fresh.get, None) != seen[0]  # a fresh read sees the new execution
