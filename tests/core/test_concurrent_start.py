"""Processes that open a fresh PostgreSQL store at the same moment (N workers deployed together) all start."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.postgres

OPENER = """
import sys
import time
from pathlib import Path

from kitaru_core._store import Store

go = Path(sys.argv[2])
while not go.exists():  # every process is started and imported before any opens the store
    time.sleep(0.001)
try:
    Store(sys.argv[1], sys.argv[3]).close()
except Exception as error:
    print("FAILED", type(error).__name__, error)
    sys.exit(1)
print("OPENED")
"""


def test_processes_opening_a_fresh_store_at_once_migrate_it_once_and_all_start(
    fresh_database: str, tmp_path: Path
) -> None:
    script = tmp_path / "opener.py"
    script.write_text(OPENER, encoding="utf-8")
    go = tmp_path / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), fresh_database, str(go), str(tmp_path / "artifacts")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    time.sleep(1.0)  # let them import (not a timed assertion: only makes the start more simultaneous)
    go.touch()
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [output.strip().splitlines()[-1] for output in outputs] == ["OPENED"] * 3, outputs
