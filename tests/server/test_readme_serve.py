"""README.md's `serve` line as written, in a fresh directory: the dashboard answers and the token is printed once.

The line is cut out of README.md's `## Dashboard and HTTP API` section, so an edit of the README
changes what runs here. Its comment promises `http://127.0.0.1:8765`: the CLI's defaults are
checked for that, and the line runs with `--port` set to a free port added (a test cannot own
port 8765 on a shared machine); nothing else is added. Its `pip install` line names an extra
checked by tests/core/test_readme_snippets.py.
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

import httpx
import pytest

from tests.server.conftest import REPO, free_port


def readme_serve_line() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Dashboard and HTTP API\n", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)[:1]
    [line] = [line for line in block.splitlines() if line.startswith("kitaru-adapters ")]
    return line


def console_script() -> str:
    found = shutil.which("kitaru-adapters", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"kitaru-adapters is not installed beside {sys.executable}")
    return found


def serve_until_it_answers(argv: list[str], project: Path, port: int) -> str:
    """Run `argv` in `project`, check the dashboard and the API answer, stop it; return what it printed."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("KITARU_")}
    process = subprocess.Popen(
        argv, cwd=project, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("serve did not answer:\n" + (process.communicate(timeout=10)[0] or ""))
            try:
                page = httpx.get(f"{url}/", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert page.status_code == 200
        assert "Executions" in page.text
        assert httpx.get(f"{url}/api/executions", timeout=5).json()["total"] == 0  # reads open on loopback
        refused = httpx.post(f"{url}/api/executions/x/cancel", timeout=5)
        assert refused.status_code == 401  # writes need the token
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    return output


def test_the_readme_serve_line_serves_a_fresh_directory_and_prints_the_token_once(tmp_path: Path) -> None:
    from tests.core.test_production_docs import parse_cli

    words = shlex.split(readme_serve_line(), comments=True)
    assert words == ["kitaru-adapters", "serve"]
    comment = readme_serve_line().split("#", 1)[1]
    path, params = parse_cli(words[1:])
    assert path == "kitaru-adapters serve"
    assert f"http://{params['host']}:{params['port']}" in comment  # the comment's address is the default
    assert "prints the API token once" in comment

    project = tmp_path / "project"
    project.mkdir()
    port = free_port()
    first = serve_until_it_answers([console_script(), *words[1:], "--port", str(port)], project, port)
    token = (project / ".kitaru" / "server-token").read_text().strip()
    assert (project / ".kitaru" / "kitaru.db").is_file()  # the default store, in the directory
    assert token in first
    assert f"http://127.0.0.1:{port}/login?token={token}" in first
    second = serve_until_it_answers([console_script(), *words[1:], "--port", str(port)], project, port)
    assert token not in second  # once
    assert (project / ".kitaru" / "server-token").read_text().strip() == token
