"""`log`, `save` and `load`: round trips, versions, resumes and crashes, refused input, the CLI, the docs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

import kitaru_core
from kitaru_core import Client, RetryPolicy, checkpoint, flow, load, log, save, wait
from kitaru_core._runtime import get_store
from kitaru_core.cli import app
from kitaru_core.errors import (
    ArtifactNotFoundError,
    ConfigurationError,
    ExecutionNotFoundError,
    ExecutionWaitingError,
    InvalidIdError,
    SerializationError,
)
from tests._kill_inside import kill_when_inside

REPO = Path(__file__).resolve().parents[2]


class Report(BaseModel):
    title: str
    scores: list[float]


# -- round trips -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
        "# Title\n\nsome *markdown* ünïcode",
        {"a": [1, 2.5, None], "b": {"nested": True}},
        Report(title="q3", scores=[0.5, 1.0]),
        os.urandom(5000),  # more than the 1 KiB inline limit: kept in the artifact store
    ],
    ids=["bytes", "str", "dict", "pydantic", "large-bytes"],
)
def test_save_then_load_gives_the_same_value_of_the_same_type(store_url: str, value: Any) -> None:
    @flow(name="keeper")
    def keeper() -> tuple[int, str]:
        return save("thing", value), kitaru_core.current_execution().execution_id  # type: ignore[union-attr]

    version, execution_id = keeper()
    assert version == 1
    loaded = load(execution_id, "thing")
    assert loaded == value
    assert type(loaded) is type(value)
    assert Client().load_artifact(execution_id, "thing", 1) == value


def test_versions_count_per_name_and_load_reads_latest_or_given(store_url: str) -> None:
    @checkpoint
    def draft(text: str) -> int:
        return save("draft", text)

    @flow(name="writer")
    def writer() -> tuple[list[int], str]:
        versions = [draft("one"), draft("two"), save("notes", "n1"), save("draft", "three")]
        return versions, kitaru_core.current_execution().execution_id  # type: ignore[union-attr]

    versions, execution_id = writer()
    assert versions == [1, 2, 1, 3]
    assert load(execution_id, "draft") == "three"
    assert [load(execution_id, "draft", version) for version in (1, 2, 3)] == ["one", "two", "three"]
    listed = [(view.name, view.version, view.call_key) for view in Client().list_artifacts(execution_id)]
    assert listed == [("draft", 1, "draft:0"), ("draft", 2, "draft:1"), ("draft", 3, None), ("notes", 1, None)]


def test_media_types_are_guessed_from_the_value_and_the_name(store_url: str) -> None:
    @flow(name="media")
    def media() -> str:
        save("chart.png", b"\x89PNG\r\n\x1a\n0000")
        save("photo", b"\xff\xd8\xff\xe0rest")
        save("readme.md", "# hi")
        save("notes.txt", "plain")
        save("table.csv", b"a,b\n1,2\n")
        save("evil.svg", b"<svg onload=alert(1)>")
        save("data", {"x": 1})
        save("page", "<b>hi</b>", media_type="text/html")
        return kitaru_core.current_execution().execution_id  # type: ignore[union-attr]

    execution_id = media()
    types = {view.name: view.media_type for view in Client().list_artifacts(execution_id)}
    assert types == {
        "chart.png": "image/png",
        "photo": "image/jpeg",
        "readme.md": "text/markdown",
        "notes.txt": "text/plain",
        "table.csv": "text/csv",
        "evil.svg": "application/octet-stream",  # never an image: an SVG can carry scripts
        "data": "application/json",
        "page": "text/html",
    }


# -- metadata ----------------------------------------------------------------------------------------


def test_log_merges_and_is_shown_on_the_call_and_the_execution(store_url: str) -> None:
    @checkpoint
    def classify(text: str) -> str:
        log(label="draft", confidence=0.4)
        log(confidence=0.9, model={"name": "m"})
        return text.upper()

    @checkpoint
    def plain() -> int:
        return 1

    @flow(name="classifier")
    def classifier() -> str:
        log(customer="acme", tier="gold")
        classify("x")
        plain()
        log(tier="platinum")
        return kitaru_core.current_execution().execution_id  # type: ignore[union-attr]

    execution_id = classifier()
    detail = Client().get_execution(execution_id)
    assert detail.metadata == {"customer": "acme", "tier": "platinum"}
    assert [(call.key, call.metadata) for call in detail.calls] == [
        ("classify:0", {"label": "draft", "confidence": 0.9, "model": {"name": "m"}}),
        ("plain:0", {}),
    ]
    assert get_store().get_execution(execution_id).metadata == detail.metadata


def test_a_call_with_a_started_record_gets_its_metadata_when_it_completes(store_url: str) -> None:
    @checkpoint(on_interrupted="ask")
    def charge(amount: int) -> str:
        log(amount=amount, provider="acme")
        return f"charged {amount}"

    @flow(name="charging")
    def charging() -> str:
        return charge(5)

    assert charging() == "charged 5"
    [summary] = Client().list_executions(flow="charging")
    [call] = Client().get_execution(summary.id).calls
    assert (call.status, call.metadata) == ("completed", {"amount": 5, "provider": "acme"})


def test_a_replay_copies_calls_with_their_metadata_but_not_artifacts(store_url: str) -> None:
    @checkpoint
    def step() -> int:
        log(source="original")
        return save("kept", "in the original")

    @flow(name="replayed")
    def replayed() -> int:
        return step()

    replayed.run(execution_id="replay-source")
    new_id = Client().replay("replay-source", run=False)
    [call] = Client().get_execution(new_id).calls
    assert call.metadata == {"source": "original"}
    assert Client().list_artifacts(new_id) == []
    assert load("replay-source", "kept") == "in the original"


def test_a_failed_call_keeps_what_it_logged(store_url: str) -> None:
    @checkpoint
    def flaky() -> None:
        log(reason="upstream down")
        raise RuntimeError("boom")

    @flow(name="failing")
    def failing() -> None:
        flaky()

    with pytest.raises(RuntimeError, match="boom"):
        failing()
    [summary] = Client().list_executions(flow="failing")
    [call] = Client().get_execution(summary.id).calls
    assert (call.status, call.metadata) == ("failed", {"reason": "upstream down"})


def test_resume_adds_no_version_and_no_metadata(store_url: str) -> None:
    runs: list[str] = []

    @checkpoint
    def produce(n: int) -> int:
        runs.append("produce")
        log(stage="produced", n=n)
        return save("report", {"n": n})

    @flow(name="approval")
    def approval(n: int) -> list[int]:
        log(flow="approval", n=n)
        first = save("inputs", {"n": n})
        inner = produce(n)
        approved = wait("ok", question="publish?", schema=bool)
        return [first, inner, save("report", {"n": n, "approved": approved})]

    with pytest.raises(ExecutionWaitingError):
        approval.run(7, execution_id="art-resume")
    [inputs_before, _] = Client().list_artifacts("art-resume")
    Client().answer("art-resume", "ok", True)
    assert approval.run(7, execution_id="art-resume") == [1, 1, 2]
    assert runs == ["produce"]  # served on resume: its save and log did not run again
    assert [(view.name, view.version) for view in Client().list_artifacts("art-resume")] == [
        ("inputs", 1),
        ("report", 1),
        ("report", 2),
    ]
    assert Client().list_artifacts("art-resume")[0] == inputs_before  # saved again unchanged: untouched
    detail = Client().get_execution("art-resume")
    assert detail.metadata == {"flow": "approval", "n": 7}
    assert [(call.key, call.status, call.metadata) for call in detail.calls] == [
        ("produce:0", "completed", {"stage": "produced", "n": 7})
    ]
    assert load("art-resume", "report") == {"n": 7, "approved": True}


def test_a_retried_attempt_writes_into_the_same_version(store_url: str) -> None:
    attempts: list[int] = []

    @checkpoint(retry=RetryPolicy(max_attempts=3, initial_delay_s=0))
    def upload() -> int:
        attempts.append(len(attempts) + 1)
        version = save("upload", f"attempt {len(attempts)}")
        log(attempt=len(attempts))
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return version

    @flow(name="uploader")
    def uploader() -> int:
        return upload()

    assert uploader() == 1
    [summary] = Client().list_executions(flow="uploader")
    assert [(view.name, view.version) for view in Client().list_artifacts(summary.id)] == [("upload", 1)]
    assert load(summary.id, "upload") == "attempt 3"
    [call] = Client().get_execution(summary.id).calls
    assert (call.attempts, call.metadata) == (3, {"attempt": 3})


# -- a real process killed with SIGKILL --------------------------------------------------------------

CHILD_SCRIPT = """
import os
import sys
import time
from pathlib import Path

