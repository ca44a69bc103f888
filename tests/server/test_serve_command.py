"""`kitaru-adapters serve`: the token printed once, loopback by default, a clear error without the extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.server.conftest import REPO, free_port

BLOCK_FASTAPI = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'fastapi', 'uvicorn', 'starlette'}:
            raise ImportError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Block())
"""


def test_import_kitaru_core_and_its_cli_never_import_the_server() -> None:
    probe = (
        "import sys, json, kitaru_core, kitaru_core.cli\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {'fastapi', 'uvicorn', 'starlette', "
        "'jinja2'} or m.startswith('kitaru_core.server'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout) == []


def test_serve_without_the_extra_names_the_extra(tmp_path: Path) -> None:
    code = (
        BLOCK_FASTAPI + "from kitaru_core.cli import main\nsys.argv = ['kitaru-adapters', 'serve']\nmain()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
    )
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert 'pip install "kitaru-adapters[server]"' in message
    assert "fastapi is not installed" in message
    # the rest of the CLI still works without the extra
    listed = subprocess.run(
        [sys.executable, "-c", BLOCK_FASTAPI + "from kitaru_core.cli import main\nsys.argv = "
         f"['kitaru-adapters', '--store-url', 'sqlite:///{tmp_path}/k.db', 'executions', 'list', '--json']\nmain()\n"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


def _serve(tmp_path: Path, port: int) -> tuple[str, int]:
    """Start `serve` in `tmp_path`, wait until it answers, stop it; return its output and exit code."""
    process = subprocess.Popen(
        [sys.executable, "-m", "kitaru_core.cli", "--store-url", f"sqlite:///{tmp_path}/k.db", "serve", "--port",
         str(port)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/executions", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError("serve did not start")
        unauthorized = httpx.post(f"http://127.0.0.1:{port}/api/executions/x/cancel", timeout=5)
        assert unauthorized.status_code == 401
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    return output, process.returncode


def test_serve_generates_the_token_once_and_keeps_it(tmp_path: Path) -> None:
    first, _ = _serve(tmp_path, free_port())
    token_file = tmp_path / ".kitaru" / "server-token"
    token = token_file.read_text().strip()
    assert len(token) >= 32
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert token in first
    assert "shown only this once" in first
    assert "reads open on loopback" in first
    assert f"/login?token={token}" in first

    second, _ = _serve(tmp_path, free_port())
    assert token not in second
    assert ".kitaru/server-token" in second
    assert token_file.read_text().strip() == token
