"""Artifacts in the HTTP API and the dashboard: list, fetch, previews, hostile names, safe content types."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient

import kitaru_core
from kitaru_core import execution, log, save
from tests.server.conftest import bearer, make_api
from tests.server.test_hostile import ERROR_SHAPE, HOSTILE_IDS, segment

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(64))
HOSTILE_NAMES = [*HOSTILE_IDS, "…ünïcode/✓.md", "evil\";.html"]


class Plain:
    """Neither a model nor a dataclass: stored only with pickle."""


def url(execution_id: str, name: str, version: int | None = None) -> str:
    tail = "" if version is None else f"/{version}"
    return f"/api/executions/{segment(execution_id)}/artifacts/{segment(name)}{tail}"


@pytest.fixture
def saved(api: TestClient) -> str:
    """An execution with one artifact of each kind; returns its id."""
    with execution("art-1", name="reports"):
        log(owner="ana")
        save("chart.png", PNG)
        save("notes.md", "# Title\n\n<script>alert(1)</script>\n\n[click](javascript:alert(1)) *fine*")
        save("log.txt", "first")
        save("log.txt", "second <b>bold</b>")
        save("data", {"rows": [1, 2], "ok": True})
        save("page.svg", b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>")
        save("fake.png", b"<html><script>alert(1)</script></html>")  # a name that lies about its content
    return "art-1"


def test_the_api_lists_every_version(api: TestClient, saved: str) -> None:
    response = api.get(f"/api/executions/{saved}/artifacts")
    assert response.status_code == 200, response.text
    rows = [(row["name"], row["version"], row["media_type"], row["format"]) for row in response.json()]
    assert rows == [
        ("chart.png", 1, "image/png", "json+typed/1"),
        ("data", 1, "application/json", "json+typed/1"),
        ("fake.png", 1, "application/octet-stream", "json+typed/1"),
        ("log.txt", 1, "text/plain", "json+typed/1"),
        ("log.txt", 2, "text/plain", "json+typed/1"),
        ("notes.md", 1, "text/markdown", "json+typed/1"),
        ("page.svg", 1, "application/octet-stream", "json+typed/1"),
    ]


def _disposition(response: object) -> tuple[str, str]:
    header = response.headers["content-disposition"]  # type: ignore[attr-defined]
    kind = header.split(";", 1)[0]
    [encoded] = re.findall(r"filename\*=UTF-8''(\S+)$", header)
    return kind, unquote(encoded)


def test_fetching_serves_only_types_a_browser_does_not_execute(api: TestClient, saved: str) -> None:
    image = api.get(url(saved, "chart.png"))
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content == PNG
    assert _disposition(image) == ("inline", "chart.png")

    for name in ("page.svg", "fake.png"):  # not a raster image by its bytes: a download, never markup
        response = api.get(url(saved, name))
        assert response.headers["content-type"] == "application/octet-stream"
        assert _disposition(response)[0] == "attachment"

    markdown = api.get(url(saved, "notes.md"))
    assert markdown.headers["content-type"] == "text/plain; charset=utf-8"
    assert markdown.text.startswith("# Title")

    data = api.get(url(saved, "data"))
    assert data.headers["content-type"] == "application/json"
    assert data.json() == {"rows": [1, 2], "ok": True}

    assert api.get(url(saved, "log.txt")).text == "second <b>bold</b>"  # the latest version
    assert api.get(url(saved, "log.txt", 1)).text == "first"
    download = api.get(url(saved, "log.txt", 1) + "?download=true")
    assert _disposition(download) == ("attachment", "log.txt")
    for response in (image, markdown, data, download):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'self'" in response.headers["content-security-policy"]


def test_missing_and_invalid_artifacts_get_the_error_shape(api: TestClient, saved: str) -> None:
    missing = api.get(url(saved, "nope"))
    assert missing.status_code == 404
    assert missing.json()["error"] == "ArtifactNotFoundError"
    assert "'chart.png'" in missing.json()["message"]
    assert api.get(url(saved, "log.txt", 3)).status_code == 404
    assert api.get(url("no-such-execution", "x")).status_code == 404
    assert api.get(f"/api/executions/{saved}/artifacts/log.txt/0").status_code == 422
    assert api.get(f"/api/executions/{saved}/artifacts/log.txt/{2**31}").status_code == 422  # past the column
    assert api.get(f"/executions/{saved}/artifacts/log.txt?version={2**31}").status_code == 422
    for bad in ["tab\there", " leading", "x" * 201, "zero\u200bwidth"]:
        response = api.get(url(saved, bad))
        assert response.status_code == 422, (bad, response.text)
        assert set(response.json()) >= ERROR_SHAPE
    # dot segments encoded as %2E: decoded by the guard, then refused as a name (no other route is reached)
    for dots in ("%2E%2E", "%2e", "%2E%2E/1"):
        response = api.get(f"/api/executions/{saved}/artifacts/{dots}")
        assert response.status_code == 422, (dots, response.text)
        assert "URLs resolve" in response.json()["problems"][0]


@pytest.mark.parametrize("execution_id", ["art/../x", "q\"<b>'&amp;", "sp ace/100%"])
def test_hostile_names_address_exactly_their_own_artifact(api: TestClient, execution_id: str) -> None:
    with execution(execution_id, name="hostile"):
        for name in HOSTILE_NAMES:
            save(name, f"value of {name}")
    listed = api.get(f"/api/executions/{segment(execution_id)}/artifacts")
    assert sorted(row["name"] for row in listed.json()) == sorted(HOSTILE_NAMES)
    for name in HOSTILE_NAMES:
        response = api.get(url(execution_id, name))
        assert response.status_code == 200, (name, response.text)
        assert response.text == f"value of {name}"
        assert _disposition(response) == ("inline", name)
        response.headers["content-disposition"].encode("latin-1")  # one header line, nothing injected
        page = api.get(f"/executions/{segment(execution_id)}/artifacts/{segment(name)}")
        assert page.status_code == 200, name
        assert "<b>" not in page.text
    page = api.get(f"/executions/{segment(execution_id)}")
    assert page.status_code == 200
    assert "<b>" not in page.text
    for name in HOSTILE_NAMES:
        assert f"/artifacts/{segment(name)}?version=1" in page.text.replace("&amp;", "&")


def test_the_pages_preview_markdown_safely_and_show_images_text_and_json(api: TestClient, saved: str) -> None:
    markdown = api.get(f"/executions/{saved}/artifacts/notes.md")
    assert markdown.status_code == 200
    assert "<h1>Title</h1>" in markdown.text
    assert "<em>fine</em>" in markdown.text
    assert "<script>alert(1)" not in markdown.text  # raw HTML is shown as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markdown.text
    assert 'href="javascript:' not in markdown.text

    image = api.get(f"/executions/{saved}/artifacts/chart.png")
    assert f'<img src="{url(saved, "chart.png", 1)}"' in image.text

    text = api.get(f"/executions/{saved}/artifacts/log.txt?version=2")
    assert "second &lt;b&gt;bold&lt;/b&gt;" in text.text
    assert 'class="version current"' in text.text

    data = api.get(f"/executions/{saved}/artifacts/data")
    assert "&#34;rows&#34;" in data.text or "&quot;rows&quot;" in data.text

    svg = api.get(f"/executions/{saved}/artifacts/page.svg")
    assert "No preview for application/octet-stream" in svg.text
    assert "onload" not in svg.text

    assert api.get(f"/executions/{saved}/artifacts/nope").status_code == 404
    overview = api.get(f"/executions/{saved}")
    assert "notes.md" in overview.text
    assert "metadata" in overview.text
    assert "ana" in overview.text


def test_pickled_artifacts_are_never_served(api: TestClient) -> None:
    kitaru_core.configure(allow_pickle=True)
    with execution("pickled", name="pickles"):
        save("obj", Plain())  # a plain class: only pickle stores it
    kitaru_core.configure(allow_pickle=False)
    response = api.get(url("pickled", "obj"))
    assert response.status_code == 409
    assert "pickle" in response.json()["message"]
    page = api.get("/executions/pickled/artifacts/obj")
    assert page.status_code == 200
    assert "never loaded for display" in page.text


def test_reads_need_the_token_when_reads_are_closed(sqlite_store: tuple[str, str], tmp_path: Path) -> None:
    with execution("closed", name="reports"):
        save("secret.txt", "s3cret")
    with make_api(sqlite_store, tmp_path, open_reads=False) as closed:
        assert closed.get(url("closed", "secret.txt")).status_code == 401
        assert closed.get("/api/executions/closed/artifacts").status_code == 401
        allowed = closed.get(url("closed", "secret.txt"), headers=bearer())
        assert allowed.status_code == 200
        assert allowed.text == "s3cret"
