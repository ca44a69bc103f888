"""'Replay from here' in Chromium: the editor on a timeline row, then the compare view of both executions.

A plain `@flow` with three checkpoint calls is replayed from its second call with an overridden
output: the page lands on the compare view, where the first call is the same, the second carries the
override and the third ran live on it, and the new execution completes. An adapter-like run (calls
recorded as an adapter records them, with a codec that converts replay overrides) is replayed with an
overridden model response, then with an overridden tool result, and the agent's later calls see
them. A wait's answer changed in the editor is what the replay gets. A call whose key and output are
markup stays text in the editor and in the compare view, and the API's refusals show in the form
with what was typed kept.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import pytest

from kitaru_core import Client
from kitaru_core.errors import ExecutionWaitingError
from tests.server import replay_flows
from tests.server.conftest import LiveServer
from tests.server.test_browser import browser, expect, page, shoot  # noqa: F401  # the module's fixtures

ORIGINAL = "replay-page-1"
HOSTILE_ID = 'replay "<i>q</i>" %2F'
AGENT = "agent-desk-1"
WAITED = "approved-1"


def test_replay_from_a_timeline_row_with_an_override_lands_on_the_compare_view(
    page: Any,  # noqa: F811
    live_server: LiveServer,
) -> None:
    assert replay_flows.pipeline.run("durable", execution_id=ORIGINAL) == "published: summary of durable (3 facts)"
    page.goto(f"/executions/{ORIGINAL}")
    rows = page.locator("#execution-timeline tr.call")
    expect(rows).to_have_count(3)
    rows.nth(1).get_by_role("button", name="Replay from here").click()

    editor = page.locator("#replay-editor")
    expect(editor).to_be_visible()
    expect(editor.locator(".replay-key")).to_have_text("summarize:0")
    # prefilled: the call's stored output and the execution's inputs
    expect(editor.locator("textarea[name=output]")).to_have_value('"summary of durable (3 facts)"')
    assert json.loads(editor.locator("textarea[name=inputs]").input_value()) == {"topic": "durable"}
    expect(editor.locator(".adapter-note")).to_be_hidden()

    # not JSON: refused in the page, nothing sent, the text kept
    editor.locator("input[name=override_output]").check()
    editor.locator("textarea[name=output]").fill('"hand-written')
    editor.get_by_role("button", name="Replay").click()
    expect(editor.locator(".result")).to_contain_text("output: not valid JSON")
    assert Client().count_executions() == 1

    editor.locator("textarea[name=output]").fill('"hand-written summary"')
    shoot(page, "replay-1-editor")
    editor.get_by_role("button", name="Replay").click()

    page.wait_for_url(re.compile(r"/compare\?"))
    replays = [row for row in Client().list_executions() if row.replay_of == ORIGINAL]
    assert len(replays) == 1
    new_id = replays[0].id
    expect(page.locator("a.execution-a")).to_have_text(ORIGINAL)
    expect(page.locator("a.execution-b")).to_have_text(new_id)
    # the page follows the new execution live until it completes
    expect(page.locator(".b-status .badge")).to_have_text("completed", timeout=30_000)
    diff = page.locator("table.compare tbody tr")
    expect(diff).to_have_count(3)
    assert [row.get_attribute("data-change") for row in diff.all()] == ["same", "changed", "changed"]
    assert [row.get_attribute("data-key") for row in diff.all()] == ["fetch:0", "summarize:0", "publish:0"]
    expect(diff.nth(1).locator("code.diff-output").nth(0)).to_have_text('"summary of durable (3 facts)"')
    expect(diff.nth(1).locator("code.diff-output").nth(1)).to_have_text('"hand-written summary"')
    expect(diff.nth(2).locator("code.diff-output").nth(1)).to_have_text('"published: hand-written summary"')
    expect(diff.nth(2).locator(".source").nth(1)).to_have_text("live")
    expect(page.locator(".counts")).to_have_text("1 same · 2 changed · 0 new · 0 missing")
    assert Client().get_output(new_id) == "published: hand-written summary"
    shoot(page, "replay-2-compare")

    # the replay's page links back to the comparison
    page.locator("a.execution-b").click()
    page.locator("a.compare-link").click()
    page.wait_for_url(re.compile(r"/compare\?"))
    expect(page.locator("table.compare tbody tr")).to_have_count(3)


def test_hostile_keys_and_outputs_stay_text_and_refusals_keep_the_input(
    page: Any,  # noqa: F811
    live_server: LiveServer,
) -> None:
    replay_flows.hostile_pipeline.run("x", execution_id=HOSTILE_ID)
    page.goto(f"/executions/{quote(HOSTILE_ID, safe='')}")
    hostile_key = f"{replay_flows.HOSTILE_KEY_NAME}:0"
    rows = page.locator("#execution-timeline tr.call")
    editor = page.locator("#replay-editor")
    # a model request stored in an adapter's format (not JSON): a response template, and the stored
    # response beside it as text
    rows.nth(1).get_by_role("button", name="Replay from here").click()
    expect(editor.locator(".replay-key")).to_have_text("model_request:0")
    expect(editor.locator(".adapter-note")).to_be_hidden()
    expect(editor.locator("input[name=override_output]")).to_be_enabled()
    expect(editor.locator("textarea[name=output]")).to_have_value('{"text": "", "tool_calls": []}')
    expect(editor.locator(".stored-output-text")).to_contain_text(replay_flows.HOSTILE_MODEL_OUTPUT)
    assert editor.locator("img, b, script").count() == 0
    editor.get_by_role("button", name="Close").click()
    expect(editor).to_be_hidden()
    # a tool call whose stored result is not JSON: `null` to change
    rows.nth(2).get_by_role("button", name="Replay from here").click()
    expect(editor.locator(".replay-key")).to_have_text("tool:lookup:0")
    expect(editor.locator("textarea[name=output]")).to_have_value("null")
    editor.get_by_role("button", name="Close").click()
    # a handoff of an adapter takes no override: the note says why
    rows.nth(3).get_by_role("button", name="Replay from here").click()
    expect(editor.locator(".replay-key")).to_have_text("handoff:desk:0")
    expect(editor.locator(".adapter-note")).to_be_visible()
    expect(editor.locator(".adapter-note")).to_contain_text("A handoff call of an adapter")
    expect(editor.locator("input[name=override_output]")).to_be_disabled()
    expect(editor.locator(".stored-output")).to_be_hidden()
    editor.get_by_role("button", name="Close").click()

    row = rows.first
    expect(row.locator("td code").first).to_have_text(hostile_key)
    row.get_by_role("button", name="Replay from here").click()
    expect(editor.locator(".replay-key")).to_have_text(hostile_key)
    expect(editor.locator("textarea[name=output]")).to_have_value(json.dumps(replay_flows.HOSTILE_OUTPUT))

    # the API refuses an input the flow does not have: its message shows, the text stays
    editor.locator("input[name=override_inputs]").check()
    editor.locator("textarea[name=inputs]").fill('{"nope": "</textarea><script>window.hacked=3</script>"}')
    editor.get_by_role("button", name="Replay").click()
    expect(editor.locator(".result")).to_contain_text("has no input 'nope'")
    expect(editor.locator("textarea[name=inputs]")).to_have_value('{"nope": "</textarea><script>window.hacked=3</script>"}')

    editor.locator("input[name=override_inputs]").uncheck()
    editor.locator("input[name=override_output]").check()
    editor.locator("textarea[name=output]").fill('"<b onmouseover=\\"window.hacked=4\\">bold</b>"')
    editor.locator("input[name=run][value=queue]").check()
    editor.get_by_role("button", name="Replay").click()
    page.wait_for_url(re.compile(r"/compare\?"))
    expect(page.locator("a.execution-a")).to_have_text(HOSTILE_ID)
    expect(page.locator(".b-status .badge")).to_have_text("queued")
    first = page.locator("table.compare tbody tr").first
    expect(first.locator("code.key")).to_have_text(hostile_key)
    expect(first.locator("code.diff-output").nth(0)).to_have_text(json.dumps(replay_flows.HOSTILE_OUTPUT))
    expect(first.locator("code.diff-output").nth(1)).to_have_text('"<b onmouseover=\\"window.hacked=4\\">bold</b>"')
    # the model call after the chosen one has not run in the queued replay: missing, with A's tokens and cost
    model = page.locator("table.compare tbody tr[data-key='model_request:0']")
    expect(model).to_have_attribute("data-change", "missing")
    expect(model.locator("td.num").nth(0)).to_have_text("10/5")
    expect(model.locator("td.num").nth(1)).to_have_text("$0.2500")
    expect(page.locator("[data-totals=A] .n")).to_have_text("10 / 5 · $0.2500")
    assert page.locator("table.compare b, table.compare img, table.compare script").count() == 0
    assert page.evaluate("window.hacked") is None
    shoot(page, "replay-3-hostile")


def _replay_and_compare(opened: Any, source: str) -> str:
    """Send the open editor's replay and wait on the compare view until it completes: the new id."""
    opened.locator("#replay-editor").get_by_role("button", name="Replay").click()
    opened.wait_for_url(re.compile(r"/compare\?"))
    expect(opened.locator("a.execution-a")).to_have_text(source)
    expect(opened.locator(".b-status .badge")).to_have_text("completed", timeout=30_000)
    return str(opened.locator("a.execution-b").inner_text())


