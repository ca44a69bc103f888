"""Attacker-shaped requests against the HTTP API: hostile ids and wait names, crafted cross-execution
answers, foreign `Host` headers (DNS rebinding), oversized bodies; and who did what (audit trail).

Execution ids and wait names may hold `/`, `%`, `..`, quotes, `<>` and spaces; tool-call ids come
from models. Each is one percent-encoded path segment (`/` as `%2F`) and addresses exactly itself.
"""

from __future__ import annotations

import getpass
import json
import select
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from kitaru_core import Client, approval_wait_name, execution, request_approval
from kitaru_core.errors import ExecutionWaitingError
from tests.server import flows
from tests.server.conftest import TOKEN, LiveServer, bearer, kitaru_cli

HOSTILE_IDS = [
    "a/b",
    "a%2Fb",
    "x/../y",
    "../../etc/passwd",
    "q\"<b>'&amp;",
    "sp ace/100%",
    "…ünïcode/✓",
]
ERROR_SHAPE = {"error", "message", "problems"}


def segment(text: str) -> str:
    return quote(text, safe="")


def waiting_approval(execution_id: str, tool: str, call_id: str, arguments: dict[str, Any]) -> str:
    """An execution stopped at the approval of one tool call; returns the wait's name."""
    with pytest.raises(ExecutionWaitingError), execution(execution_id, name="desk"):
        request_approval(tool, arguments, call_id=call_id)
    return approval_wait_name(tool, call_id)


def answer_url(execution_id: str, wait_name: str) -> str:
    return f"/api/executions/{segment(execution_id)}/waits/{segment(wait_name)}/answer"


def statuses(execution_id: str) -> dict[str, str]:
    return {wait.name: wait.status for wait in Client().get_execution(execution_id).waits}


@pytest.mark.parametrize("execution_id", HOSTILE_IDS)
def test_hostile_execution_ids_work_in_the_api_and_the_pages(api: TestClient, execution_id: str) -> None:
    with pytest.raises(ExecutionWaitingError):
        flows.confirm.run("B-1", execution_id=execution_id)
    detail = api.get(f"/api/executions/{segment(execution_id)}")
    assert detail.status_code == 200, detail.text
    assert detail.json()["id"] == execution_id

    page = api.get(f"/executions/{segment(execution_id)}")
    assert page.status_code == 200
    assert f'data-action="{answer_url(execution_id, "confirm")}"' in page.text.replace("&amp;", "&").replace(
        "&#34;", '"'
    ).replace("&#39;", "'")
    assert "<b>" not in page.text  # escaped, never markup

    answered = api.post(answer_url(execution_id, "confirm"), json={"value": True}, headers=bearer())
    assert answered.status_code == 200, answered.text
    assert answered.json()["wait"]["execution_id"] == execution_id
    assert statuses(execution_id) == {"confirm": "answered"}


def test_hostile_tool_call_ids_address_exactly_their_own_wait(api: TestClient) -> None:
    wire = waiting_approval("exec-b", "wire_money", flows.HOSTILE_WIRE_ID, {"amount": 5000})
    lookup = waiting_approval("exec-a", "lookup", flows.HOSTILE_LOOKUP_ID, {"order": "1"})
    approve = {"value": {"approved": True}}

    # another execution's wait, named in this one: refused, nothing answered
    crossed = api.post(answer_url("exec-a", wire), json=approve, headers=bearer())
    assert crossed.status_code == 404
    assert set(crossed.json()) >= ERROR_SHAPE
    assert crossed.json()["error"] == "WaitNotFoundError"

    # the path the unencoded form used to post (its dot segments resolved, as a browser does)
    resolved = f"/api/executions/exec-b/waits/{segment(wire)}/answer"
    digest_of_lookup = Client().pending_waits("exec-a")[0].question_digest
    shown_lookup = api.post(resolved, json={**approve, "question_digest": digest_of_lookup}, headers=bearer())
    assert shown_lookup.status_code == 422
    assert shown_lookup.json()["error"] == "InvalidAnswerError"
    assert "question_digest" in shown_lookup.json()["problems"][0]

    # the unencoded path itself, sent as-is: the segments do not form any route
    unencoded = f"/api/executions/exec-a/waits/{lookup}/answer"
    assert api.post(unencoded, json=approve, headers=bearer()).status_code in {404, 405}
    assert statuses("exec-b") == {wire: "pending"}
    assert statuses("exec-a") == {lookup: "pending"}

    # encoded, with the digest that was shown: exactly the call shown is approved
    right = api.post(
        answer_url("exec-a", lookup), json={**approve, "question_digest": digest_of_lookup}, headers=bearer()
    )
    assert right.status_code == 200, right.text
    assert right.json()["wait"]["name"] == lookup
    assert statuses("exec-a") == {lookup: "answered"}
    assert statuses("exec-b") == {wire: "pending"}

    # the pages render the hostile names as text and each form posts to its own wait
    page = api.get("/waiting").text
    assert "<script>window.hacked" not in page
    assert "<img src=x" not in page
    assert f'data-action="{answer_url("exec-b", wire)}"' in page


