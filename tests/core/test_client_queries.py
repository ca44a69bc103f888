"""The Client's queries for dashboards: counts, time windows, the change marker, full outputs, background resume."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from kitaru_core import Client, checkpoint, execution, flow, wait
from kitaru_core.errors import (
    CallNotFoundError,
    ConfigurationError,
    ExecutionCancelledError,
    ExecutionError,
    ExecutionNotFoundError,
    ExecutionWaitingError,
    SerializationError,
)


@checkpoint
def big_report(size: int) -> dict[str, object]:
    return {"rows": [f"row {index}" for index in range(size)]}


class Opaque:
    """A plain class: JSON cannot hold it, pickle can."""

    def __init__(self) -> None:
        self.secret = 42


@checkpoint(allow_pickle=True)
def opaque() -> Opaque:
    return Opaque()


@flow
def approve_report(size: int) -> int:
    report = big_report(size)
    if not wait("ok", question="Publish?", schema=bool):
        return 0
    return len(report["rows"])  # type: ignore[arg-type]


def test_count_and_time_window(store_url: str) -> None:
    client = Client()
    before = datetime.now(tz=UTC)
    for index in range(3):
        with execution(f"a-{index}", name="alpha"):
            pass
        time.sleep(0.01)
    middle = datetime.now(tz=UTC)
    time.sleep(0.01)
    with execution("b-0", name="beta"):
        pass
    assert client.count_executions() == 4
    assert client.count_executions(flow="alpha") == 3
    assert client.count_executions(status=["completed"], flow="beta") == 1
    assert client.count_executions(status="waiting") == 0
    assert [row.id for row in client.list_executions(since=middle)] == ["b-0"]
    assert [row.id for row in client.list_executions(until=middle)] == ["a-2", "a-1", "a-0"]
    assert client.count_executions(since=before, until=middle) == 3
    assert client.count_executions(since=middle + timedelta(days=1)) == 0
    assert [row.id for row in client.list_executions(until=middle, limit=1, offset=1)] == ["a-1"]


def test_change_marker_moves_on_every_visible_change(store_url: str) -> None:
    client = Client()
    empty = client.change_marker()
    assert client.change_marker() == empty  # stable while nothing changes
    with pytest.raises(ExecutionWaitingError):
        approve_report.run(3, execution_id="m-1")
    after_run = client.change_marker()
    one = client.change_marker("m-1")
    assert after_run != empty
    with execution("m-2", name="other"):
        pass
    assert client.change_marker() != after_run
    assert client.change_marker("m-1") == one  # another execution's changes do not move it
    client.answer("m-1", "ok", True)
    answered = client.change_marker("m-1")
    assert answered != one
    assert approve_report.run(3, execution_id="m-1") == 3  # resumed: served from the store, completed
    assert client.change_marker("m-1") != answered
    assert client.change_marker("nope") == client.change_marker("also-nope")


def test_call_output_loads_the_whole_value(store_url: str) -> None:
    client = Client()
    with pytest.raises(ExecutionWaitingError):
        approve_report.run(200, execution_id="o-1")  # larger than the inline limit: in the artifact store
    (call,) = client.get_execution("o-1").calls
    assert call.output_preview is not None
    assert call.output_preview.endswith("…")
    value = client.call_output("o-1", call.sequence)
    assert value == {"rows": [f"row {index}" for index in range(200)]}
    with pytest.raises(CallNotFoundError, match="no checkpoint call #99"):
        client.call_output("o-1", 99)
    with pytest.raises(ExecutionNotFoundError):
        client.call_output("nope", 1)


def test_call_output_never_unpickles(store_url: str) -> None:
    with execution("p-1", name="pickled"):
        opaque()
    with pytest.raises(SerializationError, match="never unpickled"):
        Client().call_output("p-1", 1)


def test_resume_in_background_refuses_what_it_cannot_resume(store_url: str) -> None:
    client = Client()
    with execution("done", name="plain"):
        pass
    with pytest.raises(ExecutionError, match="nothing to resume"):
        client.resume_in_background("done")
    with pytest.raises(ExecutionWaitingError), execution("script", name="plain"):
        wait("go", question="Go?", schema=bool)
    with pytest.raises(ConfigurationError, match="re-run the program"):
        client.resume_in_background("script")
    client.cancel("script")
    with pytest.raises(ExecutionCancelledError):
        client.resume_in_background("script")
    with pytest.raises(ExecutionNotFoundError):
        client.resume_in_background("nope")
    with pytest.raises(ExecutionWaitingError):
        approve_report.run(2, execution_id="r-1")
    if store_url.startswith("sqlite://") and "///" not in store_url:
        with pytest.raises(ConfigurationError, match="memory"):
            client.resume_in_background("r-1")


def test_change_marker_moves_when_a_runner_is_found_gone(sqlite_file_store: str) -> None:
    """A runner killed on this host shows as gone at the next poll, without any write."""
    import socket
    import subprocess
    import sys

    from kitaru_core._runtime import HOST_ID, get_store, process_start_ticks

    store = get_store()
    store.create_execution("k-1", flow_name="killed", entry_point=None, inputs_fingerprint=None, inputs=None)
    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert store.try_acquire_lease(
            "k-1",
            expected_owner=None,
            owner="runner",
            host=socket.gethostname(),
            pid=runner.pid,
            lease_duration_s=60,
            host_id=HOST_ID,
            process_start_ticks=process_start_ticks(runner.pid),
        )
        client = Client()
        alive = client.change_marker()
        one_alive = client.change_marker("k-1")
        assert client.get_execution("k-1").runner_alive
    finally:
        runner.kill()
        runner.wait()
    assert not client.get_execution("k-1").runner_alive
    assert client.change_marker() != alive
    assert client.change_marker("k-1") != one_alive


def test_cli_lists_a_time_window(sqlite_file_store: str) -> None:
    import json

    from typer.testing import CliRunner

    from kitaru_core.cli import app

    with execution("early", name="window"):
        pass
    time.sleep(0.05)
    middle = datetime.now().astimezone()
    time.sleep(0.05)
    with execution("late", name="window"):
        pass

    def listed(*options: str) -> list[str]:
        result = CliRunner().invoke(
            app, ["--store-url", sqlite_file_store, "executions", "list", "--json", *options]
        )
        assert result.exit_code == 0, result.output
        return [row["id"] for row in json.loads(result.stdout)]

    stamp = middle.replace(tzinfo=None).isoformat(sep="T", timespec="milliseconds")  # local time, as typed
    assert listed("--since", stamp) == ["late"]
    assert listed("--until", stamp) == ["early"]
    assert listed() == ["late", "early"]