def test_an_adapter_model_response_and_tool_result_overridden_in_the_editor(
    page: Any,  # noqa: F811
    live_server: LiveServer,
) -> None:
    assert (
        replay_flows.agent_desk.run("refund 7", execution_id=AGENT)
        == "answer from (rows for (look up refund 7))"
    )
    page.goto(f"/executions/{AGENT}")
    rows = page.locator("#execution-timeline tr.call")
    editor = page.locator("#replay-editor")
    output = editor.locator("textarea[name=output]")

    # the model request: a response template to fill, the stored response beside it for reference
    rows.nth(0).get_by_role("button", name="Replay from here").click()
    expect(editor.locator(".replay-key")).to_have_text("model_request:0")
    expect(output).to_have_value('{"text": "", "tool_calls": []}')
    expect(editor.locator(".stored-output-text")).to_have_text('"look up refund 7"')
    expect(editor.locator(".override-meaning[data-meaning=model]")).to_be_visible()
    expect(editor.locator(".override-meaning[data-meaning=user]")).to_be_hidden()
    expect(editor.locator(".wait-answers")).to_be_hidden()
    editor.locator("input[name=override_output]").check()
    output.fill('{"tool_calls": "lookup"}')  # not a model response: the API's message, the text kept
    editor.get_by_role("button", name="Replay").click()
    expect(editor.locator(".result")).to_contain_text("is not a model response")
    expect(output).to_have_value('{"tool_calls": "lookup"}')
    output.fill(
        '{"text": "check the ledger", "tool_calls": [{"name": "lookup", "arguments": {"q": "ledger"}}]}'
    )
    shoot(page, "replay-4-model-override")
    said = _replay_and_compare(page, AGENT)
    rows_ab = page.locator("table.compare tbody tr")
    assert [row.get_attribute("data-change") for row in rows_ab.all()] == ["changed"] * 3
    expect(rows_ab.nth(0).locator("code.diff-output").nth(1)).to_contain_text('"text":"check the ledger"')
    expect(rows_ab.nth(1).locator(".source").nth(1)).to_have_text("live")
    # the agent's later calls ran live on the overridden response, converted by its codec
    said_text = 'said "check the ledger" calling [lookup({"q": "ledger"})]'
    assert Client().get_output(said) == f"answer from (rows for ({said_text}))"

    # the tool call: its stored result prefilled as JSON, to change
    page.goto(f"/executions/{AGENT}")
    rows.nth(1).get_by_role("button", name="Replay from here").click()
    expect(editor.locator(".replay-key")).to_have_text("tool:lookup:0")
    expect(output).to_have_value('"rows for (look up refund 7)"')
    expect(editor.locator(".override-meaning[data-meaning=tool]")).to_be_visible()
    expect(editor.locator(".stored-output")).to_be_hidden()
    editor.locator("input[name=override_output]").check()
    output.fill('{"rows": [1, 2]}')
    given = _replay_and_compare(page, AGENT)
    rows_ab = page.locator("table.compare tbody tr")
    assert [row.get_attribute("data-change") for row in rows_ab.all()] == ["same", "changed", "changed"]
    expect(rows_ab.nth(1).locator("code.diff-output").nth(1)).to_contain_text('"rows": [1, 2]')
    assert Client().get_output(given) == 'answer from (given {"rows": [1, 2]})'
    shoot(page, "replay-5-tool-override")


