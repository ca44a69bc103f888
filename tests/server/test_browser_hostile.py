"""A real OpenAI Agents SDK agent whose model returns hostile tool-call ids, approved in Chromium.

The model of `exec-a` calls `lookup` with a tool-call id full of dot segments that, unencoded, made
the page's Approve button post to `exec-b`'s approval of `wire_money(amount=5000)`; `exec-b`'s id
holds quotes, `<script>` and `%2F`. Clicking Approve approves exactly the call shown, the audit trail
names the token that did it, and a CLI answer is recorded with the operating-system user.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kitaru_core import Client, approval_wait_name
from tests.server import flows
from tests.server.conftest import LiveServer, finish, kitaru_cli, run_flow, start_server, stop_server
from tests.server.test_browser import browser, shoot  # noqa: F401  # the module's browser fixture

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect


@pytest.fixture
def hostile_server(
    sqlite_store: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveServer]:
    """A server whose background resumes reach a scripted model with hostile tool-call ids."""
    pytest.importorskip("agents")
    from kitaru_core.testing import ScriptedModelServer

    with ScriptedModelServer(flows.HOSTILE_SCRIPT) as model:
        monkeypatch.setenv("KITARU_TEST_MODEL_URL", model.base_url)
        monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
        server = start_server(sqlite_store, tmp_path)
        yield server
        stop_server(server)


def kitaru(store: tuple[str, str], *arguments: str) -> str:
    completed = kitaru_cli(store, *arguments)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_approve_in_the_page_approves_exactly_the_call_shown(
    browser: Any,  # noqa: F811
    hostile_server: LiveServer,
) -> None:
    store = hostile_server.store
    finish(run_flow(store, "hostile_desk", "exec-b", "Wire 5000 dollars"), 3)
    finish(run_flow(store, "hostile_desk", "exec-a", "Look up order 1"), 3)
    lookup = approval_wait_name("lookup", flows.HOSTILE_LOOKUP_ID)
    wire = approval_wait_name("wire_money", flows.HOSTILE_WIRE_ID)
    assert [wait.name for wait in Client().pending_waits("exec-a")] == [lookup]
    assert [wait.name for wait in Client().pending_waits("exec-b")] == [wire]
    ana = json.loads(kitaru(store, "tokens", "create", "--name", "ana", "--json"))["token"]

    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=hostile_server.url)
    page = context.new_page()
    errors: list[str] = []
    dialogs: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"/login?token={ana}")

    # the waiting page lists both; the hostile names are text, not markup
    page.goto("/waiting")
    expect(page.locator("article.wait")).to_have_count(2)
    expect(page.locator("article.wait[data-execution='exec-b'] .wait-name")).to_contain_text("<script>")
    assert page.evaluate("window.hacked") is None

    page.goto("/executions/exec-a")
    card = page.locator("article.wait")
    expect(card.locator(".tool-call")).to_contain_text("lookup")
    expect(card.locator(".wait-name code")).to_have_text(lookup)
    shoot(page, "hostile-1-approval")
    card.get_by_role("button", name="Approve").click()
    expect(page.locator("#execution-header .badge").first).to_have_text("completed", timeout=60_000)
    expect(page.locator("pre.output")).to_contain_text("Done: order 1: 1 book")

    # exactly the call shown was approved, by ana; the other execution's wire transfer still waits
    answered = {wait.name: wait for wait in Client().get_execution("exec-a").waits}
    assert answered[lookup].status == "answered"
    assert answered[lookup].answer["approved"] is True
    assert answered[lookup].answered_by == "ana (token)"
    assert [wait.name for wait in Client().pending_waits("exec-b")] == [wire]
    audit = page.locator("#execution-audit")
    expect(audit.locator("tr[data-action=answer] .actor")).to_have_text("ana")
    expect(audit.locator("tr[data-action=resume] .actor")).to_have_text("ana")
    shoot(page, "hostile-2-approved-by-ana")

    # the wire transfer is denied from the CLI: the trail shows the operating-system user
    kitaru(store, "executions", "answer", "exec-b", wire, "--deny", "--message", "never")
    page.goto("/executions/exec-b")
    expect(page.locator("#execution-audit tr[data-action=answer] .actor")).to_have_text(getpass.getuser())
    expect(page.locator("#execution-audit tr[data-action=answer]")).to_contain_text("os user")
    expect(page.locator("ul.answered")).to_contain_text("<script>")
    shown = json.loads(kitaru(store, "executions", "show", "exec-b", "--json"))
    assert [(e["action"], e["actor"], e["actor_kind"]) for e in shown["audit"]] == [
        ("answer", getpass.getuser(), "os user")
    ]
    assert page.evaluate("window.hacked") is None
    context.close()
    assert errors == [], errors
    assert dialogs == [], dialogs