def test_invalid_ids_in_the_path_are_refused_with_the_error_shape(api: TestClient) -> None:
    for bad in ["tab\there", " leading", "x" * 201, "zero\u200bwidth"]:
        response = api.get(f"/api/executions/{segment(bad)}")
        assert response.status_code == 422, (bad, response.text)
        assert set(response.json()) >= ERROR_SHAPE


def test_a_foreign_host_is_refused_for_reads_and_writes(api: TestClient) -> None:
    waiting_approval("h-1", "wire_money", "c1", {"amount": 1})
    for method, path in [("get", "/api/executions"), ("get", "/"), ("get", "/api/events"), ("post", "/api/executions/h-1/cancel")]:  # fmt: skip
        response = api.request(method, path, headers={**bearer(), "Host": "attacker.example"})
        assert response.status_code == 400, (path, response.text)
        body = response.json()
        assert body["error"] == "host_not_allowed"
        assert "'attacker.example'" in body["message"]
        assert "--allow-host" in body["message"]
        assert "DNS rebinding" in body["message"]
    assert api.get("/api/executions", headers={"Host": "localhost:8765"}).status_code == 200
    assert Client().get_execution("h-1").status == "waiting"


def test_an_answer_over_the_limit_gets_413_and_the_wait_stays_pending(api: TestClient) -> None:
    with pytest.raises(ExecutionWaitingError):
        flows.typed_refund.run("T-1", execution_id="big-1")
    url = answer_url("big-1", "refund")
    big = {"value": {"amount": 5, "reason": "x" * (2 * 1024 * 1024)}}
    response = api.post(url, json=big, headers=bearer())
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large"
    assert "1048576 bytes" in response.json()["message"]

    # without a Content-Length the body is counted as it arrives
    def chunks() -> Any:
        payload = json.dumps(big).encode()
        for start in range(0, len(payload), 65536):
            yield payload[start : start + 65536]

    streamed = api.post(url, content=chunks(), headers={**bearer(), "Content-Type": "application/json"})
    assert streamed.status_code == 413, streamed.text
    assert streamed.json()["error"] == "request_too_large"
    assert statuses("big-1") == {"refund": "pending"}


def test_pages_show_a_preview_of_a_large_answer(api: TestClient) -> None:
    with pytest.raises(ExecutionWaitingError):
        flows.typed_refund.run("T-2", execution_id="large-1")
    reason = "y" * 900_000
    answered = api.post(
        answer_url("large-1", "refund"), json={"value": {"amount": 5, "reason": reason}}, headers=bearer()
    )
    assert answered.status_code == 200
    page = api.get("/executions/large-1")
    assert page.status_code == 200
    assert len(page.text) < 60_000
    assert "characters; the API has all" in page.text
    assert 'data-answer-characters="' in page.text  # the replay editor keeps it as it is
    full = api.get("/api/executions/large-1").json()
    assert full["waits"][0]["answer"]["reason"] == reason


