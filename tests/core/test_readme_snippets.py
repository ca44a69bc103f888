"""README.md's core snippets as written: the core in five lines, the database block, the workers line.

Each snippet is cut out of README.md by the heading it stands under, so an edit of the README
changes what runs here. The Python runs unchanged in a fresh directory (a driver imports it or
calls what it defines), the `kitaru-adapters` lines run as the installed console script, and every
other shell line of the README is checked against what it names (nox sessions, extras, settings).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import kitaru_core
from kitaru_core import Client
from tests.core.test_production_docs import _known_variables, parse_cli  # pyright: ignore[reportPrivateUsage]

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def section(heading: str) -> str:
    """The README's text under `## heading`, up to the next `## ` heading."""
    text = README.read_text(encoding="utf-8")
    parts = re.split(r"^## ", text, flags=re.MULTILINE)
    [body] = [part for part in parts if part.startswith(heading + "\n")]
    return body


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def console_script() -> str:
    """`kitaru-adapters` as the shell finds it: the console script installed beside this Python."""
    found = shutil.which("kitaru-adapters", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"kitaru-adapters is not installed beside {sys.executable}")
    return found


def fresh_environment(*import_path: Path) -> dict[str, str]:
    """The test's environment without any KITARU_ setting: a project directory's defaults apply.

    Args:
        *import_path: Folders put first on `PYTHONPATH` (the checkout's folders follow them).
    """
    environment = {key: value for key, value in os.environ.items() if not key.startswith("KITARU_")}
    environment["KITARU_INTERACTIVE"] = "false"
    environment["PYTHONPATH"] = os.pathsep.join(
        [*map(str, import_path), str(REPO / "core"), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return environment


def run(argv: list[str], cwd: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, cwd=cwd, env=fresh_environment(), capture_output=True, text=True, timeout=120, check=False
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A fresh project directory; the test process reads its default store `./.kitaru/kitaru.db`."""
    folder = tmp_path / "project"
    folder.mkdir()
    kitaru_core.configure(
        store_url=f"sqlite:///{folder / '.kitaru' / 'kitaru.db'}",
        artifacts_url=str(folder / ".kitaru" / "artifacts"),
        reset=True,
    )
    yield folder
    kitaru_core.configure(reset=True)


# -- The core in five lines ----------------------------------------------------------------------

DRIVER = """
import sys

from kitaru_core.errors import ExecutionWaitingError
from support import handle

try:
    print("output:", repr(handle("t-1")))
except ExecutionWaitingError as error:
    print("waiting:", error.execution_id, [wait.name for wait in error.waits])
"""


def test_the_core_in_five_lines_waits_for_the_cli_answer_and_finishes_without_drafting_again(
    project: Path,
) -> None:
    text = section("The core in five lines")
    [snippet] = blocks(text, "python")
    (project / "support.py").write_text(snippet, encoding="utf-8")
    (project / "driver.py").write_text(DRIVER, encoding="utf-8")

    first = run([sys.executable, "driver.py"], project)
    match = re.fullmatch(r"waiting: (\S+) \['wait-1'\]\n", first.stdout)
    assert match is not None, first.stdout + first.stderr  # stops with ExecutionWaitingError at wait-1
    execution_id = match.group(1)
    assert Client().get_execution(execution_id).status == "waiting"

    # the README's answer line, with the execution's id for ID
    [answer_line] = re.findall(r"`(kitaru-adapters executions answer ID [^`]+)`", text)
    argv = shlex.split(answer_line.replace(" ID ", f" {execution_id} "))
    run([console_script(), *argv[1:]], project)

    second = run([sys.executable, "driver.py"], project)
    assert second.stdout == "output: None\n", second.stdout + second.stderr  # `...` drafts None
    execution = Client().get_execution(execution_id)
    assert execution.status == "completed"
    assert [(call.key, call.status, call.source) for call in execution.calls] == [
        ("draft_reply:0", "completed", "store")  # not drafted again
    ]

    # the other way the README names: `kitaru-adapters executions resume ID`
    (project / "driver.py").write_text(DRIVER.replace('"t-1"', '"t-2"'), encoding="utf-8")
    waiting = run([sys.executable, "driver.py"], project).stdout
    other_id = waiting.split()[1]
    run([console_script(), *argv[1:3], other_id, *argv[4:]], project)
    [resume_line] = re.findall(r"`(kitaru-adapters executions resume ID)`", text)
    resumed = run([console_script(), *shlex.split(resume_line.replace(" ID", f" {other_id}"))[1:]], project)
    assert Client().get_execution(other_id).status == "completed", resumed.stdout
    assert [call.source for call in Client().get_execution(other_id).calls] == ["store"]


# -- Use your own database -----------------------------------------------------------------------

SHOW_SETTINGS = (
    "import json, kitaru_core._config as c; s = c.current_settings(); "
    "print(json.dumps({'store_url': s.store_url, 'artifacts_url': s.artifacts_url}))"
)


def test_the_own_database_block_sets_the_store_and_the_artifact_store_it_names(tmp_path: Path) -> None:
    [block] = blocks(section("Use your own database"), "bash")
    exports = [line for line in block.splitlines() if line.startswith("export ")]
    assert len(exports) == 2
    # the block's export lines run in bash as written; a Python started after them reads them
    shown = run(
        [
            "bash",
            "-c",
            "\n".join([*exports, f"{shlex.quote(sys.executable)} -c {shlex.quote(SHOW_SETTINGS)}"]),
        ],
        tmp_path,
    )
    settings = json.loads(shown.stdout)
    expected = {
        shlex.split(line)[1].split("=", 1)[0]: shlex.split(line)[1].split("=", 1)[1] for line in exports
    }
    assert settings == {
        "store_url": expected["KITARU_STORE_URL"],
        "artifacts_url": expected["KITARU_ARTIFACTS_URL"],
    }
    # the URL names the driver the `postgres` extra installs (psycopg 3), and the scheme s3fs serves
    import sqlalchemy

    url = sqlalchemy.engine.make_url(settings["store_url"])
    assert url.get_dialect().driver == "psycopg"
    assert settings["artifacts_url"].startswith("s3://")


# -- Workers: the worker line --------------------------------------------------------------------

JOBS_SUBMIT = """
from kitaru_core import Client

from jobs import welcome

first = welcome.submit("ana@example.com")
second = Client().submit("jobs:welcome", "bob@example.com", execution_id="welcome-bob")
print(first, second)
"""


def jobs_module() -> str:
    """The `jobs` module of docs/workers.md, which the README's line imports."""
    page = (REPO / "docs" / "workers.md").read_text(encoding="utf-8")
    [module] = [block for block in blocks(page, "python") if block.startswith("# jobs.py\n")]
    return module


def test_the_workers_line_runs_submitted_executions_and_stops_on_sigterm(project: Path) -> None:
    """The README's worker line, run by the console script in the folder of docs/workers.md's jobs.py.

    Nothing else puts that folder on the import path: the console script's `worker` and
    `executions submit` look in the working directory first, as `python -m` would.
    """
    [line] = [
        line for block in blocks(section("Workers: executions that resume on their own"), "bash")
        for line in block.splitlines() if line.strip()
    ]  # fmt: skip
    argv = shlex.split(line)
    assert argv[0] == "kitaru-adapters"
    assert parse_cli(argv[1:])[0] == "kitaru-adapters worker"
    (project / "jobs.py").write_text(jobs_module(), encoding="utf-8")
    (project / "submit.py").write_text(JOBS_SUBMIT, encoding="utf-8")
    first, second = run([sys.executable, "submit.py"], project).stdout.split()
    assert second == "welcome-bob"
    submitted = run(
        [console_script(), "executions", "submit", "jobs:welcome", "--args", '["cy@example.com"]', "--json"],
        project,
    )
    third = json.loads(submitted.stdout)["execution_id"]
    client = Client()
    executions = (first, second, third)
    assert [client.get_execution(execution_id).status for execution_id in executions] == ["queued"] * 3

    log = project / "worker.log"
    with log.open("wb") as output:
        worker = subprocess.Popen(
            [console_script(), *argv[1:]],
            cwd=project,
            env=fresh_environment(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while any(client.get_execution(execution_id).status != "completed" for execution_id in executions):
            if time.monotonic() > deadline or worker.poll() is not None:
                pytest.fail("the worker did not complete the submitted executions:\n" + log.read_text())
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert client.get_output(first) == "sent to ana@example.com"
    assert client.get_output(second) == "sent to bob@example.com"
    assert client.get_output(third) == "sent to cy@example.com"
    listed = run([console_script(), "workers", "list", "--json"], project)
    [record] = json.loads(listed.stdout)
    assert (record["pid"], record["state"], record["queues"], record["concurrency"]) == (
        worker.pid,
        "stopped",
        ["default"],
        4,
    )


# -- every other shell line ----------------------------------------------------------------------


def nox_sessions() -> set[str]:
    source = (REPO / "noxfile.py").read_text(encoding="utf-8")
    return set(re.findall(r"@nox\.session\([^)]*\)\ndef (\w+)\(", source))


def test_every_shell_line_of_the_readme_names_a_real_session_extra_command_or_setting() -> None:
    """The lines the tests above and beside do not run: each is checked against what it names.

    `nox` lines name sessions of noxfile.py; `pip install` lines name extras of pyproject.toml;
    `export` lines set variables kitaru reads; `kitaru-adapters` lines parse with the CLI (the
    serve line runs in tests/server/test_readme_serve.py, the worker line above); the one `curl`
    line runs in tests/server/test_webhook_example.py.
    """
    with open(REPO / "pyproject.toml", "rb") as handle:
        extras = set(tomllib.load(handle)["project"]["optional-dependencies"])
    sessions = nox_sessions()
    assert {"demo", "tests_core", "docs"} <= sessions
    kinds: list[str] = []
    for block in blocks(README.read_text(encoding="utf-8"), "bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if not words:
                continue
            kinds.append(words[0])
            if words[0] == "nox":
                assert words[1:] == [] or (words[1] == "-s" and words[2] in sessions and len(words) == 3), (
                    line
                )
            elif words[:2] == ["pip", "install"]:
                [requirement] = words[2:]
                match = re.fullmatch(r"kitaru-adapters\[([a-z0-9,-]+)\]", requirement)
                assert match is not None, line
                assert set(match.group(1).split(",")) <= extras, line
            elif words[0] == "export":
                [assignment] = words[1:]
                assert assignment.split("=", 1)[0] in _known_variables(), line
            elif words[0] == "kitaru-adapters":
                parse_cli(words[1:])
            elif words[0] == "curl":
                assert line.startswith("curl -X POST")  # the line test_webhook_example.py runs
            else:
                pytest.fail(f"a shell line in README.md no test checks: {line!r}")
    assert kinds.count("nox") >= 5
    assert kinds.count("pip") == 2
    assert kinds.count("kitaru-adapters") == 2
    # "add s3 for s3:// artifacts": the extra the own-database block's comment names
    assert "s3" in extras
