"""The Workers page and a worker resuming an approval answered in the browser (Chromium, headless).

The Workers page shows what `kitaru-adapters workers list` shows, with host and queue names that are
hostile HTML kept as text; an approval clicked in the page is handed to a live worker, which
resumes the execution; the server process never imports the flow module (import markers).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kitaru_core import Client
from kitaru_core._workers import _save_worker  # pyright: ignore[reportPrivateUsage]
from tests.server.conftest import TOKEN, LiveServer, wait_until
from tests.server.test_browser import browser, shoot  # noqa: F401  # the module's browser fixture
from tests.server.test_workers_handoff import (
    FLOWS,
    importers,
    markers,  # noqa: F401  # the import markers fixture
    server_and_worker,  # noqa: F401  # a server and a worker on one SQLite file
)

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

HOSTILE_HOST = '<img src=x onerror="window.pwned=1">host'
HOSTILE_QUEUE = "<script>window.pwned=2</script>&\"'"
HOSTILE_EXECUTION = "run/<b>1</b>?#"


@pytest.fixture
def page(
    browser: Any,  # noqa: F811
    server_and_worker: tuple[LiveServer, subprocess.Popen[bytes], Path],  # noqa: F811
) -> Iterator[Any]:
    server = server_and_worker[0]
    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=server.url)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(f"/login?token={TOKEN}")
    yield opened
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def test_the_workers_page_escapes_hostile_names_and_a_worker_resumes_an_approval_clicked_in_the_page(
    page: Any,
    server_and_worker: tuple[LiveServer, subprocess.Popen[bytes], Path],  # noqa: F811
    markers: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    server, worker, _log = server_and_worker
    now = time.time()
    _save_worker(
        Client().store,
        "hostile",
        {
            "host": HOSTILE_HOST,
            "host_id": "another-host",
            "pid": 4242,
            "queues": json.dumps([f"{HOSTILE_QUEUE}:3", "plain"]),
            "concurrency": 2,
            "running": json.dumps([HOSTILE_EXECUTION]),
            "started_at_epoch_s": now - 50,
            "heartbeat_at_epoch_s": now - 2,
        },
        create=True,
    )
    page.goto("/workers")
    rows = page.locator("tr[data-worker]")
    expect(rows).to_have_count(2)
    real = page.locator("tr.worker-alive").filter(has_text=str(worker.pid))
    expect(real.locator(".queues")).to_have_text("default")
    expect(real.locator(".badge")).to_have_text("alive")
    hostile = page.locator("tr[data-worker='hostile']")
    expect(hostile.locator("td.host")).to_have_text(HOSTILE_HOST)
    expect(hostile.locator("code.queue")).to_have_text([f"{HOSTILE_QUEUE}:3", "plain"])
    expect(hostile.locator("td.heartbeat")).to_contain_text("s ago")
    assert hostile.locator("td.host img, td.queues script").count() == 0
    assert page.evaluate("window.pwned") is None
    link = hostile.locator("td.running a")
    expect(link).to_have_text(HOSTILE_EXECUTION)
    assert link.get_attribute("href") == "/executions/run%2F%3Cb%3E1%3C%2Fb%3E%3F%23"
    shoot(page, "workers")

    with server.client() as http:  # the API gives the same rows
        listed = http.get("/api/workers").json()
    assert [
        (row["id"], row["host"], row["queues"], row["running"]) for row in listed if row["id"] == "hostile"
    ] == [("hostile", HOSTILE_HOST, [f"{HOSTILE_QUEUE}:3", "plain"], [HOSTILE_EXECUTION])]

    # then (the same server and worker: they start once) an approval clicked in the page
    _approval_clicked_in_the_page_is_resumed_by_the_worker(page, server_and_worker, markers, tmp_path)


def _approval_clicked_in_the_page_is_resumed_by_the_worker(
    page: Any,
    started: tuple[LiveServer, subprocess.Popen[bytes], Path],
    marker_folder: Path,
    tmp_path: Path,
) -> None:
    server, worker, log = started
    effects = tmp_path / "effects"
    effects.mkdir()
    client = Client()
    execution_id = client.submit(f"{FLOWS}:approval_then_step", "page", str(effects))
    wait_until(lambda: client.get_execution(execution_id).status == "waiting", timeout_s=60)
    page.goto(f"/executions/{execution_id}")
    card = page.locator("article.wait")
    expect(card.locator("input[name=resume]")).to_be_checked()
    clicked_at = time.time()
    card.get_by_role("button", name="Approve").click()
    expect(page.locator("#execution-header .badge").first).to_have_text("completed", timeout=30_000)
    expect(page.locator("body")).to_contain_text("queued_for_worker")  # the audit trail says who resumed it
    resumed_at = float((effects / "page-resumed").read_text().split()[1])
    print(
        f"\napproved in the browser -> the worker's child started the next call in {resumed_at - clicked_at:.3f} s"
    )
    shoot(page, "workers-approved")
    imported = importers(marker_folder)
    assert server.process.pid not in imported
    children = {pid for pid, parent in imported.items() if parent == worker.pid}
    assert len(children) >= 2, (imported, log.read_text())
    assert set(imported) - {os.getpid()} == children, (imported, log.read_text())
