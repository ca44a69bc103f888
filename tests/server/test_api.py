"""The HTTP API through FastAPI's TestClient: auth, validation, unknown ids, pagination, resume, cancel."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kitaru_core import Client, execution, wait
from kitaru_core.errors import ExecutionWaitingError
from tests.server import flows
from tests.server.conftest import TOKEN, bearer, make_api, wait_until


def start_waiting(flow_object: object, *arguments: object, execution_id: str) -> str:
    with pytest.raises(ExecutionWaitingError):
        flow_object.run(*arguments, execution_id=execution_id)  # type: ignore[attr-defined]
    return execution_id


WRITES = [
    ("post", "/api/executions/r-1/waits/approve:issue_refund:call-1/answer", {"value": {"approved": True}}),
    ("post", "/api/executions/r-1/resume", None),
    ("post", "/api/executions/r-1/cancel", None),
    ("post", "/api/executions/r-1/replay", {"run": False}),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_writes_need_the_token(api: TestClient, method: str, path: str, body: object) -> None:
    start_waiting(flows.refund_order, "A-1", 20, execution_id="r-1")

    missing = api.request(method, path, json=body)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"] == "missing_token"
    assert "Authorization: Bearer" in missing.json()["message"]

    wrong = api.request(method, path, json=body, headers=bearer("not-the-token-at-all"))
    assert wrong.status_code == 403
    assert wrong.json()["error"] == "invalid_token"

    malformed = api.request(method, path, json=body, headers={"Authorization": f"Token {TOKEN}"})
    assert malformed.status_code in {401, 403}

    # nothing changed
    detail = Client().get_execution("r-1")
    assert (detail.status, [w.status for w in detail.waits]) == ("waiting", ["pending"])

    allowed = api.request(method, path, json=body, headers=bearer())
    assert allowed.status_code in {200, 202}, allowed.text


def test_reads_are_open_on_loopback_and_need_the_token_otherwise(
    sqlite_store: tuple[str, str], tmp_path: Path
) -> None:
    start_waiting(flows.confirm, "B-1", execution_id="c-1")
    with make_api(sqlite_store, tmp_path, open_reads=True) as open_api:
        assert open_api.get("/api/executions").status_code == 200
        assert open_api.get("/").status_code == 200
    with make_api(sqlite_store, tmp_path, open_reads=False) as closed:
        for path in ("/api/executions", "/api/executions/c-1", "/api/waits", "/api/events"):
            assert closed.get(path).status_code == 401, path
            assert closed.get(path, headers=bearer("wrong-token-wrong-token")).status_code == 403, path
        assert closed.get("/api/executions/c-1", headers=bearer()).json()["id"] == "c-1"
        page = closed.get("/executions/c-1", follow_redirects=False)
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=%2Fexecutions%2Fc-1"
        # sign in through the form: the cookie opens the pages
        bad = closed.post("/login", data={"token": "nope", "next": "/executions/c-1"}, follow_redirects=False)
        assert bad.headers["location"].startswith("/login?")
        signed = closed.post(
            "/login", data={"token": TOKEN, "next": "/executions/c-1"}, follow_redirects=False
        )
        assert signed.headers["location"] == "/executions/c-1"
        assert "httponly" in signed.headers["set-cookie"].lower()
        assert "samesite=strict" in signed.headers["set-cookie"].lower()
        shown = closed.get("/executions/c-1")
        assert shown.status_code == 200
        assert "Ship B-1?" in shown.text
        # no open redirect after sign-in
        elsewhere = closed.post(
            "/login", data={"token": TOKEN, "next": "//evil.example"}, follow_redirects=False
        )
        assert elsewhere.headers["location"] == "/"


def test_a_cookie_signs_writes_only_with_the_dashboard_header(api: TestClient) -> None:
    start_waiting(flows.confirm, "C-1", execution_id="c-2")
    api.get(f"/login?token={TOKEN}", follow_redirects=False)
    path = "/api/executions/c-2/waits/confirm/answer"
    cross_site = api.post(path, json={"value": True})
    assert cross_site.status_code == 403
    assert cross_site.json()["error"] == "cross_site_request"
    assert Client().pending_waits("c-2")[0].name == "confirm"
    from_dashboard = api.post(path, json={"value": True}, headers={"X-Kitaru-Dashboard": "1"})
    assert from_dashboard.status_code == 200, from_dashboard.text
    assert Client().pending_waits("c-2") == []


def test_an_invalid_answer_is_422_with_the_problems_and_the_wait_stays_pending(api: TestClient) -> None:
    start_waiting(flows.typed_refund, "D-1", execution_id="t-1")
    path = "/api/executions/t-1/waits/refund/answer"

    refused = api.post(path, json={"value": {"amount": 0, "reason": 7}}, headers=bearer())
    assert refused.status_code == 422
    body = refused.json()
    assert body["error"] == "InvalidAnswerError"
    assert body["problems"] == [
        "amount: 0 is less than the minimum of 1",
        "reason: 7 is not valid under any of the given schemas",
    ]
    assert "stays pending" in body["message"]
    (pending,) = api.get("/api/waits", params={"execution_id": "t-1"}).json()
    assert (pending["name"], pending["status"]) == ("refund", "pending")
    assert pending["schema"]["properties"]["amount"]["maximum"] == 100

    not_an_object = api.post(path, json={"value": "fifty"}, headers=bearer())
    assert not_an_object.status_code == 422
    assert not_an_object.json()["problems"] == ["value: 'fifty' is not of type 'object'"]

    no_value = api.post(path, json={"resume": True}, headers=bearer())
    assert no_value.status_code == 422
    assert no_value.json()["detail"][0]["loc"] == ["body", "value"]
    assert no_value.json()["problems"] == ["body.value: Field required"]

    assert Client().pending_waits("t-1")[0].status == "pending"
    accepted = api.post(path, json={"value": {"amount": 50}}, headers=bearer())
    assert accepted.status_code == 200
    assert accepted.json()["wait"]["answer"] == {"amount": 50}
    again = api.post(path, json={"value": {"amount": 60}}, headers=bearer())
    assert again.status_code == 409
    assert again.json()["error"] == "WaitAlreadyAnsweredError"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/executions/nope"),
        ("get", "/api/executions/nope/calls/1/output"),
        ("get", "/api/executions/r-2/calls/99/output"),
        ("post", "/api/executions/nope/waits/x/answer"),
        ("post", "/api/executions/r-2/waits/no-such-wait/answer"),
        ("post", "/api/executions/nope/resume"),
        ("post", "/api/executions/nope/cancel"),
    ],
)
def test_unknown_ids_are_404(api: TestClient, method: str, path: str) -> None:
    start_waiting(flows.refund_order, "E-1", 5, execution_id="r-2")
    response = api.request(method, path, json={"value": True}, headers=bearer())
    assert response.status_code == 404, response.text
    assert response.json()["error"] in {"ExecutionNotFoundError", "WaitNotFoundError", "CallNotFoundError"}
    assert response.json()["message"]


def test_control_characters_are_refused_before_the_store(api: TestClient) -> None:
    # PostgreSQL refuses NUL in text: such ids must be a 422, never reach the store as a 500
    for path in ("/api/executions/a%00b", "/api/waits?execution_id=a%00b", "/api/executions?flow=%00"):
        response = api.get(path)
        assert response.status_code == 422, path
        assert response.json()["error"] == "RequestValidationError"
    assert api.get("/executions/a%00b").status_code == 422


def test_unknown_execution_page_is_404(api: TestClient) -> None:
    page = api.get("/executions/nope")
    assert page.status_code == 404
    assert "No execution &#39;nope&#39; in the store" in page.text


def test_pagination_and_filters(api: TestClient) -> None:
    for index in range(5):
        with execution(f"done-{index}", name="batch"):
            pass
    start_waiting(flows.confirm, "F-1", execution_id="wait-1")
    start_waiting(flows.confirm, "F-2", execution_id="wait-2")

    first = api.get("/api/executions", params={"limit": 3}).json()
    assert (first["total"], first["limit"], first["offset"], first["next_offset"]) == (7, 3, 0, 3)
    assert [row["id"] for row in first["items"]] == ["wait-2", "wait-1", "done-4"]
    last = api.get("/api/executions", params={"limit": 3, "offset": 6}).json()
    assert ([row["id"] for row in last["items"]], last["next_offset"]) == (["done-0"], None)

    waiting = api.get("/api/executions", params={"status": "waiting"}).json()
    assert {row["id"] for row in waiting["items"]} == {"wait-1", "wait-2"}
    both = api.get("/api/executions", params=[("status", "waiting"), ("status", "completed")]).json()
    assert both["total"] == 7
    batch = api.get("/api/executions", params={"flow": "batch", "limit": 2}).json()
    assert (batch["total"], batch["next_offset"]) == (5, 2)

    created = {row["id"]: datetime.fromisoformat(row["created_at"]) for row in both["items"]}
    cut = created["done-2"] + (created["done-3"] - created["done-2"]) / 2  # between two creations
    since = api.get("/api/executions", params={"since": cut.isoformat()}).json()
    assert {row["id"] for row in since["items"]} == {"done-3", "done-4", "wait-1", "wait-2"}
    until = api.get("/api/executions", params={"until": cut.isoformat()}).json()
    assert {row["id"] for row in until["items"]} == {"done-0", "done-1", "done-2"}
    naive_future = (datetime.now(tz=UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat()
    assert api.get("/api/executions", params={"since": naive_future}).json()["total"] == 0

    assert api.get("/api/executions", params={"status": "sleeping"}).status_code == 422
    assert api.get("/api/executions", params={"limit": 0}).status_code == 422
    assert api.get("/api/executions", params={"limit": 501}).status_code == 422

    listed = api.get("/", params={"status": "waiting"})
    assert listed.status_code == 200
    assert "wait-1" in listed.text
    assert "done-1" not in listed.text


def test_timeline_and_full_output_on_demand(api: TestClient) -> None:
    start_waiting(flows.refund_order, "G-1", 30, execution_id="r-3")
    detail = api.get("/api/executions/r-3").json()
    assert detail["status"] == "waiting"
    (call,) = detail["calls"]
    assert (call["key"], call["kind"], call["source"], call["sequence"]) == (
        "look_up_order:0",
        "user",
        "live",
        1,
    )
    assert call["output_preview"].endswith("…")  # 200 characters of a longer value
    assert call["output_size_bytes"] > 512  # larger than the inline limit: kept in the artifact store
    (approval,) = detail["waits"]
    assert approval["metadata"]["tool_name"] == "issue_refund"
    assert approval["schema"]["title"] == "ApprovalDecision"

    full = api.get("/api/executions/r-3/calls/1/output").json()
    assert full["value"]["lines"][-1] == "line 59"
    assert full["value"]["customer"] == "ada@example.com"

    page = api.get("/executions/r-3")
    assert page.status_code == 200
    for expected in ("look_up_order:0", "Approve", "Deny", "issue_refund", "full output", "then resume"):
        assert expected in page.text, expected


def test_answer_and_resume_in_a_background_process(api: TestClient) -> None:
    start_waiting(flows.refund_order, "H-1", 40, execution_id="r-4")
    answered = api.post(
        "/api/executions/r-4/waits/approve:issue_refund:call-1/answer",
        json={"value": {"approved": True}, "resume": True},
        headers=bearer(),
    )
    assert answered.status_code == 200, answered.text
    body = answered.json()
    assert body["resumed"]["pid"] > 0
    assert body["resume_skipped"] is None
    client = Client()
    wait_until(lambda: client.get_execution("r-4").status == "completed")
    detail = client.get_execution("r-4")
    assert [(c.key, c.source) for c in detail.calls] == [
        ("look_up_order:0", "store"),
        ("issue_refund:0", "live"),
    ]
    assert client.get_output("r-4") == "refunded $40 on H-1"
    log = Path(body["resumed"]["log_path"])
    wait_until(lambda: "execution r-4 completed" in log.read_text())  # the CLI's report, once it exits


def test_resume_refused_when_waits_pending_or_not_importable(api: TestClient) -> None:
    start_waiting(flows.refund_order, "I-1", 10, execution_id="r-5")
    # resuming with the approval still pending is allowed: it stops at the wait again
    with pytest.raises(ExecutionWaitingError), execution("script-1", name="script"):
        wait("go", question="Go?", schema=bool)
    refused = api.post("/api/executions/script-1/resume", headers=bearer())
    assert refused.status_code == 409
    assert "re-run the program that started it" in refused.json()["message"]
    answered = api.post(
        "/api/executions/script-1/waits/go/answer", json={"value": True, "resume": True}, headers=bearer()
    )
    assert answered.status_code == 200
    assert "re-run the program" in answered.json()["resume_skipped"]
    page = api.get("/executions/script-1")
    assert "re-running the program that started it" in page.text

    with execution("done-x", name="script"):
        pass
    done = api.post("/api/executions/done-x/resume", headers=bearer())
    assert (done.status_code, done.json()["error"]) == (409, "ExecutionError")
    assert "nothing to resume" in done.json()["message"]


def test_cancel(api: TestClient) -> None:
    start_waiting(flows.confirm, "J-1", execution_id="c-3")
    cancelled = api.post("/api/executions/c-3/cancel", headers=bearer())
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    resumed = api.post("/api/executions/c-3/resume", headers=bearer())
    assert (resumed.status_code, resumed.json()["error"]) == (409, "ExecutionCancelledError")


def test_pages_render_forms_from_schemas(api: TestClient) -> None:
    start_waiting(flows.typed_refund, "K-1", execution_id="t-2")
    start_waiting(flows.confirm, "K-2", execution_id="c-4")
    start_waiting(flows.refund_order, "K-3", 7, execution_id="r-6")
    waiting = api.get("/waiting")
    assert waiting.status_code == 200
    text = waiting.text
    assert 'data-kind="object"' in text  # typed_refund: one input per property
    assert re.search(r'data-field="amount"\s+data-type="integer"', text)
    assert 'data-kind="value"' in text  # confirm: one yes/no
    assert 'data-type="boolean"' in text
    assert 'data-kind="approval"' in text
    assert text.count('class="wait"') == 3
    fragment = api.get("/waiting", headers={"X-Kitaru-Fragment": "1"})
    assert "<html" not in fragment.text
    assert 'id="waiting-list"' in fragment.text


def test_openapi_schema_is_published(api: TestClient) -> None:
    schema = api.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/api/executions",
        "/api/executions/{execution_id}",
        "/api/executions/{execution_id}/calls/{sequence}/output",
        "/api/waits",
        "/api/executions/{execution_id}/waits/{wait_name}/answer",
        "/api/executions/{execution_id}/resume",
        "/api/executions/{execution_id}/cancel",
        "/api/events",
    ):
        assert path in paths, path
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_pages_run_only_their_own_scripts_and_cannot_be_framed(api: TestClient) -> None:
    for path in ("/", "/waiting", "/api/executions", "/login"):
        response = api.get(path)
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert response.headers["x-frame-options"] == "DENY"
    page = api.get("/").text
    assert '<script src="/static/dashboard.js"' in page
    assert "<script>" not in page  # no inline script: the policy would block it
    assert 'href="http' not in page
    assert 'src="http' not in page
    assert api.get("/docs").status_code == 404  # FastAPI's docs page loads scripts from a CDN


def test_an_interrupted_call_is_shown_and_answered_over_http(api: TestClient) -> None:
    flows.INTERRUPT_NEXT_WIRE[0] = True
    with pytest.raises(KeyboardInterrupt):  # the body stopped halfway: its `started` record stays
        flows.wire.run("W-1", 30, execution_id="w-1")
    start_waiting(flows.wire, "W-1", 30, execution_id="w-1")
    detail = api.get("/api/executions/w-1").json()
    assert [(call["key"], call["status"]) for call in detail["calls"]] == [("wire_money:0", "interrupted")]
    (pending,) = detail["waits"]
    assert pending["name"] == "interrupted:wire_money:0:run1"
    assert pending["metadata"]["call_key"] == "wire_money:0"
    page = api.get("/executions/w-1")
    assert "status-interrupted" in page.text
    assert "may have acted" in page.text

    path = f"/api/executions/w-1/waits/{pending['name']}/answer"
    refused = api.post(path, json={"value": {"action": "result"}}, headers=bearer())
    assert refused.status_code == 422
    assert refused.json()["error"] == "InvalidAnswerError"
    accepted = api.post(
        path, json={"value": {"action": "result", "result": "wired $30, bank ref 77"}}, headers=bearer()
    )
    assert accepted.status_code == 200, accepted.text
    assert flows.wire.run("W-1", 30, execution_id="w-1") == "WIRED $30, BANK REF 77"
    calls = api.get("/api/executions/w-1").json()["calls"]
    assert [(call["status"], call["details"].get("given_by")) for call in calls] == [
        ("superseded", None),
        ("completed", "person"),
    ]


# -- replay and diff ---------------------------------------------------------------------------------


def _completed_refund(order: str, amount: int, execution_id: str) -> str:
    start_waiting(flows.refund_order, order, amount, execution_id=execution_id)
    Client().answer(execution_id, "approve:issue_refund:call-1", {"approved": True})
    assert Client().resume(execution_id) == f"refunded ${amount} on {order}"
    return execution_id


def test_replay_with_changed_inputs_in_a_background_process_and_diff(api: TestClient) -> None:
    original = _completed_refund("R-1", 40, "rp-1")
    started = api.post(
        "/api/executions/rp-1/replay",
        json={"from_call": "issue_refund:0", "inputs": {"amount": 7}, "new_execution_id": "rp-1 again"},
        headers=bearer(),
    )
    assert started.status_code == 202, started.text
    body = started.json()
    assert (body["execution_id"], body["replay_of"], body["status"]) == ("rp-1 again", original, "running")
    assert body["pid"] > 0
    client = Client()
    wait_until(lambda: client.get_execution("rp-1 again").status == "completed")
    assert client.get_output("rp-1 again") == "refunded $7 on R-1"
    # the approval was answered before the chosen call: it keeps its answer
    assert [w.status for w in client.get_execution("rp-1 again").waits] == ["answered"]
    audit = client.get_execution("rp-1 again").audit
    assert (audit[0].action, audit[0].actor, audit[0].details["inputs"]) == ("replay", "default", ["amount"])
    diff = api.get("/api/diff", params={"a": "rp-1", "b": "rp-1 again"})
    assert diff.status_code == 200, diff.text
    assert [(row["key"], row["change"]) for row in diff.json()["rows"]] == [
        ("look_up_order:0", "same"),
        ("issue_refund:0", "changed"),
    ]
    assert diff.json()["rows"][1]["b"]["output_preview"] == '"refunded $7 on R-1"'
    assert api.get("/api/diff", params={"a": "rp-1", "b": "nope"}).status_code == 404


def test_a_prepared_replay_is_queued_and_refusals_create_nothing(api: TestClient) -> None:
    _completed_refund("R-2", 10, "rp-2")
    queued = api.post(
        "/api/executions/rp-2/replay",
        json={"from_call": 1, "overrides": {"look_up_order:0": {"order": "R-2", "lines": []}}, "run": False},
        headers=bearer(),
    )
    assert queued.status_code == 202, queued.text
    assert queued.json()["status"] == "queued"
    assert api.get(f"/api/executions/{queued.json()['execution_id']}").json()["status"] == "queued"
    count = Client().count_executions()
    unknown = api.post("/api/executions/rp-2/replay", json={"overrides": {"nope:0": 1}}, headers=bearer())
    assert unknown.status_code == 409
    assert "Cannot override 'nope:0'" in unknown.json()["message"]
    bad_answer = api.post(
        "/api/executions/rp-2/replay",
        json={"overrides": {"approve:issue_refund:call-1": {"approved": "maybe"}}},
        headers=bearer(),
    )
    assert bad_answer.status_code == 422, bad_answer.text
    assert bad_answer.json()["problems"]
    assert "no replay of 'rp-2' was created" in bad_answer.json()["message"]  # the wait is not touched
    bad_input = api.post("/api/executions/rp-2/replay", json={"inputs": {"amout": 3}}, headers=bearer())
    assert bad_input.status_code == 409
    assert "has no input 'amout'" in bad_input.json()["message"]
    no_call = api.post("/api/executions/rp-2/replay", json={"from_call": 99}, headers=bearer())
    assert no_call.status_code == 404
    missing = api.post("/api/executions/nope/replay", json={}, headers=bearer())
    assert missing.status_code == 404
    assert Client().count_executions() == count


class _ToolOutcomeCodec:
    """Stores outputs in an adapter's own format, as the adapters' codecs do."""

    def encode(self, value: str) -> tuple[str, bytes]:
        return "json:demo.ToolOutcome", value.encode()

    def decode(self, format: str, payload: bytes) -> str:
        return payload.decode()


def test_replay_refuses_an_override_an_adapter_call_cannot_take(api: TestClient) -> None:
    from kitaru_core.adapters import run_checkpoint

    with execution("adapter-1", name="desk"):
        run_checkpoint("handoff:desk", lambda: "found", kind="handoff", codec=_ToolOutcomeCodec())
        run_checkpoint("model_request", lambda: "hello", kind="model", codec=_ToolOutcomeCodec())
    count = Client().count_executions()
    refused = api.post(
        "/api/executions/adapter-1/replay",
        json={"overrides": {"handoff:desk:0": "other"}, "run": False},
        headers=bearer(),
    )
    assert refused.status_code == 409, refused.text
    assert "'json:demo.ToolOutcome'" in refused.json()["message"]
    assert "only model requests and tool calls" in refused.json()["message"]
    not_a_response = api.post(
        "/api/executions/adapter-1/replay",
        json={"overrides": {"model_request:0": {"tool_calls": "refund"}}, "run": False},
        headers=bearer(),
    )
    assert not_a_response.status_code == 409, not_a_response.text
    assert "is not a model response" in not_a_response.json()["message"]
    assert Client().count_executions() == count
