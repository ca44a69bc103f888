"""Crash fuzz: generated programs of checkpoint calls, SIGKILLed at random points and re-run (issue 10).

Hypothesis generates programs (sync or async flows; sequential calls with repeated names, nested
calls, calls in parallel through threads or asyncio.gather; see crash_fuzz_program.py) and kill
plans (after the k-th body started, plus a few milliseconds: so kills land inside bodies, between
a body's end and its commit, and after commits). Each program runs in a subprocess that is killed
with SIGKILL once or twice and then re-run to completion. The properties:

- the final output equals that of an uninterrupted run of the same program;
- a call whose record was committed before a kill never starts again (each completed call ran
  exactly once), and no call is ever superseded (served values give the same fingerprints);
- a call that had started but was not committed at a kill runs again at most once per kill
  (at-least-once for the call in flight: at most twice with one kill).

`KITARU_CRASH_FUZZ_EXAMPLES` sets the number of programs (default 5 in the default test run;
`nox -s fuzz_crashes` runs 150).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import kitaru_core
from kitaru_core import Client

PROGRAM_RUNNER = Path(__file__).with_name("crash_fuzz_program.py")
EXAMPLES = int(os.environ.get("KITARU_CRASH_FUZZ_EXAMPLES", "5"))

_leaf = st.builds(lambda sleep_ms: {"kind": "call", "sleep_ms": sleep_ms}, st.integers(0, 15))


def _extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.builds(
            lambda sleep_ms, steps: {"kind": "nested", "sleep_ms": sleep_ms, "steps": steps},
            st.integers(0, 10),
            st.lists(children, min_size=1, max_size=3),
        ),
        st.builds(
            lambda steps: {"kind": "gather", "steps": steps}, st.lists(children, min_size=2, max_size=3)
        ),
    )


_steps = st.lists(st.recursive(_leaf, _extend, max_leaves=6), min_size=1, max_size=5)


def _name(steps: list[dict[str, Any]], in_gather: bool, counter: list[int], pool: list[str]) -> None:
    """Give every call a name: unique among parallel calls, repeated (occurrence keys) elsewhere."""
    for index, step in enumerate(steps):
        if step["kind"] == "gather":
            _name(step["steps"], True, counter, pool)
            continue
        counter[0] += 1
        step["name"] = f"p{counter[0]}" if in_gather else pool[(index + counter[0]) % len(pool)]
        if step["kind"] == "nested":
            _name(step["steps"], False, counter, pool)


@st.composite
def programs(draw: st.DrawFn) -> dict[str, Any]:
    steps = draw(_steps)
    _name(steps, False, [0], ["fetch", "charge", "notify"])
    kills = draw(
        st.lists(st.tuples(st.integers(1, 8), st.integers(0, 12)), min_size=1, max_size=2)
    )  # (after how many body starts of that run, then how many more milliseconds)
    return {"async": draw(st.booleans()), "steps": steps, "kills": kills}


def _run(
    program_path: Path,
    log: Path,
    execution_id: str,
    environment: dict[str, str],
    kill: tuple[int, int] | None,
) -> tuple[str | None, int]:
    """Run the program; with `kill=(k, ms)`, SIGKILL it `ms` after its k-th body start."""
    offset = log.stat().st_size if log.exists() else 0
    process = subprocess.Popen(
        [sys.executable, str(PROGRAM_RUNNER), str(program_path), str(log), execution_id],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if kill is not None:
        starts, extra_ms = kill
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            text = log.read_text()[offset:] if log.exists() else ""
            if text.count("start ") >= starts:
                time.sleep(extra_ms / 1000)
                break
            time.sleep(0.001)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=120)
    if process.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"the program failed (exit {process.returncode}):\n{stderr}")
    return (stdout.strip() if process.returncode == 0 else None), process.returncode


def _events(log: Path, offset: int) -> list[tuple[str, str]]:
    text = log.read_text()[offset:] if log.exists() else ""
    return [tuple(line.split(" ", 1)) for line in text.splitlines() if line]  # type: ignore[misc]


def _completed_keys(store_url: str, artifacts_url: str, execution_id: str) -> set[str]:
    kitaru_core.configure(store_url=store_url, artifacts_url=artifacts_url, reset=True)
    try:
        calls = Client().get_execution(execution_id).calls
    finally:
        kitaru_core.configure(reset=True)
    return {call.key for call in calls if call.status == "completed"}


def _all_statuses(store_url: str, artifacts_url: str, execution_id: str) -> Counter[str]:
    kitaru_core.configure(store_url=store_url, artifacts_url=artifacts_url, reset=True)
    try:
        return Counter(call.status for call in Client().get_execution(execution_id).calls)
    finally:
        kitaru_core.configure(reset=True)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("CI") == "true",
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # each example costs seconds: no shrinking
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(programs())
def test_killed_programs_resume_without_running_a_completed_call_again(program: dict[str, Any]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="kitaru-fuzz-"))
    program_path = folder / "program.json"
    program_path.write_text(json.dumps(program))
    base = {name: value for name, value in os.environ.items() if not name.startswith("KITARU_")}

    def environment(store: str) -> tuple[dict[str, str], str, str]:
        store_url = f"sqlite:///{folder / store / 'kitaru.db'}"
        artifacts_url = str(folder / store / "artifacts")
        return (
            {**base, "KITARU_STORE_URL": store_url, "KITARU_ARTIFACTS_URL": artifacts_url},
            store_url,
            artifacts_url,
        )

    # an uninterrupted run gives the expected output and every call key
    reference_environment, _, _ = environment("reference")
    reference_log = folder / "reference.log"
    expected, _ = _run(program_path, reference_log, "fuzz", reference_environment, None)
    all_keys = {key for event, key in _events(reference_log, 0) if event == "start"}
    assert expected is not None
    assert all_keys

    crashed_environment, store_url, artifacts_url = environment("crashed")
    log = folder / "crashed.log"
    committed_at_kill: set[str] = set()
    kills = 0
    for kill in program["kills"]:
        offset = log.stat().st_size if log.exists() else 0
        output, returncode = _run(program_path, log, "fuzz", crashed_environment, kill)
        run_starts = Counter(key for event, key in _events(log, offset) if event == "start")
        assert not (set(run_starts) & committed_at_kill), "a call committed before a kill started again"
        assert all(count == 1 for count in run_starts.values()), run_starts
        if returncode != 0:
            kills += 1
            committed_at_kill |= _completed_keys(store_url, artifacts_url, "fuzz")
        else:
            assert output == expected
            break
    offset = log.stat().st_size if log.exists() else 0
    output, _ = _run(program_path, log, "fuzz", crashed_environment, None)
    assert output == expected
    final_starts = Counter(key for event, key in _events(log, offset) if event == "start")
    assert not (set(final_starts) & committed_at_kill), "a call committed before a kill started again"

    starts = Counter(key for event, key in _events(log, 0) if event == "start")
    assert set(starts) == all_keys
    assert all(count <= 1 + kills for count in starts.values()), starts
    assert _completed_keys(store_url, artifacts_url, "fuzz") == all_keys
    assert _all_statuses(store_url, artifacts_url, "fuzz") == Counter({"completed": len(all_keys)})
    if os.environ.get("KITARU_CRASH_FUZZ_REPORT"):
        twice = sum(1 for count in starts.values() if count > 1)
        print(
            f"calls={len(all_keys)} kills={kills} committed_at_kill={len(committed_at_kill)} ran_again={twice}"
        )


def test_the_fuzz_program_runner_names_parallel_calls_uniquely() -> None:
    """The generator's naming rule: parallel calls never share a name (their keys must not race)."""
    steps: list[dict[str, Any]] = [
        {"kind": "call", "sleep_ms": 0},
        {"kind": "gather", "steps": [{"kind": "call", "sleep_ms": 0}, {"kind": "call", "sleep_ms": 0}]},
        {"kind": "call", "sleep_ms": 0},
    ]
    _name(steps, False, [0], ["fetch", "charge"])
    parallel = [step["name"] for step in steps[1]["steps"]]
    assert len(set(parallel)) == 2
    assert steps[0]["name"] in {"fetch", "charge"}
