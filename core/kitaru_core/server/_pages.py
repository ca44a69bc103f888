"""The dashboard: server-rendered pages that refresh their live parts when the store changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from kitaru_core import CallView, Client, ExecutionDetail, ExecutionSummary, WaitView
from kitaru_core._artifacts import MAX_VERSION
from kitaru_core._ids import MAX_ID_CHARACTERS
from kitaru_core._workers import WORKER_HEARTBEAT_S
from kitaru_core.errors import ArtifactNotFoundError, ExecutionNotFoundError
from kitaru_core.server._app import COOKIE_NAME, PRINTABLE, ApiError, Auth, ExecutionId, valid_id
from kitaru_core.server._artifacts import ArtifactName, artifact_page_context
from kitaru_core.server._forms import answer_form
from kitaru_core.server._guard import segment

TEMPLATES_DIRECTORY = Path(__file__).with_name("templates")
FRAGMENT_HEADER = "x-kitaru-fragment"
STATUSES = ("queued", "running", "waiting", "completed", "failed", "cancelled")
PAGE_SIZE = 50
INPUT_PREVIEW_CHARACTERS = 160
VALUE_PREVIEW_CHARACTERS = 2000
"""Longest text a page shows of one value (an answer, tool arguments, a question); the API has all."""
EDITABLE_ANSWER_CHARACTERS = 10_000
"""Longest wait answer (as indented JSON) the replay editor offers to change; a longer one is kept as is."""


def _preview(value: Any, limit: int = VALUE_PREVIEW_CHARACTERS) -> str:
    """Text of a value (JSON unless it is a string), cut at `limit` characters with `…`."""
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters; the API has all)"


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _money(value: float | None) -> str:
    if value is None:
        return ""
    return f"${value:.4f}" if value >= 0.01 or value == 0 else f"${value:.6f}"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def _input_preview(call: CallView) -> str:
    shown = {key: value for key, value in call.details.items() if key not in {"copied_from"}}
    if not shown:
        return ""
    text = json.dumps(shown, default=str, ensure_ascii=False)
    return text if len(text) <= INPUT_PREVIEW_CHARACTERS else text[:INPUT_PREVIEW_CHARACTERS] + "…"


def _truncated(call: CallView) -> bool:
    preview = call.output_preview or ""
    return call.output_size_bytes is not None and (
        preview.endswith("…") or call.output_size_bytes > len(preview.encode())
    )


def _from_json_text(value: str) -> str:
    """A JSON default as the text an input shows (strings without their quotes)."""
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, str) else value


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def resumable(detail: ExecutionDetail) -> bool:
    """Whether the dashboard can resume this execution in a background process."""
    if not detail.entry_point or any(wait.status == "pending" for wait in detail.waits):
        return False
    return detail.status in {"waiting", "failed"} or (detail.status == "running" and not detail.runner_alive)


def add_pages(app: FastAPI, client: Client, auth: Auth) -> None:
    """Add the dashboard's pages to `app`."""
    templates = Jinja2Templates(directory=TEMPLATES_DIRECTORY)
    templates.env.filters["when"] = _when
    templates.env.filters["money"] = _money
    templates.env.filters["duration"] = _duration
    templates.env.filters["to_json"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False)  # pyright: ignore[reportUnknownLambdaType]
    templates.env.filters["from_json_text"] = _from_json_text
    templates.env.filters["segment"] = segment
    templates.env.filters["preview"] = _preview
    template_globals: dict[str, Any] = templates.env.globals  # pyright: ignore[reportAssignmentType]
    template_globals.update(
        answer_form=answer_form,
        input_preview=_input_preview,
        truncated=_truncated,
        resumable=resumable,
        here=here,
    )

    def _replay_context(detail: ExecutionDetail) -> dict[str, Any]:
        """What the "Replay from here" editor needs: when each call started, and the answered waits.

        A replay keeps the answers of the waits reached before its chosen call (`created_at` before
        the call's start, as `Client.replay` decides); the editor lists those, to be changed.
        """
        if not detail.entry_point:
            return {"call_started": {}, "replay_waits": []}
        started = {
            record.sequence: record.started_at_epoch_s for record in client.store.load_calls(detail.id)
        }
        waits: list[dict[str, Any]] = []
        for record in client.store.list_waits(detail.id, status="answered"):
            text = json.dumps(record.answer, indent=2, ensure_ascii=False, default=str)
            waits.append(
                {
                    "name": record.name,
                    "question": record.question,
                    "answer": text if len(text) <= EDITABLE_ANSWER_CHARACTERS else None,
                    "answer_characters": len(text),
                    "created_at_epoch_s": record.created_at_epoch_s,
                }
            )
        return {"call_started": started, "replay_waits": waits}

    def signed_in(request: Request) -> bool:
        cookie = request.cookies.get(COOKIE_NAME)
        return bool(cookie) and auth.valid(cookie or "")

    def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
        if not auth.settings.open_reads and not signed_in(request):
            return RedirectResponse("/login?" + urlencode({"next": here(request)}), status_code=303)
        return templates.TemplateResponse(
            request,
            name,
            {
                **context,
                "fragment": request.headers.get(FRAGMENT_HEADER) == "1",
                "signed_in": signed_in(request),
                "pending_count": len(client.pending_waits()),
            },
            status_code=status_code,
            headers={"Cache-Control": "no-store"},
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def executions_page(  # pyright: ignore[reportUnusedFunction]
        request: Request,
        status: Annotated[str | None, Query()] = None,
        flow: Annotated[str | None, Query(max_length=500, pattern=PRINTABLE)] = None,
        since: Annotated[str | None, Query(max_length=40)] = None,
        until: Annotated[str | None, Query(max_length=40)] = None,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> Response:
        chosen_status = status if status in STATUSES else None
        filters: dict[str, Any] = {
            "status": chosen_status,
            "flow": flow or None,
            "since": _parse_time(since),
            "until": _parse_time(until),
        }
        rows = client.list_executions(**filters, limit=PAGE_SIZE, offset=offset)
        total = client.count_executions(**filters)
        query = {
            key: value
            for key, value in {"status": chosen_status, "flow": flow, "since": since, "until": until}.items()
            if value
        }
        return render(
            request,
            "executions.html",
            {
                "page": "executions",
                "rows": rows,
                "total": total,
                "offset": offset,
                "page_size": PAGE_SIZE,
                "statuses": STATUSES,
                "filters": {**query, "status": chosen_status or ""},
                "previous_url": "/?" + urlencode({**query, "offset": max(0, offset - PAGE_SIZE)})
                if offset > 0
                else None,
                "next_url": "/?" + urlencode({**query, "offset": offset + PAGE_SIZE})
                if offset + PAGE_SIZE < total
                else None,
            },
        )

    @app.get("/executions/{execution_id}", response_class=HTMLResponse, include_in_schema=False)
    def execution_page(request: Request, execution_id: ExecutionId) -> Response:  # pyright: ignore[reportUnusedFunction]
        try:
            detail = client.get_execution(valid_id(execution_id, "execution_id"))
        except ApiError as error:
            return render(
                request, "not_found.html", {"page": "", "message": error.body.message}, status_code=404
            )
        except ExecutionNotFoundError as error:
            return render(request, "not_found.html", {"page": "", "message": str(error)}, status_code=404)
        return render(
            request, "execution.html", {"page": "executions", "detail": detail, **_replay_context(detail)}
        )

    @app.get("/compare", response_class=HTMLResponse, include_in_schema=False)
    def compare_page(  # pyright: ignore[reportUnusedFunction]
        request: Request,
        a: Annotated[str, Query(max_length=MAX_ID_CHARACTERS, pattern=PRINTABLE)],
        b: Annotated[str, Query(max_length=MAX_ID_CHARACTERS, pattern=PRINTABLE)],
    ) -> Response:
        """Two executions (an original and its replay) lined up call by call, as `GET /api/diff`."""
        try:
            diff = client.diff(a, b)
        except ExecutionNotFoundError as error:
            return render(request, "not_found.html", {"page": "", "message": str(error)}, status_code=404)
        return render(request, "compare.html", {"page": "executions", "diff": diff})

    @app.get("/waiting", response_class=HTMLResponse, include_in_schema=False)
    def waiting_page(request: Request) -> Response:  # pyright: ignore[reportUnusedFunction]
        waits: list[WaitView] = client.pending_waits()
        executions: dict[str, ExecutionSummary] = {}  # flow, status and entry point: no timeline
        for wait in waits:
            if wait.execution_id not in executions:
                try:
                    executions[wait.execution_id] = client.get_summary(wait.execution_id)
                except ExecutionNotFoundError:  # deleted between the two reads
                    continue
        shown = [wait for wait in waits if wait.execution_id in executions]
        return render(request, "waiting.html", {"page": "waiting", "waits": shown, "executions": executions})

    @app.get("/workers", response_class=HTMLResponse, include_in_schema=False)
    def workers_page(request: Request) -> Response:  # pyright: ignore[reportUnusedFunction]
        from kitaru_core.server._handoff import worker_views

        return render(
            request,
            "workers.html",
            {"page": "workers", "workers": worker_views(client), "gone_after_s": 3 * WORKER_HEARTBEAT_S},
        )

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(  # pyright: ignore[reportUnusedFunction]
        request: Request,
        token: Annotated[str | None, Query(max_length=500)] = None,
        next: Annotated[str, Query(max_length=2000)] = "/",
    ) -> Response:
        if token is not None:
            return _sign_in(token, next)
        return templates.TemplateResponse(
            request, "login.html", {"page": "login", "next": _local(next), "error": None, "fragment": False}
        )

    @app.post("/login", response_class=HTMLResponse, include_in_schema=False)
    def login(  # pyright: ignore[reportUnusedFunction]
        token: Annotated[str, Form(max_length=500)], next: Annotated[str, Form(max_length=2000)] = "/"
    ) -> Response:
        return _sign_in(token, next)

    def _sign_in(token: str, next_url: str) -> Response:
        if not auth.valid(token.strip()):
            response = RedirectResponse("/login?" + urlencode({"next": _local(next_url), "error": "1"}), 303)
            return response
        response = RedirectResponse(_local(next_url), status_code=303)
        response.set_cookie(COOKIE_NAME, token.strip(), httponly=True, samesite="strict", max_age=30 * 86400)
        return response

    @app.post("/logout", include_in_schema=False)
    def logout() -> Response:  # pyright: ignore[reportUnusedFunction]
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE_NAME)
        return response

    @app.get("/executions/{execution_id}/artifacts/{name}", response_class=HTMLResponse, include_in_schema=False)
    def artifact_page(  # pyright: ignore[reportUnusedFunction]
        request: Request,
        execution_id: ExecutionId,
        name: ArtifactName,
        version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
    ) -> Response:
        try:
            context = artifact_page_context(client, execution_id, name, version)
        except ApiError as error:
            return render(request, "not_found.html", {"page": "", "message": error.body.message}, status_code=404)
        except (ExecutionNotFoundError, ArtifactNotFoundError) as error:
            return render(request, "not_found.html", {"page": "", "message": str(error)}, status_code=404)
        return render(request, "artifact.html", {"page": "executions", **context})


def here(request: Request) -> str:
    """The path of this request as the client sent it (still percent-encoded)."""
    raw_path = request.scope.get("raw_path")
    if isinstance(raw_path, bytes) and raw_path:
        return raw_path.split(b"?", 1)[0].decode("latin-1")
    return request.url.path


def _local(url: str) -> str:
    """`url` if it is a path on this server, else `/` (no open redirects)."""
    return url if url.startswith("/") and not url.startswith("//") and "\\" not in url else "/"
