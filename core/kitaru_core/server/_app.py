"""The FastAPI application: the JSON API under `/api`, the event stream, and the dashboard pages."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi import Path as PathParameter
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import kitaru_core
from kitaru_core import Client, ExecutionDetail, ExecutionSummary, WaitView
from kitaru_core._ids import MAX_ID_CHARACTERS, check_execution_id, check_wait_name
from kitaru_core._tokens import secret_digest
from kitaru_core.errors import (
    ArtifactNotFoundError,
    CallNotFoundError,
    ConfigurationError,
    ExecutionCancelledError,
    ExecutionError,
    ExecutionLockedError,
    ExecutionNotFoundError,
    InvalidAnswerError,
    InvalidIdError,
    KitaruError,
    SerializationError,
    StoreError,
    WaitAlreadyAnsweredError,
    WaitNotFoundError,
)
from kitaru_core.server._guard import Guard, RequestTooLargeError, unescape_segment
from kitaru_core.server._handoff import WorkerView, hand_to_live_worker, worker_views
from kitaru_core.server._settings import ServerSettings

COOKIE_NAME = "kitaru_token"
DASHBOARD_HEADER = "X-Kitaru-Dashboard"
HEARTBEAT_S = 15.0
STATIC_DIRECTORY = Path(__file__).with_name("static")
# Only our own scripts and styles run on the dashboard's origin, and no other site may frame it
# (an "Approve" button must not be clickable through someone else's page).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

Status = Literal["queued", "running", "waiting", "completed", "failed", "cancelled"]
# Ids and names are what the store accepts: no control characters, at most the column's length.
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
MAX_WAIT_NAME_CHARACTERS = MAX_ID_CHARACTERS
# In a path, every character of an id may be percent-encoded as one segment (`/` as `%2F`): the
# guard leaves `%2F` and `%25` encoded for routing, so a parameter is up to three times longer
# until `valid_id` decodes it.
ExecutionId = Annotated[
    str,
    PathParameter(
        description="The execution id, percent-encoded as one path segment (`/` as `%2F`).",
        max_length=3 * MAX_ID_CHARACTERS,
        pattern=PRINTABLE,
    ),
]
WaitName = Annotated[
    str,
    PathParameter(
        description="The wait's name, percent-encoded as one path segment (`/` as `%2F`).",
        max_length=3 * MAX_WAIT_NAME_CHARACTERS,
        pattern=PRINTABLE,
    ),
]


def valid_id(raw: str, what: str) -> str:
    """A path parameter, decoded and checked against the id grammar of `kitaru_core._ids`.

    The guard left `%2F` and `%25` encoded so that the parameter stayed one path segment.

    Args:
        raw: The parameter as routed.
        what: `execution_id` or `wait_name`.

    Returns:
        The execution id or wait name.

    Raises:
        ApiError: 422 when it is not a valid execution id or wait name.
    """
    value = unescape_segment(raw)
    try:
        return check_wait_name(value) if what == "wait_name" else check_execution_id(value)
    except InvalidIdError as error:
        raise ApiError(
            422, "InvalidIdError", f"The {what} in the path is not valid.", [f"path.{what}: {error}"]
        ) from error


class ErrorBody(BaseModel):
    """The body of every error the API reports.

    A request that does not match the API's own schema (422 `RequestValidationError`) also carries
    FastAPI's usual `detail` list.

    Attributes:
        error: The error's type, e.g. `InvalidAnswerError`, `ExecutionNotFoundError`, `missing_token`.
        message: What went wrong and what to do about it.
        problems: For a refused answer or request: one line per violation.
    """

    error: str
    message: str
    problems: list[str] = Field(default_factory=list[str])


class ExecutionPage(BaseModel):
    """One page of executions, newest first.

    Attributes:
        items: The executions on this page.
        total: How many executions match the filters.
        limit: Page size asked for.
        offset: Executions skipped.
        next_offset: `offset` of the next page, or `null` on the last one.
    """

    items: list[ExecutionSummary]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class AnswerRequest(BaseModel):
    """An answer to a wait.

    Attributes:
        value: The answer; it must satisfy the wait's JSON schema (tool approvals:
            `{"approved": true}` or `{"approved": false, "message": "why"}`).
        resume: After answering, resume the execution in a background process when it has no other
            pending wait and its entry point is an importable `@flow`.
        question_digest: The wait's `question_digest` as shown to whoever answers (the dashboard
            always sends it); the answer is refused (422) if the addressed wait is another one.
    """

    value: Any = Field(description="The answer; validated against the wait's JSON schema.")
    resume: bool = Field(default=False, description="Resume the execution in the background afterwards.")
    question_digest: str | None = Field(
        default=None,
        max_length=64,
        description="The `question_digest` of the wait that was shown; refused (422) if it differs.",
    )


class ResumeStarted(BaseModel):
    """A resume the server started: handed to the workers, or a background process of its own.

    Attributes:
        execution_id: The execution.
        pid: The background process's id; `null` when the execution was handed to a worker.
        log_path: Where the background process's output goes; `null` when handed to a worker.
        queued_for_worker: A live worker serves the execution's queue, so the execution was made
            `queued` for it (the server runs no flow code then).
    """

    execution_id: str
    pid: int | None = None
    log_path: str | None = None
    queued_for_worker: bool = False


class AnswerResult(BaseModel):
    """The answered wait, and what happened to the resume that was asked for.

    Attributes:
        wait: The wait, now answered.
        resumed: The background resume, if one was asked for and started.
        resume_skipped: Why no resume was started although one was asked for.
    """

    wait: WaitView
    resumed: ResumeStarted | None = None
    resume_skipped: str | None = None


class CallOutput(BaseModel):
    """The full stored output of one checkpoint call.

    Attributes:
        execution_id: The execution.
        sequence: The call's sequence number in the timeline.
        value: The output as JSON data.
    """

    execution_id: str
    sequence: int
    value: Any


class ApiError(Exception):
    """An error the API answers with an `ErrorBody`."""

    def __init__(self, status_code: int, error: str, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = ErrorBody(error=error, message=message, problems=problems or [])


_STATUS_OF_ERRORS: list[tuple[type[KitaruError], int]] = [
    (ExecutionNotFoundError, 404),
    (CallNotFoundError, 404),
    (ArtifactNotFoundError, 404),
    (WaitNotFoundError, 404),
    (InvalidAnswerError, 422),
    (InvalidIdError, 422),
    (WaitAlreadyAnsweredError, 409),
    (ExecutionLockedError, 409),
    (ExecutionCancelledError, 409),
    (ExecutionError, 409),
    (ConfigurationError, 409),
    (SerializationError, 409),
    (StoreError, 503),
]


def status_of(error: KitaruError) -> int:
    """The HTTP status that reports a kitaru error."""
    for kind, status in _STATUS_OF_ERRORS:
        if isinstance(error, kind):
            return status
    return 400


def _utc(value: datetime | None) -> datetime | None:
    """Times without a zone are UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


