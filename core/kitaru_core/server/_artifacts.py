"""Artifacts in the HTTP API and the dashboard: list an execution's artifacts, fetch one, preview it.

An artifact's name and content come from flow code, and through it from models and tools: both are
untrusted. Names travel as one percent-encoded path segment each and are checked against the id
grammar like execution ids. Content is served only as types a browser does not execute: raster
images judged by their first bytes (PNG, JPEG, GIF, WebP), text as `text/plain`, other values as
`application/json`, anything else as an `application/octet-stream` download; always with
`Content-Disposition`, `X-Content-Type-Options: nosniff` and the dashboard's Content Security Policy.
Markdown is rendered with raw HTML disabled and unsafe link schemes dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import Depends, FastAPI, Query
from fastapi import Path as PathParameter
from fastapi.responses import Response

from kitaru_core import ArtifactView, Client
from kitaru_core._artifacts import MAX_VERSION, sniff_image
from kitaru_core._ids import MAX_ID_CHARACTERS, check_artifact_name
from kitaru_core.errors import InvalidIdError
from kitaru_core.server._app import ApiError, ErrorBody, ExecutionId, valid_id
from kitaru_core.server._guard import unescape_segment

PREVIEW_CHARACTERS = 100_000
"""Longest text a preview page shows; the API serves all of it."""

ArtifactName = Annotated[
    str,
    PathParameter(
        description="The artifact's name, percent-encoded as one path segment (`/` as `%2F`).",
        max_length=3 * MAX_ID_CHARACTERS,
        pattern=r"^[^\x00-\x1f\x7f]+$",
    ),
]
Version = Annotated[int, PathParameter(ge=1, le=MAX_VERSION, description="The version (1, 2, ...).")]
Download = Annotated[bool, Query(description="Send it as a download (`Content-Disposition: attachment`).")]
PreviewKind = Literal["image", "text", "markdown", "json", "binary"]


def valid_artifact_name(raw: str) -> str:
    """A routed path parameter, decoded once more and checked against the artifact name rule.

    Raises:
        ApiError: 422 when it is not a valid artifact name.
    """
    value = unescape_segment(raw)
    try:
        return check_artifact_name(value)
    except InvalidIdError as error:
        raise ApiError(
            422, "InvalidIdError", "The artifact name in the path is not valid.", [f"path.name: {error}"]
        ) from error


def content_disposition(disposition: Literal["inline", "attachment"], name: str) -> str:
    """A `Content-Disposition` value whose file name cannot break the header (RFC 6266 / 5987).

    The plain `filename` keeps only letters, digits, `.`, `-` and `_` (others become `_`); the
    exact name follows percent-encoded as UTF-8 in `filename*`.
    """
    plain = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name)[:100] or "artifact"
    return f"{disposition}; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


def artifact_response(view: ArtifactView, content: Any, *, download: bool) -> Response:
    """The artifact as an HTTP response of a type a browser never executes.

    Args:
        view: The artifact.
        content: What `Client.artifact_content` gave: bytes, a str, or JSON data.
        download: Ask the browser to save it (`attachment`) rather than show it.
    """
    if isinstance(content, bytes | bytearray):
        body = bytes(content)
        image = sniff_image(body[:16])
        media_type = image or "application/octet-stream"
        inline = image is not None and not download
    elif isinstance(content, str):
        body, media_type, inline = content.encode("utf-8", "surrogatepass"), "text/plain; charset=utf-8", not download
    else:
        body = json.dumps(content, ensure_ascii=False).encode("utf-8")
        media_type, inline = "application/json", not download
    return Response(
        body,
        media_type=media_type,
        headers={
            "Content-Disposition": content_disposition("inline" if inline else "attachment", view.name),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
            "X-Kitaru-Artifact-Version": str(view.version),
        },
    )


@dataclass(frozen=True)
class Preview:
    """What the dashboard shows of an artifact.

    Attributes:
        kind: `image` (shown through the API), `text`, `markdown` (rendered, safe), `json` or
            `binary` (a download link only).
        text: The text shown (`text`, `json`; the Markdown source for `markdown`).
        html: Safe HTML of rendered Markdown.
        truncated: Whether `text` was cut at `PREVIEW_CHARACTERS`.
        problem: Why there is no preview (pickle, a corrupt value).
    """

    kind: PreviewKind
    text: str = ""
    html: str = ""
    truncated: bool = False
    problem: str | None = None


def render_markdown(text: str) -> str:
    """HTML of Markdown with raw HTML shown as text and unsafe link schemes (`javascript:`...) dropped."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).render(text)


def _cut(text: str) -> tuple[str, bool]:
    return (text, False) if len(text) <= PREVIEW_CHARACTERS else (text[:PREVIEW_CHARACTERS], True)


