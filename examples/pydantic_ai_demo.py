"""The README demo: an unchanged PydanticAI example agent survives SIGKILL and waits for approval.

    nox -s demo            (or: python examples/pydantic_ai_demo.py)

Offline: the models are answered by `kitaru_core.testing.ScriptedModelServer`, an
OpenAI-compatible server on 127.0.0.1 that counts every request it receives. Nothing here
changes the example modules from the `pydantic-ai-examples` wheel; each is run by
`run_pydantic_ai_example.py`, which injects the model and makes the agent durable in one line.

1. `pydantic_ai_examples.roulette_wheel` (streamed runs) is killed with SIGKILL right after its
   third checkpoint call, then run again: it resumes and pays for no completed model request.
2. `pydantic_ai_examples.bank_support` runs with its `customer_balance` tool gated by approval:
   the run stops `waiting`, another process answers with the CLI, and a re-run completes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

import kitaru_core
from kitaru_core.cli import print_timeline
from kitaru_core.testing import Script, ScriptedModelServer, read_request_log

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "run_pydantic_ai_example.py"
console = Console(width=None if Console().is_terminal else 150)


def run(command: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a command, echoing it, and show what it printed."""
    shown = ["python" if part == sys.executable else part.replace(f"{HERE.parent}/", "") for part in command]
    console.print(f"$ {' '.join(shown)}", style="dim", highlight=False, markup=False)
    result = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    for line in (result.stdout + result.stderr).strip().splitlines():
        console.print(f"  {line}", highlight=False, markup=False)
    return result


def main() -> int:
    """Run the demo in a temporary store; return the exit code."""
    workspace = Path(tempfile.mkdtemp(prefix="kitaru-demo-"))
    store_url = f"sqlite:///{workspace / 'kitaru.db'}"
    environment = {
        **os.environ,
        "KITARU_STORE_URL": store_url,
        "KITARU_ARTIFACTS_URL": str(workspace / "artifacts"),
        "KITARU_INTERACTIVE": "false",
    }
    kitaru_core.configure(store_url=store_url, artifacts_url=str(workspace / "artifacts"))
    console.print(f"store: {store_url}")

    roulette_log = workspace / "roulette-requests.jsonl"
    roulette = Script.from_json(HERE / "scripts" / "roulette_wheel.json")
    with ScriptedModelServer(roulette, request_log_path=roulette_log) as server:
        example = [
            sys.executable,
            str(RUNNER),
            "pydantic_ai_examples.roulette_wheel",
            "--base-url",
            server.base_url,
        ]
        console.print(Rule("1. roulette_wheel, killed with SIGKILL after its 3rd checkpoint call"))
        killed = run([*example, "--execution-id", "roulette-demo", "--crash-after", "3"], environment)
        console.print(
            f"exit status {killed.returncode} (SIGKILL); model requests so far: {len(read_request_log(roulette_log))}"
        )
        console.print(Rule("the same command again: it resumes"))
        resumed = run([*example, "--execution-id", "roulette-demo"], environment)
        total = len(read_request_log(roulette_log))
        console.print(f"model requests over both processes: {total} (an uninterrupted run makes 4)")
        if resumed.returncode != 0 or total != 4:
            console.print("[red]unexpected result[/]")
            return 1
        print_timeline(kitaru_core.Client().get_execution("roulette-demo"), target=console)

    bank_log = workspace / "bank-requests.jsonl"
    bank = Script.from_json(HERE / "scripts" / "bank_support.json")
    with ScriptedModelServer(bank, request_log_path=bank_log) as server:
        example = [
            sys.executable,
            str(RUNNER),
            "pydantic_ai_examples.bank_support",
            "--base-url",
            server.base_url,
        ]
        example += ["--execution-id", "bank-demo", "--approve", "customer_balance"]
        console.print(Rule("2. bank_support with customer_balance gated by approval"))
        waiting = run(example, environment)
        if waiting.returncode != 3:
            return 1
        [pending] = kitaru_core.Client().pending_waits("bank-demo")
        console.print(Rule("another process answers the wait with the CLI"))
        cli = [sys.executable, "-m", "kitaru_core.cli", "executions", "answer", "bank-demo", pending.name]
        run([*cli, "--value", '"sure"'], environment)
        run([*cli, "--approve", "--message", "checked by Ana"], environment)
        console.print(Rule("the same command again: the approved tool runs once and the run completes"))
        done = run(example, environment)
        print_timeline(kitaru_core.Client().get_execution("bank-demo"), target=console)
        console.print(
            f"model requests over both processes: {len(read_request_log(bank_log))} (uninterrupted: 3)"
        )
        return done.returncode


if __name__ == "__main__":
    sys.exit(main())
