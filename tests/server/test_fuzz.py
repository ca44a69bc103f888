"""Property-based fuzz of the published OpenAPI schema (schemathesis): no request makes a server error."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    response_schema_conformance,
    status_code_conformance,
)

import kitaru_core  # noqa: E402
from kitaru_core.errors import ExecutionWaitingError  # noqa: E402
from kitaru_core.server import ServerSettings, create_app  # noqa: E402
from tests.server import flows  # noqa: E402
from tests.server.conftest import TOKEN  # noqa: E402


def _app() -> object:
    """The app on a store holding a waiting execution, a completed one and a large output."""
    folder = Path(tempfile.mkdtemp(prefix="kitaru-fuzz-"))
    url = f"sqlite:///{folder / 'kitaru.db'}"
    kitaru_core.configure(
        store_url=url, artifacts_url=str(folder / "artifacts"), inline_limit_bytes=512, reset=True
    )
    try:
        for execution_id in ("fuzz-1", "fuzz-2"):
            with contextlib.suppress(ExecutionWaitingError):
                flows.refund_order.run("Z-1", 5, execution_id=execution_id)
    finally:
        kitaru_core.configure(reset=True)
    # a token for every request, so the fuzz reaches past authentication into the handlers
    return create_app(
        ServerSettings(
            token=TOKEN,
            open_reads=True,
            store_url=url,
            artifacts_url=str(folder / "artifacts"),
            resume_log_dir=folder / "logs",
        )
    )


schema = schemathesis.openapi.from_asgi("/openapi.json", _app()).exclude(path="/api/events")


@pytest.fixture(autouse=True)
def _no_background_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fuzzed resumes must not spawn processes: a started resume is replaced by a recorded pid."""
    from kitaru_core import Client

    monkeypatch.setattr(Client, "resume_in_background", lambda self, execution_id, log_path=None: 4242)  # pyright: ignore[reportUnknownLambdaType]


@schema.parametrize()
@settings(
    max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
def test_no_request_makes_a_server_error(case: schemathesis.Case) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance, response_schema_conformance])
