"""Shared test setup: no internet, a temporary HOME, framework telemetry off, one store per test."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kitaru_core
from kitaru_core._store import close_stores

POSTGRES_URL = os.environ.get("KITARU_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_POSTGRES = os.environ.get("KITARU_REQUIRE_POSTGRES") == "1"

_original_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            allowed = ipaddress.ip_address(host).is_loopback
        except ValueError:
            allowed = host == "localhost"
        if not allowed:
            raise ConnectionRefusedError(
                f"tests may not reach the network: refused connection to {address!r}"
            )
    return _original_connect(self, address)


@pytest.fixture(autouse=True, scope="session")
def _no_internet() -> Iterator[None]:
    socket.socket.connect = _loopback_only  # type: ignore[method-assign]
    yield
    socket.socket.connect = _original_connect  # type: ignore[method-assign]


@pytest.fixture(autouse=True, scope="session")
def _quiet_frameworks(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("home")
    os.environ.update(
        {
            "HOME": str(home),
            "CREWAI_DISABLE_TELEMETRY": "true",
            "CREWAI_TRACING_ENABLED": "false",
            "OPENAI_AGENTS_DISABLE_TRACING": "1",
            "OTEL_SDK_DISABLED": "true",
            "LOGFIRE_IGNORE_NO_CONFIG": "1",
            "OPENAI_API_KEY": "test-key-not-used",
            "KITARU_INTERACTIVE": "false",
        }
    )


def postgres_available() -> bool:
    """Whether the test PostgreSQL server answers."""
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(POSTGRES_URL)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


def _new_postgres_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database named `prefix` + a random part: its URL; dropped afterwards.

    Skips the test (fails it with `KITARU_REQUIRE_POSTGRES=1`) when the server does not answer.
    The stores this process opened on it are closed before it is dropped.
    """
    if not postgres_available():
        if REQUIRE_POSTGRES:
            pytest.fail(
                f"PostgreSQL is required (KITARU_REQUIRE_POSTGRES=1) but {POSTGRES_URL} does not answer."
            )
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} does not answer")
    import sqlalchemy

    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    close_stores(url)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    yield from _new_postgres_database("kitaru_test_")


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """An empty PostgreSQL database of the test's own (no schema yet), dropped afterwards."""
    yield from _new_postgres_database("kitaru_fresh_")


def _truncate_postgres(url: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        exists = connection.exec_driver_sql("SELECT to_regclass('kitaru_executions')").scalar()
        if exists:
            connection.exec_driver_sql(
                "TRUNCATE kitaru_waits, kitaru_checkpoint_calls, kitaru_executions RESTART IDENTITY CASCADE"
            )
    engine.dispose()


@pytest.fixture
def sqlite_file_store(tmp_path: Path) -> Iterator[str]:
    """Configure kitaru_core to use a fresh SQLite file; yields its URL."""
    url = f"sqlite:///{tmp_path / 'kitaru.db'}"
    kitaru_core.configure(store_url=url, artifacts_url=str(tmp_path / "artifacts"), reset=True)
    yield url
    kitaru_core.configure(reset=True)


BACKENDS = ["sqlite-memory", "sqlite-file", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Configure kitaru_core for each backend in turn; yields the store URL."""
    if request.param == "sqlite-memory":
        url = "sqlite://"
        close_stores(url)
    elif request.param == "sqlite-file":
        url = f"sqlite:///{tmp_path / 'kitaru.db'}"
    else:
        url = request.getfixturevalue("postgres_database")
        _truncate_postgres(url)
    kitaru_core.configure(
        store_url=url,
        artifacts_url=f"memory://kitaru-{uuid.uuid4().hex[:8]}",
        inline_limit_bytes=1024,
        reset=True,
    )
    yield url
    kitaru_core.configure(reset=True)
    if request.param == "postgres":
        close_stores(url)


@pytest.fixture(params=["sqlite-file", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store several processes share: a SQLite file or a fresh PostgreSQL database."""
    if request.param == "sqlite-file":
        url = f"sqlite:///{tmp_path / 'kitaru.db'}"
    else:
        url = request.getfixturevalue("postgres_database")
        _truncate_postgres(url)
    kitaru_core.configure(store_url=url, artifacts_url=str(tmp_path / "artifacts"), reset=True)
    yield url
    kitaru_core.configure(reset=True)
    if request.param == "postgres":
        close_stores(url)


def slow_beyond(cases: list[Any], keep: list[Any]) -> list[Any]:
    """`cases` for `pytest.mark.parametrize`, each one not in `keep` marked `slow`.

    The default `nox` run leaves `slow` out (`-m "not slow"`) and runs only the cases in `keep`,
    a small version of the test; `nox -s slow` runs the rest. A case is a value, or a tuple of
    values when the test is parametrized by several names; the ids stay the ones pytest gives
    the bare values.
    """
    missing = [case for case in keep if case not in cases]
    if missing:
        raise ValueError(f"slow_beyond: the cases to keep {missing!r} are not among the cases")
    return [
        pytest.param(
            *(case if isinstance(case, tuple) else (case,)),
            marks=() if case in keep else pytest.mark.slow,
        )
        for case in cases
    ]


# -- README snippets run as programs -------------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_snippet(heading: str) -> str:
    """The first python block of README.md's section `## heading` (an edit of the README changes what runs)."""
    section = README.read_text(encoding="utf-8").split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, f"README.md has a python snippet under ## {heading}"
    return match.group(1)


@pytest.fixture
def readme_project(tmp_path: Path) -> Iterator[Path]:
    """A fresh project directory; the test process reads its default store `./.kitaru/kitaru.db`."""
    folder = tmp_path / "project"
    folder.mkdir()
    kitaru_core.configure(store_url=f"sqlite:///{folder / '.kitaru' / 'kitaru.db'}", reset=True)
    yield folder
    kitaru_core.configure(reset=True)


def run_in(
    project: Path, environment: dict[str, str], *argv: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `argv` in `project` with `environment`; its output captured as text, its exit code not checked."""
    return subprocess.run(
        list(argv), cwd=project, env=environment, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def approve_from_the_cli(project: Path, environment: dict[str, str], execution_id: str, wait_name: str) -> None:
    """`kitaru-adapters executions answer ID WAIT --approve`, as a person would, in `project`."""
    answered = run_in(
        project,
        environment,
        sys.executable,
        "-m",
        "kitaru_core.cli",
        "executions",
        "answer",
        execution_id,
        wait_name,
        "--approve",
        timeout_s=60,
    )
    assert answered.returncode == 0, answered.stdout + answered.stderr

