"""docs/production.md run as written on a fresh PostgreSQL database: the migration Job, the server, the token lines.

tests/core/test_production_docs.py parses every command of the page, and
tests/core/test_s3_artifacts.py runs the worker Deployment's command. Here the migration Job's
command and the server Deployment's command and arguments run as the installed console script,
with the environment their manifests give them. What a test machine cannot give is replaced, and
only that: the Secret's `store-url` by a fresh database on the test PostgreSQL server, the S3
artifact store by a local folder (the server must not reach AWS from here; no AWS variable is
passed), the container port 8765 by a free port and the `/var/lib/kitaru` volume by a temporary
folder. The server token is the Secret's value as written. Then the page's shell lines under "The
server" run (`tokens create --name ana`, `workers list`), and the server accepts ana's token.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
import yaml

from kitaru_core.migrations import SCHEMA_REVISION
from tests.server.conftest import REPO, free_port

PAGE = REPO / "docs" / "production.md"
SERVER_NAME = "kitaru.example.com"


def manifests() -> dict[str, dict[str, Any]]:
    text = PAGE.read_text(encoding="utf-8")
    documents = [
        document
        for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
        for document in yaml.safe_load_all(block)
        if document
    ]
    return {f"{document['kind']}/{document['metadata']['name']}": document for document in documents}


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    [only] = manifest["spec"]["template"]["spec"]["containers"]
    return only


def section_shell_lines(heading: str) -> list[str]:
    text = PAGE.read_text(encoding="utf-8").split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [
        line for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
        for line in block.splitlines() if line.strip()
    ]  # fmt: skip


def console_script() -> str:
    found = shutil.which("kitaru-adapters", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"kitaru-adapters is not installed beside {sys.executable}")
    return found


def pod_environment(
    spec: dict[str, Any], secret: dict[str, str], replacements: dict[str, str]
) -> dict[str, str]:
    """The container's `env` resolved against the Secret, with `replacements` applied, over a clean base.

    Variables whose replacement is `""` are left out (the AWS ones).
    """
    base = {key: value for key, value in os.environ.items() if not key.startswith(("KITARU_", "AWS_"))}
    resolved: dict[str, str] = {}
    for variable in spec["env"]:
        reference = variable.get("valueFrom", {}).get("secretKeyRef")
        value = secret[reference["key"]] if reference is not None else variable["value"]
        value = replacements.get(variable["name"], value)
        if value != "":
            resolved[variable["name"]] = value
    return base | resolved


def schema_revision(url: str) -> str | None:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            if connection.exec_driver_sql("SELECT to_regclass('kitaru_alembic_version')").scalar() is None:
                return None
            return connection.exec_driver_sql("SELECT version_num FROM kitaru_alembic_version").scalar()
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_migration_job_the_server_deployment_and_the_token_lines_run_as_the_page_gives_them(
    fresh_database: str, tmp_path: Path
) -> None:
    documents = manifests()
    secret: dict[str, str] = documents["Secret/kitaru"]["stringData"]
    work = tmp_path / "image"  # the container's working directory
    work.mkdir()
    volume = tmp_path / "volume"
    replacements = {
        "KITARU_STORE_URL": fresh_database,
        "KITARU_ARTIFACTS_URL": str(tmp_path / "artifacts"),
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_DEFAULT_REGION": "",
    }

    # the migration Job: an empty database gets the whole schema
    job = container(documents["Job/kitaru-migrate-1-0"])
    assert schema_revision(fresh_database) is None
    migrated = subprocess.run(
        [console_script(), *job["command"][1:], *job.get("args", [])],
        cwd=work,
        env=pod_environment(job, secret, replacements),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert f"schema revision none -> {SCHEMA_REVISION}" in " ".join(migrated.stdout.split())
    assert schema_revision(fresh_database) == SCHEMA_REVISION

    # the server Deployment
    server = container(documents["Deployment/kitaru-server"])
    argv = [*server["command"], *server["args"]]
    [mount] = server["volumeMounts"]
    port = free_port()
    argv[argv.index("--port") + 1] = str(port)
    log_dir = argv[argv.index("--log-dir") + 1]
    argv[argv.index("--log-dir") + 1] = str(volume / Path(log_dir).relative_to(mount["mountPath"]))
    server_environment = pod_environment(server, secret, replacements)
    token = secret["server-token"]
    process = subprocess.Popen(
        [console_script(), *argv[1:]],
        cwd=work,
        env=server_environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    as_clients_call_it = {"Host": SERVER_NAME}
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the server did not answer:\n" + (process.communicate(timeout=10)[0] or ""))
            try:
                login = httpx.get(f"{url}/login", headers=as_clients_call_it, timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert login.status_code == 200, login.text
        assert "token" in login.text.lower()
        assert httpx.get(f"{url}/login", headers={"Host": "elsewhere.example"}, timeout=5).status_code == 400
        # on 0.0.0.0 reads need a token too: the server's own (the Secret's) is accepted
        assert httpx.get(f"{url}/api/executions", headers=as_clients_call_it, timeout=5).status_code == 401
        own = httpx.get(
            f"{url}/api/executions",
            headers={**as_clients_call_it, "Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert (own.status_code, own.json()["total"]) == (200, 0)

        # the page's lines under "The server", run where the server runs, on the same store
        lines = section_shell_lines("The server")
        assert lines[0].startswith("kitaru-adapters serve ")
        printed: dict[str, str] = {}
        for line in lines[1:]:
            words = shlex.split(line, comments=True)
            assert words[0] == "kitaru-adapters", line
            done = subprocess.run(
                [console_script(), *words[1:]],
                cwd=work,
                env=server_environment,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, line + "\n" + done.stdout + done.stderr
            printed[" ".join(words[1:3])] = done.stdout
        assert set(printed) == {"tokens create", "workers list"}
        ana = printed["tokens create"].split()[-1]  # the secret, printed on its own line
        assert len(ana) >= 16
        assert ana != token
        as_ana = httpx.get(
            f"{url}/api/workers", headers={**as_clients_call_it, "Authorization": f"Bearer {ana}"}, timeout=5
        )
        assert (as_ana.status_code, as_ana.json()) == (200, [])
        wrong = httpx.get(
            f"{url}/api/workers", headers={**as_clients_call_it, "Authorization": f"Bearer {ana}x"}, timeout=5
        )
        assert wrong.status_code == 403
        cancelled_by_ana = httpx.post(
            f"{url}/api/executions/no-such-execution/cancel",
            headers={**as_clients_call_it, "Authorization": f"Bearer {ana}"},
            timeout=5,
        )
        assert cancelled_by_ana.status_code == 404  # a write ana may make; there is nothing to cancel
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    [hosts] = [line for line in output.splitlines() if line.startswith("Host names answered: ")]
    assert SERVER_NAME in hosts
    assert "reads need the token" in output