def preview(view: ArtifactView, content: Any) -> Preview:
    """Decide how the dashboard shows an artifact: image, text, Markdown, JSON or a download."""
    if isinstance(content, bytes | bytearray):
        if sniff_image(bytes(content[:16])) is not None:
            return Preview("image")
        if view.media_type.startswith("text/"):
            try:
                text, truncated = _cut(bytes(content).decode("utf-8"))
            except UnicodeDecodeError:
                return Preview("binary")
            if view.media_type == "text/markdown":
                return Preview("markdown", text=text, html=render_markdown(text), truncated=truncated)
            return Preview("text", text=text, truncated=truncated)
        return Preview("binary")
    if isinstance(content, str):
        text, truncated = _cut(content)
        if view.media_type == "text/markdown":
            return Preview("markdown", text=text, html=render_markdown(text), truncated=truncated)
        return Preview("text", text=text, truncated=truncated)
    text, truncated = _cut(json.dumps(content, indent=2, ensure_ascii=False))
    return Preview("json", text=text, truncated=truncated)


def add_artifact_api(app: FastAPI, client: Client, read_access: Any) -> None:
    """Add `GET /api/executions/{id}/artifacts` and the routes that fetch one artifact."""
    reads = [Depends(read_access)]
    errors: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorBody, "description": "No such execution or artifact."},
        409: {"model": ErrorBody, "description": "Stored with pickle: never served."},
        422: {"model": ErrorBody, "description": "The execution id or the artifact name is not valid."},
    }
    content_types: dict[str, Any] = {
        "image/png": {},
        "image/jpeg": {},
        "image/gif": {},
        "image/webp": {},
        "text/plain": {},
        "application/json": {},
        "application/octet-stream": {},
    }

    @app.get("/api/executions/{execution_id}/artifacts", dependencies=reads, tags=["artifacts"], responses=errors)
    def list_artifacts(execution_id: ExecutionId) -> list[ArtifactView]:  # pyright: ignore[reportUnusedFunction]
        """Every version of every artifact the execution saved (`save`), by name, then version."""
        return client.list_artifacts(valid_id(execution_id, "execution_id"))

    def fetch(execution_id: str, name: str, version: int | None, download: bool) -> Response:
        view, content = client.artifact_content(
            valid_id(execution_id, "execution_id"), valid_artifact_name(name), version
        )
        return artifact_response(view, content, download=download)

    @app.get(
        "/api/executions/{execution_id}/artifacts/{name}",
        dependencies=reads,
        tags=["artifacts"],
        response_class=Response,
        responses={**errors, 200: {"content": content_types, "description": "The latest version."}},
    )
    def latest_artifact(  # pyright: ignore[reportUnusedFunction]
        execution_id: ExecutionId, name: ArtifactName, download: Download = False
    ) -> Response:
        """The latest version of an artifact, served as a type a browser never executes.

        An image (PNG, JPEG, GIF, WebP, judged by its bytes), text as `text/plain`, other values as
        JSON (the codec's tagged form for what JSON cannot carry), other bytes as a download. Encode
        the execution id and the name as one path segment each.
        """
        return fetch(execution_id, name, None, download)

    @app.get(
        "/api/executions/{execution_id}/artifacts/{name}/{version}",
        dependencies=reads,
        tags=["artifacts"],
        response_class=Response,
        responses={**errors, 200: {"content": content_types, "description": "That version."}},
    )
    def artifact_version(  # pyright: ignore[reportUnusedFunction]
        execution_id: ExecutionId, name: ArtifactName, version: Version, download: Download = False
    ) -> Response:
        """One version of an artifact, served like the latest one."""
        return fetch(execution_id, name, version, download)


def artifact_page_context(client: Client, execution_id: str, name: str, version: int | None) -> dict[str, Any]:
    """What the dashboard's artifact page shows: the execution, every version of the name, one preview.

    Raises:
        ApiError: 422 for an invalid execution id or name.
        ExecutionNotFoundError: No such execution.
        ArtifactNotFoundError: No artifact of that name, or not that version.
    """
    from kitaru_core.errors import SerializationError

    execution_id = valid_id(execution_id, "execution_id")
    name = valid_artifact_name(name)
    versions = [view for view in client.list_artifacts(execution_id) if view.name == name]
    try:
        view, content = client.artifact_content(execution_id, name, version)
        shown = preview(view, content)
    except SerializationError as error:  # pickle, or a corrupt value: no preview, say why
        view = next((item for item in versions if item.version == version), versions[-1] if versions else None)
        if view is None:
            raise
        shown = Preview("binary", problem=str(error))
    return {"execution_id": execution_id, "artifact": view, "versions": versions, "preview": shown}
