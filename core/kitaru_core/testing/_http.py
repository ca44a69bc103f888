# pyright: strict, reportPrivateUsage=false
"""A scripted, OpenAI-compatible model server (chat completions and Responses API) for tests and demos.

The server answers `POST /v1/chat/completions` and `POST /v1/responses` from a `Script`: an ordered
list of `Rule`s (`_script`), each choosing a reply from the conversation the client sent
(`_matching`). Every model request is appended to an optional request log with `O_APPEND` and
`fsync`, so a test can count the model requests that really reached the server even after the
client or the server was killed.

The module uses the standard library only. `http.server` is imported when a server starts, so
importing `kitaru_core.testing` stays cheap.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, cast

from kitaru_core.testing._matching import (
    CREATED_TIMESTAMP,
    ReplyKind,
    _Conversation,
    _no_match_message,
    _render_reply,
    _Reply,
    _ResponsesReply,
    _select_rule,
    _structured_output_problem,
)
from kitaru_core.testing._script import DEFAULT_MODEL_NAME, JsonObject, Rule, Script

if TYPE_CHECKING:
    import socket
    from http.server import ThreadingHTTPServer

_CHAT_COMPLETIONS_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
_RESPONSES_PATHS = frozenset({"/v1/responses", "/responses"})
_MODELS_PATHS = frozenset({"/v1/models", "/models"})
_HEALTH_PATHS = frozenset({"/health", "/v1/health"})

_MAXIMUM_BODY_BYTES = 64 * 1024 * 1024


class _RecordRequest(Protocol):
    def __call__(
        self,
        *,
        path: str,
        body: dict[str, Any] | None,
        conversation: _Conversation | None,
        matched_rule: int | None,
        reply_kind: ReplyKind,
        tool_call_names: Sequence[str],
        status: int,
    ) -> None: ...


def read_request_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read the request log written by a `ScriptedModelServer`, one record per request.

    A last line without its newline (a write cut short by a crash) is ignored.

    Args:
        path: The request log file.

    Returns:
        The records in file order; an empty list if the file does not exist. Each record has
        `sequence`, `pid`, `unix_time`, `path`, `model`, `last_user`, `turn`, `matched_rule`,
        `streamed`, `reply_kind` (`"text"`, `"tool_calls"`, `"no_match"` or
        `"invalid_request"`), `tool_calls` (the names called) and `status`.

    Raises:
        ValueError: If a complete line is not a JSON object.
    """
    try:
        content = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    lines = content.split(b"\n")
    complete_lines = lines[:-1]
    trailing = lines[-1]
    records: list[dict[str, Any]] = []
    for line_number, line in enumerate(complete_lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"Line {line_number} of the request log {str(path)!r} is not JSON.") from error
        if not isinstance(record, dict):
            raise ValueError(f"Line {line_number} of the request log {str(path)!r} is not a JSON object.")
        records.append(cast(dict[str, Any], record))
    if trailing.strip():
        try:
            record = json.loads(trailing)
        except json.JSONDecodeError:
            return records
        if isinstance(record, dict):
            records.append(cast(dict[str, Any], record))
    return records


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(
            f"ScriptedModelServer only binds to a loopback address (127.0.0.1, ::1 or localhost), "
            f"not {host!r}: it is a test server without authentication."
        )


