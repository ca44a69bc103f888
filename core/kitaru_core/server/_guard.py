"""What every request passes before it reaches a route: Host allow-list, path segments, body size.

Execution ids and wait names may contain any printable character, `/` and `%` included (tool-call ids
from models end up in approval wait names). The server renders each path segment percent-encoded
(`segment`), and ASGI servers hand the application a path whose `%2F` is already decoded, so that a
route could no longer tell an encoded `/` inside an id from a separator. The guard therefore rebuilds
the routed path from the raw one: each segment is decoded, except that `%` and `/` stay encoded (as
`%25` and `%2F`), so a segment stays one segment; the routes decode their id parameters once more
(`unescape_segment`). A crafted URL can therefore never address another execution's wait.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any
from urllib.parse import quote, unquote

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def segment(text: str) -> str:
    """`text` as one URL path segment: every reserved character percent-encoded, `/` included."""
    return quote(text, safe="")


def unescape_segment(text: str) -> str:
    """A path parameter as the guard left it (`%2F` and `%25` still encoded), fully decoded."""
    return unquote(text) if "%" in text else text


def routed_path(raw_path: bytes) -> str:
    """The path routes match: each raw segment decoded, except `%` and `/`, which stay encoded."""
    segments = raw_path.decode("latin-1").split("/")
    return "/".join(
        unquote(part, errors="replace").replace("%", "%25").replace("/", "%2F") if "%" in part else part
        for part in segments
    )


def host_name(header: str) -> str:
    """The host of a `Host` header, without the port (`[::1]:8765` is `::1`)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    if header.count(":") == 1:
        return header.split(":", 1)[0]
    return header


class RequestTooLargeError(HTTPException):
    """A request body larger than the server accepts (413)."""

    error = "request_too_large"


class Guard:
    """ASGI middleware: refuses foreign `Host` headers and oversized bodies; keeps encoded `/` in ids.

    Args:
        app: The application.
        allowed_hosts: Host names (without port) the server answers to; `*` allows any.
        max_request_bytes: The largest request body read; larger ones get 413 before they are read.
        response_headers: Headers added to every HTTP response (security headers).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Sequence[str],
        max_request_bytes: int,
        response_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.allowed_hosts = {host_name(host) for host in allowed_hosts}
        self.max_request_bytes = max_request_bytes
        self.response_headers = [
            (key.lower().encode("latin-1"), value.encode("latin-1"))
            for key, value in (response_headers or {}).items()
        ]

    def _host_allowed(self, scope: Scope) -> tuple[bool, str]:
        host = ""
        for key, value in scope.get("headers", []):
            if key == b"host":
                host = value.decode("latin-1")
                break
        return "*" in self.allowed_hosts or host_name(host) in self.allowed_hosts, host

    def too_large_message(self) -> str:
        """What a client that sent too much is told."""
        return (
            f"The request body is larger than this server accepts ({self.max_request_bytes} bytes). "
            "Send a smaller answer, or start the server with a larger --max-request-bytes "
            "(KITARU_SERVER_MAX_REQUEST_BYTES)."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and self.response_headers:
            send = self._with_headers(send)
        allowed, host = self._host_allowed(scope)
        if not allowed and scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if not allowed:
            shown = ", ".join(sorted(self.allowed_hosts))
            await _json(
                send,
                400,
                "host_not_allowed",
                f"This server does not answer to the Host {host!r} (it answers to: {shown}). This check stops "
                "other web sites from reading it through DNS rebinding. If you reach it by that name, start "
                "it with --allow-host NAME (or KITARU_SERVER_ALLOWED_HOSTS).",
            )
            return
        scope = dict(scope)
        raw_path = scope.get("raw_path")
        if isinstance(raw_path, bytes) and b"%" in raw_path:
            scope["path"] = routed_path(raw_path.split(b"?", 1)[0])
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_request_bytes:
                    await _json(send, 413, RequestTooLargeError.error, self.too_large_message())
                    return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_request_bytes:
                    raise RequestTooLargeError(413, self.too_large_message())
            return message

        await self.app(scope, bounded_receive, send)

    def _with_headers(self, send: Send) -> Send:
        extra = self.response_headers
        names = {key for key, _ in extra}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (key, value) for key, value in message.get("headers", []) if key.lower() not in names
                ]
                message = {**message, "headers": [*headers, *extra]}
            await send(message)

        return send_with_headers


async def _json(send: Send, status: int, error: str, message: str) -> None:
    body = json.dumps({"error": error, "message": message, "problems": []}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