_bearer = HTTPBearer(auto_error=False, description="The server's token (`kitaru-adapters serve` prints it).")


class Auth:
    """Checks the bearer token (or the dashboard's cookie) of a request, and names it.

    Args:
        settings: The server's own token and its name.
        client: Reads the named tokens (`kitaru-adapters tokens create`) from the store.
    """

    def __init__(self, settings: ServerSettings, client: Client) -> None:
        self.settings = settings
        self.client = client

    def token_of(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None
    ) -> tuple[str | None, bool]:
        """`(token, came_from_cookie)` of a request; `(None, False)` when it carries none."""
        if credentials is not None:
            return credentials.credentials, False
        if request.headers.get("authorization"):
            return "", False  # a header that is not `Bearer TOKEN`
        cookie = request.cookies.get(COOKIE_NAME)
        return (cookie, True) if cookie else (None, False)

    def name_of(self, token: str) -> str | None:
        """The name of the token (`default` for the server's own), or `None` for a wrong one.

        The server's token is compared in constant time; a named token is looked up by the SHA-256
        digest of what was sent, and only digests are stored.
        """
        if secrets.compare_digest(token.encode(), self.settings.token.encode()):
            return self.settings.token_name
        if not token or len(token) > 500:
            return None
        digest = secret_digest(token)
        name = self.client.store.token_name(digest)
        return name

    def valid(self, token: str) -> bool:
        """Whether `token` is the server's token or an unrevoked named one."""
        return self.name_of(token) is not None

    def check(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None, *, write: bool
    ) -> str | None:
        """Refuse a request that needs the token and lacks it (401) or has a wrong one (403).

        Returns:
            The token's name (for the audit trail), or `None` for an open read without a token.

        Raises:
            ApiError: 401 without a token, 403 with a wrong one, or for a write authenticated by the
                dashboard's cookie without the dashboard's header (cross-site request).
        """
        if not write and self.settings.open_reads:
            return None
        token, from_cookie = self.token_of(request, credentials)
        if token is None:
            raise ApiError(
                401,
                "missing_token",
                "This needs the server's token: send 'Authorization: Bearer TOKEN'. `kitaru-adapters serve` "
                "printed it when it first started and saved it in .kitaru/server-token.",
            )
        name = self.name_of(token)
        if name is None:
            raise ApiError(
                403, "invalid_token", "The token is not this server's token, nor an unrevoked named token."
            )
        if write and from_cookie and request.headers.get(DASHBOARD_HEADER) != "1":
            raise ApiError(
                403,
                "cross_site_request",
                f"A write signed in by the dashboard's cookie must carry the {DASHBOARD_HEADER} header; "
                "other clients send 'Authorization: Bearer TOKEN'.",
            )
        return name