def test_named_tokens_and_the_audit_trail(
    sqlite_store: tuple[str, str], tmp_path: Path, api: TestClient
) -> None:
    created = kitaru_cli(sqlite_store, "tokens", "create", "--name", "ana", "--json")
    assert created.returncode == 0, created.stderr
    secret = json.loads(created.stdout)["token"]
    assert kitaru_cli(sqlite_store, "tokens", "create", "--name", "ana").returncode == 1  # names are unique
    listed = kitaru_cli(sqlite_store, "tokens", "list", "--json")
    assert [entry["name"] for entry in json.loads(listed.stdout)] == ["ana"]
    assert secret not in listed.stdout
    assert "ana" in kitaru_cli(sqlite_store, "tokens", "list").stdout

    wire = waiting_approval("audit-1", "wire_money", "c1", {"amount": 9})
    lookup_wait = waiting_approval("audit-2", "lookup", "c2", {"order": "2"})
    answered = api.post(
        answer_url("audit-1", wire), json={"value": {"approved": True}}, headers=bearer(secret)
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["wait"]["answered_by"] == "ana (token)"
    cancelled = api.post("/api/executions/audit-1/cancel", headers=bearer())  # the server's own token
    assert cancelled.status_code == 200

    # the CLI records the operating-system user
    by_cli = kitaru_cli(
        sqlite_store, "executions", "answer", "audit-2", lookup_wait, "--deny", "--message", "no"
    )
    assert by_cli.returncode == 0, by_cli.stderr
    user = getpass.getuser()

    trail = api.get("/api/executions/audit-1").json()["audit"]
    assert [(e["action"], e["actor"], e["actor_kind"]) for e in trail] == [
        ("answer", "ana", "token"),
        ("cancel", "default", "token"),
    ]
    assert trail[0]["wait_name"] == wire
    shown = json.loads(kitaru_cli(sqlite_store, "executions", "show", "audit-2", "--json").stdout)
    assert [(e["action"], e["actor"], e["actor_kind"]) for e in shown["audit"]] == [
        ("answer", user, "os user")
    ]
    assert shown["waits"][0]["answered_by"] == f"{user} (os user)"
    table = kitaru_cli(sqlite_store, "executions", "show", "audit-1").stdout
    assert "answer approve:wire_money:c1 by ana (token)" in table
    page = api.get("/executions/audit-1").text
    assert "ana" in page
    assert 'data-action="answer"' in page
    assert 'data-action="cancel"' in page

    # a revoked token is refused from its next request on
    assert kitaru_cli(sqlite_store, "tokens", "revoke", "ana").returncode == 0
    refused = api.post("/api/executions/audit-2/cancel", headers=bearer(secret))
    assert refused.status_code == 403
    assert kitaru_cli(sqlite_store, "tokens", "revoke", "ana").returncode == 1


def test_the_live_server_refuses_foreign_hosts_raw_dot_segments_and_huge_bodies(
    live_server: LiveServer,
) -> None:
    wire = waiting_approval("exec-b", "wire_money", flows.HOSTILE_WIRE_ID, {"amount": 5000})
    lookup = waiting_approval("exec-a", "lookup", flows.HOSTILE_LOOKUP_ID, {"order": "1"})
    host, port = live_server.url.removeprefix("http://").split(":")

    with live_server.client() as http:
        foreign = http.get("/api/executions", headers={"Host": "attacker.example"})
        assert foreign.status_code == 400
        assert foreign.json()["error"] == "host_not_allowed"
        assert http.get("/api/executions", headers={"Host": f"localhost:{port}"}).status_code == 200

    def raw(request: bytes, *, body: bool = True, chunked: bool = False) -> tuple[bytes, int]:
        """Send `request` as-is (no client normalizes its path); then (`body`) a 100 MB body for as
        long as the server reads it. Returns the response and how many body bytes were sent first."""
        sent = 0
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(request)
            chunk = b"0" * 65536
            framed = b"10000\r\n" + chunk + b"\r\n" if chunked else chunk
            try:
                while body and sent < 100_000_000:
                    readable, _, _ = select.select([connection], [], [], 0)
                    if readable:
                        break
                    connection.sendall(framed)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            response = b""
            try:
                while part := connection.recv(65536):
                    response += part
                    head, _, rest = response.partition(b"\r\n\r\n")
                    length = [
                        line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")
                    ]
                    if length and len(rest) >= int(length[0].split(b":")[1]):
                        break
            except ConnectionResetError:
                pass
        return response, sent

    # the dot segments of the tool-call id, unencoded and unresolved: no route, nothing answered
    path = f"/api/executions/exec-a/waits/{quote(lookup, safe='/:')}/answer".encode()
    body = json.dumps({"value": {"approved": True}}).encode()
    response, _ = raw(
        b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + TOKEN.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n" + body
    )  # fmt: skip
    assert response.split(b"\r\n", 1)[0] in {b"HTTP/1.1 404 Not Found", b"HTTP/1.1 405 Method Not Allowed"}
    assert statuses("exec-b") == {wire: "pending"}
    assert statuses("exec-a") == {lookup: "pending"}

    # 100 MB announced: refused before the body is read
    answer_path = answer_url("exec-a", lookup).encode()
    head = (
        b"POST " + answer_path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + TOKEN.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
    )  # fmt: skip
    response, sent = raw(head, body=False)  # the answer comes without a byte of the body
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b"1048576 bytes" in response
    print(f"100 MB announced: 413 after {sent} body bytes were sent")
    # 100 MB streamed without a length: the server stops after the limit
    chunked_head = head.replace(b"Content-Length: 100000000", b"Transfer-Encoding: chunked")
    response, sent = raw(chunked_head, chunked=True)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert sent < 32 * 1024 * 1024
    print(f"100 MB streamed: 413 after {sent} body bytes were sent")
    assert statuses("exec-a") == {lookup: "pending"}
