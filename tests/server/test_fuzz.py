"""Property-based fuzz of the published OpenAPI schema (schemathesis): no request makes a server error.

The same fuzz runs against a store on SQLite and on PostgreSQL, each holding waiting executions with
a large stored output, some with hostile ids (`/`, `%2F`, dot segments, quotes, HTML) and an approval
whose tool-call id is hostile. Besides what schemathesis generates from the schema, path parameters
are drawn from those hostile ids and wait names. Every request carries the token, so it reaches past
authentication.
"""

from __future__ import annotations

import atexit
import contextlib
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

import sqlalchemy  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    response_schema_conformance,
    status_code_conformance,
)

import kitaru_core  # noqa: E402
from kitaru_core import approval_wait_name, execution, request_approval  # noqa: E402
from kitaru_core.errors import ExecutionWaitingError  # noqa: E402
from kitaru_core.server import ServerSettings, create_app  # noqa: E402
from tests.conftest import POSTGRES_URL, REQUIRE_POSTGRES, postgres_available  # noqa: E402
from tests.server import flows  # noqa: E402
from tests.server.conftest import TOKEN  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def _fuzz_settings(max_examples: int) -> Any:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


# Examples per operation: the default run's small fuzz, and the full one (marked slow: `nox -s slow`).
FUZZ_SETTINGS = _fuzz_settings(15)
FULL_FUZZ_SETTINGS = _fuzz_settings(60)
POSTGRES_DATABASE = f"kitaru_fuzz_{uuid.uuid4().hex[:10]}"
# Stored executions with these ids wait at an approval (ids made only of dots are left out: HTTP
# clients resolve them as dot segments before sending, so they never reach the server as ids).
HOSTILE_IDS = ["a/b", "a%2Fb", "x/../y", "../../fuzz-1", "q\"<b>'&", "sp ace/100%"]
DESKS = ["fuzz-1/waits/x", "desk/../fuzz-2"]
HOSTILE_WAIT_NAMES = [
    "approve:issue_refund:call-1",
    approval_wait_name("lookup", flows.HOSTILE_LOOKUP_ID),
    approval_wait_name("wire_money", flows.HOSTILE_WIRE_ID),
    "../../fuzz-2/waits/approve:issue_refund:call-1",
]


def _app(url: str) -> Any:
    """The app on a store at `url` holding two waiting executions (one output in the artifact store)."""
    folder = Path(tempfile.mkdtemp(prefix="kitaru-fuzz-"))
    artifacts = str(folder / "artifacts")
    kitaru_core.configure(store_url=url, artifacts_url=artifacts, inline_limit_bytes=512, reset=True)
    try:
        for execution_id in ("fuzz-1", "fuzz-2", *HOSTILE_IDS):
            with contextlib.suppress(ExecutionWaitingError):
                flows.refund_order.run("Z-1", 5, execution_id=execution_id)
        for execution_id, tool, call_id in [
            (DESKS[0], "lookup", flows.HOSTILE_LOOKUP_ID),
            (DESKS[1], "wire_money", flows.HOSTILE_WIRE_ID),
        ]:
            with contextlib.suppress(ExecutionWaitingError), execution(execution_id, name="desk"):
                request_approval(tool, {"amount": 5000}, call_id=call_id)
    finally:
        kitaru_core.configure(reset=True)
    settings_ = ServerSettings(
        token=TOKEN,
        open_reads=True,
        store_url=url,
        artifacts_url=artifacts,
        resume_log_dir=folder / "logs",
        allowed_hosts=("testserver", "localhost"),
    )
    return create_app(settings_)


def _hostile_path_parameters(_context: Any, path_parameters: dict[str, Any] | None) -> Any:
    """Generated path parameters, or the same with hostile stored ids and wait names."""
    if not path_parameters:
        return st.just(path_parameters)

    def hostile(execution_id: str, wait_name: str) -> dict[str, Any]:
        replaced = dict(path_parameters)
        if "execution_id" in replaced:
            replaced["execution_id"] = execution_id
        if "wait_name" in replaced:
            replaced["wait_name"] = wait_name
        return replaced

    chosen = st.builds(
        hostile, st.sampled_from(["fuzz-1", *HOSTILE_IDS, *DESKS]), st.sampled_from(HOSTILE_WAIT_NAMES)
    )
    return st.one_of(st.just(path_parameters), chosen)


def _schema(url: str) -> Any:
    # the event stream never ends by itself: it has its own tests (test_live.py)
    schema = schemathesis.openapi.from_asgi("/openapi.json", _app(url)).exclude(path="/api/events")
    schema.hook("flatmap_path_parameters")(_hostile_path_parameters)
    return schema


def _postgres_url() -> str | None:
    """A fresh database for this module (dropped when the test process exits, run or deselected)."""
    if not postgres_available():
        return None
    admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{POSTGRES_DATABASE}"')
    admin.dispose()
    atexit.register(_drop_postgres_database)
    return POSTGRES_URL.rsplit("/", 1)[0] + f"/{POSTGRES_DATABASE}"


def _drop_postgres_database() -> None:
    admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{POSTGRES_DATABASE}" WITH (FORCE)')
    admin.dispose()


sqlite_schema = _schema(f"sqlite:///{Path(tempfile.mkdtemp(prefix='kitaru-fuzz-')) / 'kitaru.db'}")
postgres_url = _postgres_url()


@pytest.fixture(autouse=True)
def _no_background_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fuzzed resumes must not spawn processes: a started resume is replaced by a recorded pid."""
    from kitaru_core import Client

    monkeypatch.setattr(Client, "resume_in_background", lambda self, execution_id, **_options: 4242)  # pyright: ignore[reportUnknownLambdaType]


def _call(case: Any) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
    case.call_and_validate(checks=CHECKS)


@sqlite_schema.parametrize()
@FUZZ_SETTINGS
def test_no_request_makes_a_server_error_on_sqlite(case: Any) -> None:
    _call(case)


@pytest.mark.slow
@sqlite_schema.parametrize()
@FULL_FUZZ_SETTINGS
def test_no_request_makes_a_server_error_on_sqlite_at_full_size(case: Any) -> None:
    _call(case)


if postgres_url is not None:
    postgres_schema = _schema(postgres_url)

    @pytest.mark.postgres
    @postgres_schema.parametrize()
    @FUZZ_SETTINGS
    def test_no_request_makes_a_server_error_on_postgres(case: Any) -> None:
        _call(case)

    @pytest.mark.slow
    @pytest.mark.postgres
    @postgres_schema.parametrize()
    @FULL_FUZZ_SETTINGS
    def test_no_request_makes_a_server_error_on_postgres_at_full_size(case: Any) -> None:
        _call(case)

else:

    @pytest.mark.postgres
    def test_no_request_makes_a_server_error_on_postgres() -> None:
        if REQUIRE_POSTGRES:
            pytest.fail(
                f"PostgreSQL is required (KITARU_REQUIRE_POSTGRES=1) but {POSTGRES_URL} does not answer."
            )
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} does not answer")
