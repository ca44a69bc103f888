"""The README's webhook line answers the example's wait: with the run still waiting, and after it is gone."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kitaru_core import Client
from tests.server.conftest import REPO, TOKEN, LiveServer, flow_env, wait_until

EXAMPLE = REPO / "examples" / "webhook_approval.py"


def readme_curl_line() -> str:
    lines = [
        line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("curl -X POST")
    ]
    assert len(lines) == 1, "the README shows one curl line"
    return lines[0]


def run_readme_line(server: LiveServer, workdir: Path) -> dict[str, object]:
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to run the README's line (apt-get install curl)")
    line = readme_curl_line().replace("127.0.0.1:8765", server.url.removeprefix("http://"))
    result = subprocess.run(
        ["bash", "-c", line + " --silent --show-error --fail-with-body"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Where the example runs: the token file `serve` would have written is there."""
    folder = tmp_path / "work"
    (folder / ".kitaru").mkdir(parents=True)
    (folder / ".kitaru" / "server-token").write_text(TOKEN + "\n")
    return folder


def start_example(server: LiveServer, workdir: Path, timeout_s: str) -> subprocess.Popen[str]:
    port = server.url.rsplit(":", 1)[1]
    return subprocess.Popen(
        [sys.executable, str(EXAMPLE)],
        cwd=workdir,
        env=flow_env(
            *server.store,
            APPROVAL_TIMEOUT_S=timeout_s,
            KITARU_SERVER_PORT=port,
            KITARU_WAIT_POLL_INTERVAL_S="0.2",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_the_readme_line_approves_a_waiting_run(live_server: LiveServer, workdir: Path) -> None:
    example = start_example(live_server, workdir, "60")
    assert example.stdout is not None
    printed = [example.stdout.readline() for _ in range(3)]
    port = live_server.url.rsplit(":", 1)[1]
    assert printed[2].strip() == readme_curl_line().replace(
        "8765", port
    )  # the example prints the README's line
    client = Client()
    wait_until(
        lambda: (
            [w.name for w in client.pending_waits("refund-A-1001")] == ["approve:send_refund:refund-A-1001"]
        )
    )

    answered = run_readme_line(live_server, workdir)
    assert answered["wait"]["answer"] == {"approved": True}  # type: ignore[index]
    assert "being run by" in str(
        answered["resume_skipped"]
    )  # the example is still polling: it goes on itself
    output, _ = example.communicate(timeout=60)
    assert example.returncode == 0, output
    assert output.strip().endswith("refunded $25 on order A-1001")


def test_the_readme_line_resumes_a_run_whose_process_is_gone(live_server: LiveServer, workdir: Path) -> None:
    example = start_example(live_server, workdir, "0")  # stops at the wait and exits
    output, _ = example.communicate(timeout=60)
    assert example.returncode == 3, output
    assert Client().get_execution("refund-A-1001").status == "waiting"

    answered = run_readme_line(live_server, workdir)
    assert answered["resumed"]["pid"] > 0  # type: ignore[index]
    client = Client()
    wait_until(lambda: client.get_execution("refund-A-1001").status == "completed")
    assert client.get_output("refund-A-1001") == "refunded $25 on order A-1001"
    calls = client.get_execution("refund-A-1001").calls
    assert [(call.key, call.kind, call.source) for call in calls] == [
        ("draft_refund:0", "user", "store"),
        ("send_refund:0", "tool", "live"),
    ]
    assert re.fullmatch(
        r"file:.*webhook_approval\.py:refund", client.get_execution("refund-A-1001").entry_point or ""
    )
