"""Artifacts in Chromium: images show, hostile Markdown and text run no script, served text stays text."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest

from kitaru_core import execution, save
from tests.server.conftest import LiveServer
from tests.server.test_browser import browser, page, shoot  # noqa: F401  # the module's fixtures

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

HOSTILE_MARKDOWN = """# Quarterly report

<script>window.hacked = 1</script>
<img src=x onerror="window.hacked = 2">

[open me](javascript:window.hacked=3) and **bold** text.
"""


def one_pixel_png() -> bytes:
    """A valid 1x1 red PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_artifacts_preview_safely_in_the_browser(page: Any, live_server: LiveServer) -> None:  # noqa: F811
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    with execution("art <b>/1", name="reports"):
        save("chart.png", one_pixel_png())
        save("report.md", HOSTILE_MARKDOWN)
        save("page.html", "<script>window.hacked = 4</script><h1>not markup</h1>")

    page.goto("/executions/art%20%3Cb%3E%2F1")
    expect(page.locator("tr.artifact-row")).to_have_count(3)
    page.locator("tr.artifact-row a", has_text="report.md").click()
    expect(page.locator(".markdown h1")).to_have_text("Quarterly report")
    expect(page.locator(".markdown strong")).to_have_text("bold")
    expect(page.locator(".markdown")).to_contain_text("<script>window.hacked = 1</script>")  # shown as text
    assert page.locator(".markdown a[href^='javascript']").count() == 0
    assert page.locator(".markdown img").count() == 0
    shoot(page, "artifact-markdown")
    assert page.evaluate("window.hacked") is None

    page.goto("/executions/art%20%3Cb%3E%2F1/artifacts/chart.png")
    image = page.locator(".artifact-preview img")
    expect(image).to_have_count(1)
    page.wait_for_function("document.querySelector('.artifact-preview img').complete")
    assert page.evaluate("document.querySelector('.artifact-preview img').naturalWidth") == 1

    page.goto("/api/executions/art%20%3Cb%3E%2F1/artifacts/page.html")  # the raw value: text, never a page
    expect(page.locator("body")).to_contain_text("<script>window.hacked = 4</script>")
    assert page.locator("h1").count() == 0
    assert page.evaluate("window.hacked") is None
    assert dialogs == []
