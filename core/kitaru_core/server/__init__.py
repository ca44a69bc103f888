"""The dashboard and HTTP API (the `server` extra): `kitaru-adapters serve`, or `create_app` for ASGI.

One FastAPI application serves a JSON API under `/api` (OpenAPI schema at `/openapi.json`, docs at
`/docs`) and a server-rendered dashboard: executions updated live over server-sent events, each
execution's timeline, and forms generated from each wait's JSON schema. Everything that changes
state needs the bearer token; reads are open when the server listens on loopback only.

Importing `kitaru_core` never imports this package (nor FastAPI).
"""

from kitaru_core.errors import MissingDependencyError

try:
    import fastapi as _fastapi  # noqa: F401  # pyright: ignore[reportUnusedImport]
    import jinja2 as _jinja2  # noqa: F401  # pyright: ignore[reportUnusedImport]
    import uvicorn as _uvicorn  # noqa: F401  # pyright: ignore[reportUnusedImport]
except ImportError as _missing:  # pragma: no cover - exercised in a subprocess test
    raise MissingDependencyError(_missing.name or "fastapi", "server") from _missing

from kitaru_core.server._app import create_app
from kitaru_core.server._settings import ServerSettings, load_or_create_token, serve

__all__ = ["ServerSettings", "create_app", "load_or_create_token", "serve"]