class ScriptedModelServer:
    """An OpenAI-compatible model server (chat completions and Responses API) that replies from a `Script`.

    Routes: `POST /v1/chat/completions` (also `/chat/completions`), `POST /v1/responses` (also
    `/responses`), `GET /v1/models` and `GET /health`. Streaming requests get Server-Sent Events in
    chunked transfer encoding: `chat.completion.chunk`s, or the Responses API's event sequence
    (`response.created`, `response.in_progress`, `response.output_item.added`,
    `response.content_part.added`, `response.output_text.delta`..., `response.function_call_arguments.delta`...,
    `response.output_item.done`, `response.completed`). A Responses API request is matched as the
    equivalent chat messages (see the module docstring). When no rule matches, the server answers
    HTTP 500 with an OpenAI-style error that quotes the last user message; so it does when a request
    asks for JSON-schema structured output and the matching rule's text is not JSON. Both carry
    `x-should-retry: false`, so neither the client nor a model-retry policy sends them again. A rule with
    `error_status` answers that HTTP error (with its `error_headers`, e.g. `Retry-After`) the first
    `error_times` times it matches, or always. Use the server as a context manager, or call `start`
    and `stop`.

    Clients should not retry, so that the request log counts each model call once: for the
    `openai` client, pass `max_retries=0`.

    Args:
        script: The rules that choose each reply.
        host: The loopback address to bind to.
        port: The port to bind to; 0 picks a free port.
        request_log_path: A file to append one JSON line to for every model request (either API),
            before the reply is sent. Read it with `read_request_log`.

    Raises:
        ValueError: If `host` is not a loopback address.

    Example:
        ```python
        script = Script([Rule(text="Hello!")])
        with ScriptedModelServer(script) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        ```
    """

    def __init__(
        self,
        script: Script,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        request_log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        _check_loopback(host)
        self._script = script
        self._host = host
        self._requested_port = port
        self._request_log_path = Path(request_log_path) if request_log_path is not None else None
        self._lock = threading.Lock()
        self._sequence = 0
        self._request_records: list[dict[str, Any]] = []
        self._request_bodies: list[dict[str, Any]] = []
        self._http_server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._open_connections: set[socket.socket] = set()
        self._log_directory_synced = False
        self._errors_sent: dict[int, int] = {}

    @property
    def script(self) -> Script:
        """The script that chooses the replies."""
        return self._script

    @property
    def port(self) -> int:
        """The port the server listens on.

        Raises:
            RuntimeError: If the server is not running.
        """
        return int(self._running_server().server_address[1])

    @property
    def host(self) -> str:
        """The address the server listens on.

        Raises:
            RuntimeError: If the server is not running.
        """
        return str(self._running_server().server_address[0])

    @property
    def base_url(self) -> str:
        """The OpenAI base URL of the server, such as `http://127.0.0.1:PORT/v1`.

        Raises:
            RuntimeError: If the server is not running.
        """
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"

    @property
    def request_log_path(self) -> Path | None:
        """The request log file, if one was given."""
        return self._request_log_path

    @property
    def request_count(self) -> int:
        """How many model requests (chat completions and Responses API) this server received, failed ones too."""
        with self._lock:
            return len(self._request_records)

    @property
    def request_records(self) -> list[dict[str, Any]]:
        """A copy of the records of the model requests received, as in the request log."""
        with self._lock:
            return [dict(record) for record in self._request_records]

    @property
    def request_bodies(self) -> list[dict[str, Any]]:
        """The parsed JSON bodies of the valid model requests received (either API), in order."""
        with self._lock:
            return list(self._request_bodies)

    def start(self) -> Self:
        """Bind the port and serve requests on a daemon thread.

        Returns:
            The server itself, so that `server = ScriptedModelServer(script).start()` works.

        Raises:
            RuntimeError: If the server was already started.
            OSError: If the address cannot be bound.
        """
        if self._http_server is not None:
            raise RuntimeError("This ScriptedModelServer is already running.")
        http_server = _create_http_server(
            self._script,
            self._host,
            self._requested_port,
            record_request=self._record_request,
            track_connection=self._track_connection,
            answer_error=self._answer_error,
        )
        self._http_server = http_server
        self._thread = threading.Thread(
            target=http_server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"ScriptedModelServer:{http_server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and release the port. Does nothing if not running."""
        http_server = self._http_server
        if http_server is None:
            return
        http_server.shutdown()
        http_server.server_close()
        with self._lock:
            connections = list(self._open_connections)
        for connection in connections:
            _close_quietly(connection)
        if self._thread is not None:
            self._thread.join()
        self._http_server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exception_type: type[BaseException] | None,
        exception: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._http_server is not None else "not running"
        return f"ScriptedModelServer({len(self._script.rules)} rules, {where})"

    def _running_server(self) -> ThreadingHTTPServer:
        if self._http_server is None:
            raise RuntimeError("The ScriptedModelServer is not running: call start() or use a with block.")
        return self._http_server

    def _track_connection(self, connection: socket.socket, opened: bool) -> None:
        with self._lock:
            if opened:
                self._open_connections.add(connection)
            else:
                self._open_connections.discard(connection)

    def _record_request(
        self,
        *,
        path: str,
        body: dict[str, Any] | None,
        conversation: _Conversation | None,
        matched_rule: int | None,
        reply_kind: ReplyKind,
        tool_call_names: Sequence[str],
        status: int,
    ) -> None:
        """Append a request record to memory and to the request log, durably, before replying."""
        streamed = bool(body.get("stream")) if body is not None else False
        model = body.get("model") if body is not None else None
        with self._lock:
            self._sequence += 1
            record: dict[str, Any] = {
                "sequence": self._sequence,
                "pid": os.getpid(),
                "unix_time": time.time(),
                "path": path,
                "model": model if isinstance(model, str) else None,
                "last_user": conversation.last_user_text if conversation is not None else None,
                "turn": conversation.assistant_message_count if conversation is not None else None,
                "matched_rule": matched_rule,
                "streamed": streamed,
                "reply_kind": reply_kind,
                "tool_calls": list(tool_call_names),
                "status": status,
            }
            self._request_records.append(record)
            if body is not None:
                self._request_bodies.append(body)
            if self._request_log_path is not None:
                self._append_log_line(self._request_log_path, json.dumps(record, ensure_ascii=False) + "\n")

    def _answer_error(self, rule_index: int, rule: Rule) -> bool:
        """Whether this request matched by `rule` gets the rule's scripted error (counted per rule)."""
        if rule.error_status is None:
            return False
        with self._lock:
            sent = self._errors_sent.get(rule_index, 0)
            if rule.error_times is not None and sent >= rule.error_times:
                return False
            self._errors_sent[rule_index] = sent + 1
            return True

    def _append_log_line(self, path: Path, line: str) -> None:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line.encode("utf-8"))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        if not self._log_directory_synced:
            self._log_directory_synced = True
            _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a newly created file's directory entry durable; best effort where unsupported."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _close_quietly(connection: socket.socket) -> None:
    import socket as socket_module

    with contextlib.suppress(OSError):
        connection.shutdown(socket_module.SHUT_RDWR)


def _create_http_server(
    script: Script,
    host: str,
    port: int,
    *,
    record_request: _RecordRequest,
    track_connection: Callable[[socket.socket, bool], None],
    answer_error: Callable[[int, Rule], bool] = lambda _index, _rule: False,
) -> ThreadingHTTPServer:
    """Build and bind the HTTP server. `http.server` is imported here to keep imports cheap."""
    import socket as socket_module
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class _Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

        def process_request(self, request: Any, client_address: Any) -> None:
            track_connection(cast("socket.socket", request), True)
            super().process_request(request, client_address)

        def shutdown_request(self, request: Any) -> None:
            track_connection(cast("socket.socket", request), False)
            super().shutdown_request(request)

    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "KitaruScriptedModelServer/1"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the default per-request logging to stderr."""

        def do_GET(self) -> None:
            """Serve the model list and the health check."""
            path = self._route_path()
            if path in _HEALTH_PATHS:
                self._send_json(200, {"status": "ok"})
            elif path in _MODELS_PATHS:
                self._send_json(
                    200,
                    {"object": "list", "data": [_model_entry(name) for name in script.model_names]},
                )
            elif path.startswith(("/v1/models/", "/models/")):
                self._send_json(200, _model_entry(path.rsplit("/", 1)[-1]))
            else:
                self._send_error(404, f"No route for GET {path}.", "not_found")

        def do_POST(self) -> None:
            """Serve chat completions and Responses API requests."""
            path = self._route_path()
            responses_api = path in _RESPONSES_PATHS
            if path not in _CHAT_COMPLETIONS_PATHS and not responses_api:
                self._read_body()
                self._send_error(404, f"No route for POST {path}.", "not_found")
                return
            api_name = "Responses API" if responses_api else "chat-completions"
            body: dict[str, Any] | None = None
            conversation: _Conversation | None = None
            try:
                parsed = json.loads(self._read_body() or b"null")
                if not isinstance(parsed, dict):
                    raise ValueError("The request body must be a JSON object.")
                body = cast(dict[str, Any], parsed)
                conversation = (
                    _Conversation.from_responses_request(body)
                    if responses_api
                    else _Conversation.from_request(body)
                )
            except ValueError as error:
                record_request(
                    path=path,
                    body=body,
                    conversation=None,
                    matched_rule=None,
                    reply_kind="invalid_request",
                    tool_call_names=(),
                    status=400,
                )
                self.close_connection = True
                self._send_error(400, f"Invalid {api_name} request: {error}", "invalid_request_error")
                return
            selection = _select_rule(script, conversation)
            if selection is None:
                record_request(
                    path=path,
                    body=body,
                    conversation=conversation,
                    matched_rule=None,
                    reply_kind="no_match",
                    tool_call_names=(),
                    status=500,
                )
                self._send_error(500, _no_match_message(conversation, len(script.rules)), "no_matching_rule", final=True)
                return
            rule_index, rule = selection
            if rule.error_status is not None and answer_error(rule_index, rule):
                record_request(
                    path=path,
                    body=body,
                    conversation=conversation,
                    matched_rule=rule_index,
                    reply_kind="scripted_error",
                    tool_call_names=(),
                    status=rule.error_status,
                )
                self._send_scripted_error(rule.error_status, rule.error_headers)
                return
            model = body.get("model")
            reply = _render_reply(rule, conversation, model if isinstance(model, str) else DEFAULT_MODEL_NAME)
            problem = _structured_output_problem(body, reply)
            if problem is not None:
                record_request(
                    path=path,
                    body=body,
                    conversation=conversation,
                    matched_rule=rule_index,
                    reply_kind="invalid_request",
                    tool_call_names=(),
                    status=500,
                )
                self._send_error(500, problem, "scripted_reply_not_json", final=True)
                return
            record_request(
                path=path,
                body=body,
                conversation=conversation,
                matched_rule=rule_index,
                reply_kind=reply.kind,
                tool_call_names=[call.name for call in reply.tool_calls],
                status=200,
            )
            if responses_api:
                responses_reply = _ResponsesReply(reply, body)
                if body.get("stream"):
                    self._send_events(responses_reply.events())
                else:
                    self._send_json(200, responses_reply.response())
            elif body.get("stream"):
                stream_options = body.get("stream_options")
                include_usage = isinstance(stream_options, dict) and bool(
                    cast(JsonObject, stream_options).get("include_usage")
                )
                self._send_stream(reply, include_usage=include_usage)
            else:
                self._send_json(200, reply.completion())

        def _route_path(self) -> str:
            path = self.path.split("?", 1)[0]
            return path.rstrip("/") or "/"

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                return self._read_chunked_body()
            length = int(self.headers.get("Content-Length") or 0)
            if length > _MAXIMUM_BODY_BYTES:
                raise ValueError("The request body is too large.")
            return self.rfile.read(length) if length > 0 else b""

        def _read_chunked_body(self) -> bytes:
            parts: list[bytes] = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()

        def _send_json(self, status: int, payload: JsonObject, headers: Mapping[str, str] | None = None) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def _send_scripted_error(self, status: int, headers: Mapping[str, str]) -> None:
            default_kind = "server_error" if status >= 500 else "invalid_request_error"
            code, kind = _SCRIPTED_ERRORS.get(status, (default_kind, default_kind))
            message = f"Scripted error: HTTP {status}."
            error = {"message": message, "type": kind, "param": None, "code": code}
            self._send_json(status, {"error": error}, headers)

        def _send_error(self, status: int, message: str, code: str, *, final: bool = False) -> None:
            # `final`: a mistake in the script; `x-should-retry: false` (OpenAI's header) tells the
            # client and a model-retry policy that sending the request again cannot help.
            self._send_json(
                status,
                {
                    "error": {
                        "message": message,
                        "type": "invalid_request_error" if status < 500 else "server_error",
                        "param": None,
                        "code": code,
                    }
                },
                {"x-should-retry": "false"} if final else None,
            )

        def _send_stream(self, reply: _Reply, *, include_usage: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for chunk in reply.chunks(include_usage=include_usage):
                    self._write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
                self._write_chunk(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _send_events(self, events: Iterator[JsonObject]) -> None:
            """Send Responses API events as Server-Sent Events, each with its `event:` name."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for data in events:
                    self._write_chunk(f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _write_chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n")
            self.wfile.flush()

    family = socket_module.AF_INET6 if ":" in host else socket_module.AF_INET
    _Server.address_family = family
    return _Server((host, port), _Handler)


_SCRIPTED_ERRORS: dict[int, tuple[str, str]] = {
    401: ("invalid_api_key", "invalid_request_error"),
    403: ("permission_denied", "invalid_request_error"),
    408: ("timeout", "invalid_request_error"),
    429: ("rate_limit_exceeded", "requests"),
    500: ("server_error", "server_error"),
    503: ("overloaded", "server_error"),
}
"""The OpenAI-style `code` and `type` of a scripted error by HTTP status."""


def _model_entry(name: str) -> JsonObject:
    return {"id": name, "object": "model", "created": CREATED_TIMESTAMP, "owned_by": "kitaru-scripted"}
