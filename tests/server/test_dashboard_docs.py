"""docs/dashboard.md's HTTP API table names every route of the API, and only those.

The table lists each operation as `METHOD /path?query`, a path's optional tail in brackets
(`/artifacts/{name}[/{version}]`); parameter names in the table are short (`{id}` for
`{execution_id}`), so both sides are compared with each `{...}` made `{}`.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.routing import APIRoute

from kitaru_core.server import ServerSettings, create_app
from tests.server.conftest import REPO, TOKEN


def documented_operations() -> set[tuple[str, str]]:
    page = (REPO / "docs" / "dashboard.md").read_text(encoding="utf-8")
    table = page.split("\n## HTTP API\n", 1)[1]
    operations: set[tuple[str, str]] = set()
    for method, target in re.findall(
        r"^\| `(GET|POST|PUT|PATCH|DELETE) (/[^`]*)` \|", table, flags=re.MULTILINE
    ):
        path = target.split("?", 1)[0]
        optional = re.fullmatch(r"(.*)\[(.*)\]", path)
        variants = [optional.group(1), optional.group(1) + optional.group(2)] if optional else [path]
        operations |= {(method, re.sub(r"\{[^}]*\}", "{}", variant)) for variant in variants}
    return operations


def test_the_api_table_lists_every_route_of_the_api(tmp_path: Path) -> None:
    app = create_app(ServerSettings(token=TOKEN, store_url=f"sqlite:///{tmp_path / 'kitaru.db'}"))
    served = {
        (method, re.sub(r"\{[^}]*\}", "{}", route.path))
        for route in app.routes
        if isinstance(route, APIRoute) and route.include_in_schema
        for method in route.methods or ()
    }
    assert ("GET", "/api/workers") in served
    assert documented_operations() == served
