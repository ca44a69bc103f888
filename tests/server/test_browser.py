"""The dashboard in a real browser: Playwright driving Debian's Chromium (headless, never downloaded).

A durable run started by another process appears live, its tool-call approval is answered in the
page, the run resumes in a background process and the page shows it completed; an invalid typed
answer shows the validation message and the wait stays pending. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kitaru_core import Client
from tests.server.conftest import (
    ARTIFACTS,
    REPO,
    TOKEN,
    LiveServer,
    finish,
    run_flow,
    start_server,
    stop_server,
)

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    if os.environ.get("KITARU_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"{CHROMIUM} is required (KITARU_REQUIRE_CHROMIUM=1): apt-get install chromium")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)
playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

DOCS_SCREENSHOT = REPO / "docs" / "images" / "dashboard.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, live_server: LiveServer) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=live_server.url)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(f"/login?token={TOKEN}")  # signs in: the token goes into an HttpOnly cookie
    yield opened
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def shoot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_a_run_appears_live_is_approved_in_the_page_and_completes(page: Any, live_server: LiveServer) -> None:
    expect(page.locator("#live-indicator")).to_have_text("live")
    page.evaluate("window.notReloaded = true")
    rows = page.locator("tr[data-execution='agent-1']")
    expect(rows).to_have_count(0)

    # another process runs the agent: it shows up without a reload, then stops at the approval
    runner = run_flow(live_server.store, "refund_agent", "agent-1", "A-1001", KITARU_TEST_STEP_DELAY_S="1.0")
    expect(rows).to_have_count(1, timeout=20_000)
    finish(runner, 3)
    expect(rows.locator(".badge")).to_have_text("waiting", timeout=20_000)
    expect(page.locator("#pending-count")).to_have_text("1")
    assert page.evaluate("window.notReloaded") is True
    shoot(page, "1-list-waiting")

    rows.locator("a").click()
    page.wait_for_url("**/executions/agent-1")
    wait_card = page.locator("article.wait")
    expect(wait_card.locator("h3")).to_contain_text("Allow the tool call issue_refund")
    expect(wait_card.locator(".tool-call")).to_contain_text('"amount": 25')
    expect(page.locator("tr.call")).to_have_count(1)
    expect(page.locator("tr.call .kind")).to_have_text("model")
    page.evaluate("window.notReloaded = true")
    docs_shot = shoot(page, "2-approval")
    if os.environ.get("KITARU_DOCS_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(docs_shot, DOCS_SCREENSHOT)

    wait_card.locator("textarea[data-field=message]").fill("Within policy.")
    expect(wait_card.locator("input[name=resume]")).to_be_checked()
    wait_card.get_by_role("button", name="Approve").click()

    # the background process resumes it; the page follows over SSE to the end
    header = page.locator("#execution-header .badge").first
    expect(header).to_have_text("completed", timeout=30_000)
    expect(page.locator("tr.call")).to_have_count(3)
    sources = page.locator("tr.call .source").all_inner_texts()
    assert sources == ["store", "live", "live"]
    expect(page.locator("tr.call").nth(1)).to_contain_text("tool:issue_refund:call-7")
    expect(page.locator("pre.output")).to_contain_text("Done: refunded $25 on A-1001")
    expect(page.locator("ul.answered")).to_contain_text('"message": "Within policy."')
    expect(page.locator("#execution-totals")).to_contain_text("1624 / 128")
    assert page.evaluate("window.notReloaded") is True
    shoot(page, "3-completed")
    detail = Client().get_execution("agent-1")
    assert (detail.status, detail.run_count) == ("completed", 2)


def test_an_invalid_answer_shows_the_problem_and_the_wait_stays_pending(
    page: Any, live_server: LiveServer
) -> None:
    finish(run_flow(live_server.store, "typed_refund", "typed-1", "B-7"), 3)
    page.goto("/waiting")
    card = page.locator("article.wait[data-execution='typed-1']")
    expect(card.locator("h3")).to_have_text("How much should B-7 get back?")
    card.locator("[data-field=amount]").fill("0")
    card.locator("[data-field=reason]").fill("damaged in transit")
    card.get_by_role("button", name="Answer").click()
    problems = card.locator(".result.problems")
    expect(problems).to_contain_text("amount: 0 is less than the minimum of 1")
    expect(problems).to_contain_text("the wait stays pending")
    shoot(page, "4-invalid-answer")
    assert [wait.name for wait in Client().pending_waits("typed-1")] == ["refund"]

    # the form keeps what was typed across live updates; a valid answer goes through
    card.locator("[data-field=amount]").fill("30")
    card.get_by_role("button", name="Answer").click()
    expect(page.locator("#waiting-list")).to_contain_text("Nothing is waiting", timeout=30_000)
    expect(page.locator("#pending-count")).to_be_hidden()
    assert Client().pending_waits("typed-1") == []


def test_a_denial_reaches_the_run_and_large_outputs_load_on_demand(
    page: Any, live_server: LiveServer
) -> None:
    finish(run_flow(live_server.store, "refund_order", "deny-1", "C-3", "90"), 3)
    page.goto("/executions/deny-1")
    card = page.locator("article.wait")
    card.locator("textarea[data-field=message]").fill("Over the limit for this customer.")
    card.get_by_role("button", name="Deny").click()
    expect(page.locator("#execution-header .badge").first).to_have_text("completed", timeout=30_000)
    expect(page.locator("pre.output")).to_contain_text(
        "refund of C-3 denied: Over the limit for this customer."
    )

    # the stored order is larger than a preview: its whole value is fetched when asked for
    first_call = page.locator("tr.call").first
    expect(first_call.locator("td.preview code").last).to_contain_text("…")
    first_call.get_by_role("button", name=re.compile("full output")).click()
    expect(first_call.locator("pre.full-output")).to_contain_text('"line 59"')
    shoot(page, "5-denied-full-output")


@pytest.fixture
def agent_server(
    sqlite_store: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveServer]:
    """A server whose background resumes (and the test's runs) reach a scripted model server."""
    pytest.importorskip("agents")
    from kitaru_core.testing import ScriptedModelServer
    from tests.server.flows import REFUND_DESK_SCRIPT

    with ScriptedModelServer(REFUND_DESK_SCRIPT, request_log_path=tmp_path / "requests.jsonl") as model:
        monkeypatch.setenv("KITARU_TEST_MODEL_URL", model.base_url)
        monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
        server = start_server(sqlite_store, tmp_path)
        yield server
        stop_server(server)


def test_a_real_openai_agents_run_is_approved_in_the_page_and_completes(
    browser: Any, agent_server: LiveServer, tmp_path: Path
) -> None:
    from kitaru_core.testing import read_request_log

    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=agent_server.url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"/login?token={TOKEN}")
    rows = page.locator("tr[data-execution='desk-1']")
    expect(rows).to_have_count(0)

    # another process runs the durable agent: its first model call is recorded, then it waits
    finish(run_flow(agent_server.store, "refund_desk", "desk-1", "A-2002"), 3)
    expect(rows.locator(".badge")).to_have_text("waiting", timeout=20_000)
    rows.locator("a").click()
    page.wait_for_url("**/executions/desk-1")
    wait_card = page.locator("article.wait")
    expect(wait_card.locator("h3")).to_contain_text("Allow the tool call issue_refund")
    expect(wait_card.locator(".tool-call")).to_contain_text('"amount": 30')
    expect(page.locator("tr.call .kind")).to_have_text("model")
    expect(page.locator("tr.call")).to_contain_text("gpt-4o-mini")
    shoot(page, "agent-1-approval")

    wait_card.get_by_role("button", name="Approve").click()
    expect(page.locator("#execution-header .badge").first).to_have_text("completed", timeout=60_000)
    expect(page.locator("tr.call")).to_have_count(3)
    kinds = [text.lower() for text in page.locator("tr.call .kind").all_inner_texts()]  # shown in capitals
    assert kinds == ["model", "tool", "model"]
    assert page.locator("tr.call .source").all_inner_texts() == ["store", "live", "live"]
    expect(page.locator("pre.output")).to_contain_text("Done: refunded $30 on A-2002")
    shoot(page, "agent-2-completed")
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"
    # The resumed run did not ask the model again for the turn that was waiting.
    assert len(read_request_log(tmp_path / "requests.jsonl")) == 2
    assert Client().get_execution("desk-1").status == "completed"
