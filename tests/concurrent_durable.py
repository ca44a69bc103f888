"""Run `tests/concurrent_durable_program.py` for one adapter and check what it reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_concurrent_durable(adapter: str, tmp_path: Path) -> dict[str, Any]:
    """Many threads call `durable()` at once in a fresh process; returns the program's report.

    Asserts what every adapter must give: no thread raised (no `RecursionError`), each
    process-wide patch wraps the framework's original exactly once, the run answered, and each
    model request the server answered is recorded exactly once.
    """
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.concurrent_durable_program",
            adapter,
            f"sqlite:///{tmp_path / 'kitaru.db'}",
            str(tmp_path / "artifacts"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["errors"] == []
    assert report["wrapped_once"] is True
    assert report["output"] == "It is sunny in Paris."
    model_keys = [key for key, kind in report["calls"] if kind == "model"]
    assert len(model_keys) == len(set(model_keys)) == report["requests"] == 2
    assert [kind for _, kind in report["calls"] if kind in ("model", "tool")] == ["model", "tool", "model"]
    return report