from kitaru_core import checkpoint, flow, log, save

BODIES = Path(sys.argv[1])


@checkpoint(name="produce")
def produce(n: int) -> int:
    with BODIES.open("a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()}\\n")
    version = save("report", {"n": n, "pid": os.getpid()})
    log(stage="produced", pid=os.getpid())
    if os.environ.get("HANG_INSIDE") == "1":
        print("INSIDE", flush=True)
        time.sleep(120)
    return version


@flow(name="reporting")
def reporting(n: int) -> list[int]:
    log(flow="reporting", n=n)
    first = save("inputs", {"n": n})
    inner = produce(n)
    final = save("report", "final")
    if os.environ.get("HANG_AFTER") == "1":
        print("INSIDE", flush=True)
        time.sleep(120)
    return [first, inner, final]


if __name__ == "__main__":
    print("RESULT", reporting.run(7, execution_id=sys.argv[2]), flush=True)
"""


@pytest.mark.parametrize("where", ["inside the call", "after the call"])
def test_killed_and_resumed_nothing_is_duplicated(shared_store: str, tmp_path: Path, where: str) -> None:
    script = tmp_path / "reporting.py"
    script.write_text(CHILD_SCRIPT, encoding="utf-8")
    bodies = tmp_path / "bodies.log"
    env = {
        **os.environ,
        "KITARU_STORE_URL": shared_store,
        "KITARU_ARTIFACTS_URL": str(tmp_path / "artifacts"),
        "KITARU_INTERACTIVE": "false",
    }
    command = [sys.executable, str(script), str(bodies), "crash-7"]
    hang = "HANG_INSIDE" if where == "inside the call" else "HANG_AFTER"
    kill_when_inside(command, env={**env, hang: "1"}, cwd=tmp_path)

    killed_pid = int(bodies.read_text(encoding="utf-8").split()[0])
    before = [(view.name, view.version) for view in Client().list_artifacts("crash-7")]
    if where == "inside the call":
        assert before == [("inputs", 1), ("report", 1)]  # saved by the body that was cut off
        assert Client().get_execution("crash-7").calls == []  # nothing it logged was written
    else:
        assert before == [("inputs", 1), ("report", 1), ("report", 2)]

    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "RESULT [1, 1, 2]"

    pids = [int(line) for line in bodies.read_text(encoding="utf-8").split()]
    assert [(view.name, view.version) for view in Client().list_artifacts("crash-7")] == [
        ("inputs", 1),
        ("report", 1),
        ("report", 2),
    ]
    detail = Client().get_execution("crash-7")
    assert detail.status == "completed"
    assert detail.metadata == {"flow": "reporting", "n": 7}
    [call] = detail.calls  # one record of the call: no duplicate, no leftover from the killed attempt
    if where == "inside the call":
        assert len(pids) == 2  # the body ran again after the kill
        assert pids[0] == killed_pid
        assert call.source == "live"
    else:
        assert pids == [killed_pid]  # served on resume: the body did not run again
        assert call.source == "store"
    # the call's metadata and version 1 of the report both come from the body that completed
    assert call.metadata == {"stage": "produced", "pid": pids[-1]}
    assert load("crash-7", "report", 1) == {"n": 7, "pid": pids[-1]}
    assert load("crash-7", "report") == "final"


# -- refused input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        (" padded", "white space"),
        ("line\nbreak", "control or invisible"),
        ("zero\u200bwidth", "control or invisible"),
        ("x" * 201, "more than 200"),
        (42, "not a str"),
        ("..", "URLs resolve"),
        (".", "URLs resolve"),
    ],
)
def test_bad_artifact_names_are_refused_with_the_rule(store_url: str, name: Any, problem: str) -> None:
    @flow(name="bad-names")
    def bad_names() -> None:
        save(name, "value")

    with pytest.raises(InvalidIdError, match=f"not a valid artifact name: .*{problem}"):
        bad_names()
    with pytest.raises(InvalidIdError, match="artifact name"):
        load("any-execution", name)


def test_hostile_names_are_stored_as_data_and_never_become_paths(store_url: str, tmp_path: Path) -> None:
    names = ["../../etc/passwd", "a/b%2F..%2f", "<script>alert(1)</script>", "$(rm -rf ~)", "'; DROP TABLE x;--"]

    @flow(name="hostile")
    def hostile() -> str:
        for name in names:
            save(name, f"value of {name}")
        return kitaru_core.current_execution().execution_id  # type: ignore[union-attr]

    execution_id = hostile()
    assert {view.name for view in Client().list_artifacts(execution_id)} == set(names)
    assert [load(execution_id, name) for name in names] == [f"value of {name}" for name in names]
    assert not (tmp_path.parent / "etc").exists()


def test_metadata_that_is_not_json_is_refused_naming_the_key(store_url: str) -> None:
    @checkpoint
    def step() -> None:
        log(fine=1, handle=object())

    @flow(name="bad-metadata")
    def bad_metadata() -> None:
        step()

    with pytest.raises(SerializationError, match=r"'handle' \(object\) is not JSON-able.*save\('handle'"):
        bad_metadata()


def test_oversized_metadata_and_bad_keys_are_refused(store_url: str) -> None:
    @flow(name="big-metadata")
    def big_metadata() -> None:
        log(**{"bad\x00key": 1})

    with pytest.raises(InvalidIdError, match=r"log\(\): the key"):
        big_metadata()

    @flow(name="huge-metadata")
    def huge_metadata() -> None:
        log(blob="x" * 70_000)

    with pytest.raises(SerializationError, match="more than 65536"):
        huge_metadata()


def test_outside_an_execution_log_and_save_say_where_they_work(store_url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"log\(\) needs an execution"):
        log(a=1)
    with pytest.raises(ConfigurationError, match=r"save\(\) needs an execution"):
        save("x", 1)


def test_load_reports_what_is_missing(store_url: str) -> None:
    @flow(name="one-artifact")
    def one_artifact() -> str:
        save("kept", 1)
        return kitaru_core.current_execution().execution_id  # type: ignore[union-attr]

    execution_id = one_artifact()
    with pytest.raises(ArtifactNotFoundError, match=r"no artifact 'other'.*'kept'"):
        load(execution_id, "other")
    for missing_version in (2, 2**31, 2**64):
        with pytest.raises(ArtifactNotFoundError, match=f"no artifact 'kept' version {missing_version}"):
            load(execution_id, "kept", missing_version)
    with pytest.raises(ExecutionNotFoundError):
        load("no-such-execution", "kept")
    with pytest.raises(ConfigurationError, match="not a version"):
        load(execution_id, "kept", 0)

    @flow(name="bad-media-type")
    def bad_media_type() -> None:
        save("x", "y", media_type="text/html; charset=<script>")

    with pytest.raises(ConfigurationError, match="not a media type"):
        bad_media_type()


# -- the CLI -----------------------------------------------------------------------------------------


def test_cli_lists_artifacts_and_shows_metadata(store_url: str) -> None:
    if store_url == "sqlite://":
        pytest.skip("the CLI opens the store by URL; an in-memory database is not shared")

    @checkpoint
    def render() -> None:
        log(pages=3)
        save("report.md", "# Report")

    @flow(name="cli-artifacts")
    def cli_artifacts() -> None:
        log(owner="[bold]ana[/bold]")
        save("[red]chart[/red].png", b"\x89PNG\r\n\x1a\n....")
        render()

    cli_artifacts.run(execution_id="cli-art")
    runner = CliRunner()
    listed = runner.invoke(app, ["--store-url", store_url, "executions", "artifacts", "cli-art"])
    assert listed.exit_code == 0, listed.output
    assert "[red]chart[/red].png" in listed.output  # Rich markup in a name is printed, not applied
    assert re.search(r"report\.md\s*│\s*1\s*│\s*text/markdown\s*│\s*json\+typed/1", listed.output)
    as_json = runner.invoke(app, ["--store-url", store_url, "executions", "artifacts", "cli-art", "--json"])
    rows = json.loads(as_json.output)
    assert [(row["name"], row["version"], row["media_type"]) for row in rows] == [
        ("[red]chart[/red].png", 1, "image/png"),
        ("report.md", 1, "text/markdown"),
    ]
    shown = runner.invoke(app, ["--store-url", store_url, "executions", "show", "cli-art"])
    assert 'metadata: {"owner": "[bold]ana[/bold]"}' in shown.output
    assert 'metadata of #1 render:0: {"pages": 3}' in shown.output
    assert "artifacts: 2 name(s), 2 version(s)" in shown.output
    missing = runner.invoke(app, ["--store-url", store_url, "executions", "artifacts", "nope"])
    assert missing.exit_code == 1


# -- the docs' example, as written -------------------------------------------------------------------


def test_the_concepts_example_runs_as_written(tmp_path: Path) -> None:
    markdown = (REPO / "docs" / "concepts.md").read_text(encoding="utf-8")
    [block] = [block for block in re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL) if "# reports.py" in block]
    (tmp_path / "reports.py").write_text(block, encoding="utf-8")
    env = {**os.environ, "KITARU_INTERACTIVE": "false", "KITARU_CONFIG_FILE": str(tmp_path / "none.toml")}
    env.pop("KITARU_STORE_URL", None)
    env.pop("KITARU_ARTIFACTS_URL", None)
    first = subprocess.run(
        [sys.executable, "reports.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-2:] == ["versions: [1, 2]", "latest: # Q3 report (final)"]


# -- the migration -----------------------------------------------------------------------------------


def test_a_store_downgraded_to_0001_keeps_its_executions_and_upgrades_again(store_url: str) -> None:
    if store_url == "sqlite://":
        pytest.skip("an in-memory database lives only in its one store")
    import sqlalchemy
    from alembic import command
    from alembic.config import Config

    from kitaru_core import _store, migrations

    @checkpoint
    def step() -> int:
        return 1

    @flow(name="before-0007")
    def before() -> int:
        return step()

    before.run(execution_id="old-1")
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    store = get_store()
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")  # through every downgrade that drops a column
        assert "kitaru_artifacts" not in sqlalchemy.inspect(connection).get_table_names()
        assert migrations.current_revision(connection) == "0001"
    _store.close_stores(store_url)

    reopened = get_store()  # opening migrates it to the head again
    with reopened.engine.connect() as connection:
        assert migrations.current_revision(connection) == migrations.SCHEMA_REVISION
    detail = Client().get_execution("old-1")
    # every row survived the way down and up (on SQLite, too: no table was recreated)
    assert (detail.status, detail.metadata, [call.metadata for call in detail.calls]) == ("completed", {}, [{}])
    assert Client().list_artifacts("old-1") == []