def write_access(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
) -> tuple[str, str]:
    """Refuse a write without a valid token; `(token name, "token")` for the audit trail."""
    auth: Auth = request.app.state.auth
    name = auth.check(request, credentials, write=True)
    return (name or "", "token")


Who = Annotated[tuple[str, str], Depends(write_access)]


def create_app(settings: ServerSettings) -> FastAPI:
    """The ASGI application of the dashboard and the HTTP API.

    Args:
        settings: Token, store and behaviour.

    Returns:
        A FastAPI application; run it with any ASGI server (`kitaru-adapters serve` uses uvicorn).
    """
    client = Client(settings.store_url, settings.artifacts_url)
    auth = Auth(settings, client)
    markers = ChangeMarkers(client, max_age_s=settings.poll_interval_s * 0.8)
    app = FastAPI(
        title="kitaru-adapters",
        version=kitaru_core.__version__,
        # FastAPI's /docs and /redoc pages load their scripts from a CDN: not on the dashboard's origin
        docs_url=None,
        redoc_url=None,
        description=(
            "Watch durable executions and steer them: list executions, read a timeline of checkpoint calls, "
            "answer waits (validated against each wait's JSON schema), resume and cancel. Every request "
            "that changes something needs `Authorization: Bearer TOKEN`."
        ),
        responses={
            400: {"model": ErrorBody, "description": "The `Host` header names a host the server does not answer."},
            401: {"model": ErrorBody, "description": "No token."},
            403: {"model": ErrorBody, "description": "Wrong token."},
        },
    )
    app.state.client = client
    app.state.settings = settings
    app.state.auth = auth

    def read_access(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
    ) -> None:
        auth.check(request, credentials, write=False)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError) -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        headers = {"WWW-Authenticate": "Bearer"} if error.status_code == 401 else None
        return JSONResponse(error.body.model_dump(), status_code=error.status_code, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        kind = RequestTooLargeError.error if isinstance(error, RequestTooLargeError) else "HTTPException"
        body = ErrorBody(error=kind, message=str(error.detail))
        return JSONResponse(
            {**body.model_dump(), "detail": error.detail},
            status_code=error.status_code,
            headers=error.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _request_error(_request: Request, error: RequestValidationError) -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        details = jsonable_encoder(error.errors())
        problems = [
            f"{'.'.join(str(part) for part in problem.get('loc', []))}: {problem.get('msg', '')}"
            for problem in details
        ]
        body = ErrorBody(
            error="RequestValidationError",
            message="The request does not match the API's schema.",
            problems=problems,
        )
        # `detail` keeps FastAPI's usual shape for clients that read it
        return JSONResponse({**body.model_dump(), "detail": details}, status_code=422)

    @app.exception_handler(KitaruError)
    async def _kitaru_error(_request: Request, error: KitaruError) -> JSONResponse:  # pyright: ignore[reportUnusedFunction]
        problems = error.problems if isinstance(error, InvalidAnswerError) else []
        body = ErrorBody(error=type(error).__name__, message=str(error), problems=problems)
        return JSONResponse(body.model_dump(), status_code=status_of(error))

    reads = [Depends(read_access)]
    writes = [Depends(write_access)]
    not_found: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorBody, "description": "No such execution, wait or call."}
    }

    @app.get("/api/executions", dependencies=reads, tags=["executions"])
    def list_executions(  # pyright: ignore[reportUnusedFunction]
        status: Annotated[list[Status] | None, Query(description="Keep these statuses (repeatable).")] = None,
        flow: Annotated[
            str | None, Query(description="Keep this flow or agent name.", max_length=500, pattern=PRINTABLE)
        ] = None,
        since: Annotated[
            datetime | None, Query(description="Created at or after (ISO 8601; UTC if no zone).")
        ] = None,
        until: Annotated[
            datetime | None, Query(description="Created before (ISO 8601; UTC if no zone).")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 50,
        offset: Annotated[int, Query(ge=0, le=10**9, description="Executions to skip.")] = 0,
    ) -> ExecutionPage:
        """Executions, newest first, filtered by status, flow and creation time, one page at a time."""
        filters: dict[str, Any] = {
            "status": status,
            "flow": flow or None,
            "since": _utc(since),
            "until": _utc(until),
        }
        items = client.list_executions(**filters, limit=limit, offset=offset)
        total = client.count_executions(**filters)
        next_offset = offset + limit if offset + limit < total else None
        return ExecutionPage(items=items, total=total, limit=limit, offset=offset, next_offset=next_offset)

    @app.get("/api/executions/{execution_id}", dependencies=reads, tags=["executions"], responses=not_found)
    def get_execution(execution_id: ExecutionId) -> ExecutionDetail:  # pyright: ignore[reportUnusedFunction]
        """One execution: its timeline, waits, token and cost totals, and audit trail.

        The audit trail says who answered, resumed, cancelled or replayed it, and when.
        """
        return client.get_execution(valid_id(execution_id, "execution_id"))

    @app.get(
        "/api/executions/{execution_id}/calls/{sequence}/output",
        dependencies=reads,
        tags=["executions"],
        responses={**not_found, 409: {"model": ErrorBody, "description": "Stored with pickle: not shown."}},
    )
    def call_output(  # pyright: ignore[reportUnusedFunction]
        execution_id: ExecutionId,
        sequence: Annotated[int, PathParameter(ge=0, le=2**31, description="The call's sequence number.")],
    ) -> CallOutput:
        """The full stored output of one checkpoint call (the timeline holds only a preview)."""
        execution_id = valid_id(execution_id, "execution_id")
        return CallOutput(
            execution_id=execution_id, sequence=sequence, value=client.call_output(execution_id, sequence)
        )

    @app.get("/api/waits", dependencies=reads, tags=["waits"])
    def pending_waits(  # pyright: ignore[reportUnusedFunction]
        execution_id: Annotated[
            str | None, Query(description="Only this execution's waits.", max_length=200, pattern=PRINTABLE)
        ] = None,
    ) -> list[WaitView]:
        """Waits without an answer, oldest first, each with its question and JSON schema."""
        return client.pending_waits(execution_id)

    def start_resume(execution_id: str, who: tuple[str, str], *, after_answer: bool = False) -> ResumeStarted:
        if hand_to_live_worker(client, execution_id, who, after_answer=after_answer):
            return ResumeStarted(execution_id=execution_id, queued_for_worker=True)
        log_path = settings.resume_log_dir / f"{_safe(execution_id)}-{int(time.time() * 1000)}.log"
        pid = client.resume_in_background(execution_id, log_path=log_path, actor=who)
        return ResumeStarted(execution_id=execution_id, pid=pid, log_path=str(log_path))

    @app.post(
        "/api/executions/{execution_id}/waits/{wait_name}/answer",
        dependencies=writes,
        tags=["waits"],
        responses={
            **not_found,
            409: {"model": ErrorBody, "description": "The wait was answered already."},
            413: {"model": ErrorBody, "description": "The request body is larger than the server accepts."},
            422: {
                "model": ErrorBody,
                "description": "The answer does not satisfy the wait's schema, or `question_digest` names "
                "another wait.",
            },
        },
    )
    def answer_wait(  # pyright: ignore[reportUnusedFunction]
        execution_id: ExecutionId, wait_name: WaitName, body: AnswerRequest, who: Who
    ) -> AnswerResult:
        """Answer a pending wait; the answer is validated against its JSON schema exactly as the CLI does.

        Encode the execution id and the wait name as one path segment each (`/` as `%2F`). Only a
        wait of the named execution is answered; with `question_digest` (from the wait's view) the
        answer is also refused unless the wait is the question that was shown. A refused answer is
        reported as 422 with one line per problem, and the wait stays pending. The token's name is
        recorded as who answered. With `resume: true` the execution is resumed in a background
        process once no wait of it is pending (needs an importable `@flow` entry point; otherwise
        `resume_skipped` says why not). When a live worker serves the execution's queue, the
        execution is handed to it instead (`resumed.queued_for_worker`).
        """
        execution_id = valid_id(execution_id, "execution_id")
        wait_name = valid_id(wait_name, "wait_name")
        wait = client.answer(
            execution_id, wait_name, body.value, actor=who, expected_digest=body.question_digest
        )
        result = AnswerResult(wait=wait)
        if body.resume:
            still_pending = [pending.name for pending in client.pending_waits(execution_id)]
            if still_pending:
                result.resume_skipped = f"Not resumed: waits still pending: {', '.join(still_pending)}."
            else:
                try:
                    result.resumed = start_resume(execution_id, who, after_answer=True)
                except KitaruError as error:
                    result.resume_skipped = f"Not resumed: {error}"
        return result

    @app.post(
        "/api/executions/{execution_id}/resume",
        dependencies=writes,
        tags=["executions"],
        status_code=202,
        responses={
            **not_found,
            409: {
                "model": ErrorBody,
                "description": "Completed, cancelled, running, or not resumable from here.",
            },
        },
    )
    def resume(execution_id: ExecutionId, who: Who) -> ResumeStarted:  # pyright: ignore[reportUnusedFunction]
        """Resume an execution: hand it to a worker, or run it in a background process of the server.

        When a live worker (a heartbeat within the last 15 seconds) serves the execution's queue,
        the execution becomes `queued` and that worker resumes it (`queued_for_worker`); the server
        imports and runs no flow code. Without one, the server starts a background process
        (`pid`, `log_path`). Either way the entry point must be an importable `@flow`.

        Completed checkpoint calls are served from the store and answered waits return their
        answers. Follow the execution with `GET /api/executions/{execution_id}` or the event stream.
        The token's name is recorded as who resumed it.
        """
        return start_resume(valid_id(execution_id, "execution_id"), who)

    @app.get("/api/workers", dependencies=reads, tags=["workers"])
    def workers() -> list[WorkerView]:  # pyright: ignore[reportUnusedFunction]
        """Every worker the store has seen (as `kitaru-adapters workers list`), the most recently started first."""
        return worker_views(client)

    @app.post(
        "/api/executions/{execution_id}/cancel", dependencies=writes, tags=["executions"], responses=not_found
    )
    def cancel(execution_id: ExecutionId, who: Who) -> ExecutionSummary:  # pyright: ignore[reportUnusedFunction]
        """Cancel an execution: at once if no runner holds it, else at the runner's next checkpoint call.

        The token's name is recorded as who cancelled it.
        """
        return client.cancel(valid_id(execution_id, "execution_id"), actor=who)

    from kitaru_core.server._replay_api import add_replay_routes

    add_replay_routes(app, client, settings, reads=reads, writes=writes)

    @app.get(
        "/api/events",
        dependencies=reads,
        tags=["events"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events."}},
    )
    async def events(  # pyright: ignore[reportUnusedFunction]
        execution_id: Annotated[
            str | None, Query(description="Watch only this execution.", max_length=200, pattern=PRINTABLE)
        ] = None,
    ) -> StreamingResponse:
        """Server-sent events: a `change` event whenever the store (or one execution) changes.

        Changes made by any process count: a runner recording checkpoint calls, another process
        answering a wait. The first event describes the current state; its `data` is
        `{"marker": "...", "execution_id": ...}`. A comment line keeps idle connections open.
        """
        return StreamingResponse(
            _change_events(markers, execution_id, settings.poll_interval_s),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    from kitaru_core.server._artifacts import add_artifact_api

    add_artifact_api(app, client, read_access)

    from kitaru_core.server._pages import add_pages

    add_pages(app, client, auth)

    app.mount("/static", StaticFiles(directory=STATIC_DIRECTORY), name="static")
    # outermost: refuse foreign hosts and oversized bodies before anything else runs; it also adds the
    # security headers to every response
    app.add_middleware(
        Guard,  # pyright: ignore[reportArgumentType]
        allowed_hosts=settings.allowed_hosts,
        max_request_bytes=settings.max_request_bytes,
        response_headers=SECURITY_HEADERS,
    )
    return app


def _safe(text: str) -> str:
    return "".join(character if character.isalnum() or character in "-_." else "_" for character in text)[:80]


class ChangeMarkers:
    """The store's change markers, shared by every open event stream.

    Each stream asks every poll interval; streams watching the same thing (the whole store, or one
    execution) share one query batch per interval, however many pages are open.

    Args:
        client: Reads the markers.
        max_age_s: How long a marker read by one stream is reused by the others.
    """

    def __init__(self, client: Client, max_age_s: float) -> None:
        self._client = client
        self._max_age_s = max_age_s
        self._cache: dict[str | None, tuple[float, str]] = {}
        self._locks: dict[str | None, anyio.Lock] = {}

    async def get(self, execution_id: str | None) -> str:
        """The current marker of the store (`None`) or of one execution."""
        lock = self._locks.setdefault(execution_id, anyio.Lock())
        async with lock:
            cached = self._cache.get(execution_id)
            if cached is not None and time.monotonic() - cached[0] < self._max_age_s:
                return cached[1]
            marker = await anyio.to_thread.run_sync(self._client.change_marker, execution_id)
            self._cache[execution_id] = (time.monotonic(), marker)
            return marker


async def _change_events(
    markers: ChangeMarkers, execution_id: str | None, poll_interval_s: float
) -> AsyncIterator[str]:
    """Poll the store's change marker; yield an SSE `change` event each time it moves."""
    last: str | None = None
    quiet_since = time.monotonic()
    yield "retry: 1000\n\n"
    while True:
        try:
            marker = await markers.get(execution_id)
        except StoreError as error:  # a passing database error: report it, keep watching
            yield f"event: store-error\ndata: {json.dumps(str(error))}\n\n"
            marker = last
        if marker != last:
            last = marker
            quiet_since = time.monotonic()
            yield f"event: change\ndata: {json.dumps({'marker': marker, 'execution_id': execution_id})}\n\n"
        elif time.monotonic() - quiet_since > HEARTBEAT_S:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        await anyio.sleep(poll_interval_s)