def test_a_wait_answer_changed_in_the_editor_is_what_the_replay_gets(
    page: Any,  # noqa: F811
    live_server: LiveServer,
) -> None:
    with pytest.raises(ExecutionWaitingError):
        replay_flows.approved_pipeline.run("durable", execution_id=WAITED)
    Client().answer(WAITED, "plan", {"tier": "basic", "note": "<b>cheap</b>"})
    assert Client().resume(WAITED) == "published: basic plan for durable <b>cheap</b>"
    page.goto(f"/executions/{WAITED}")
    rows = page.locator("#execution-timeline tr.call")
    editor = page.locator("#replay-editor")
    # replayed from the call before the wait, the wait is asked again: nothing to change
    rows.nth(0).get_by_role("button", name="Replay from here").click()
    expect(editor.locator(".wait-answers")).to_be_hidden()
    editor.get_by_role("button", name="Close").click()

    rows.nth(1).get_by_role("button", name="Replay from here").click()
    expect(editor.locator(".replay-key")).to_have_text("publish:0")
    answer = editor.locator("textarea.wait-answer")
    expect(answer).to_have_count(1)
    expect(editor.locator(".wait-answer-list label")).to_contain_text("Which <i>plan</i>?")
    assert json.loads(answer.input_value()) == {"tier": "basic", "note": "<b>cheap</b>"}
    answer.fill('{"tier": "platinum"}')  # refused by the wait's schema: the API's message, the text kept
    editor.get_by_role("button", name="Replay").click()
    expect(editor.locator(".result")).to_contain_text(
        "The answer given for wait 'plan' does not satisfy its schema"
    )
    expect(editor.locator(".result li")).to_contain_text("platinum")
    expect(answer).to_have_value('{"tier": "platinum"}')
    assert Client().count_executions() == 1

    answer.fill('{"tier": "gold", "note": "<script>window.hacked=6</script>"}')
    shoot(page, "replay-6-wait-override")
    new_id = _replay_and_compare(page, WAITED)
    rows_ab = page.locator("table.compare tbody tr")
    assert [row.get_attribute("data-change") for row in rows_ab.all()] == ["same", "changed"]
    assert Client().get_output(new_id) == "published: gold plan for durable <script>window.hacked=6</script>"
    assert [wait.answer for wait in Client().get_execution(new_id).waits] == [
        {"tier": "gold", "note": "<script>window.hacked=6</script>"}
    ]
    assert page.evaluate("window.hacked") is None
