"""Budgets: model calls stop at a durable `budget` wait when a limit is reached; raise or stop.

Model calls are made the way adapters make them: `run_checkpoint(kind="model", usage=...)`.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kitaru_core import Budget, CallUsage, Client, flow, run_checkpoint
from kitaru_core.errors import (
    ConfigurationError,
    ExecutionCancelledError,
    ExecutionWaitingError,
    InvalidAnswerError,
)
from tests._kill_inside import kill_when_inside

PRICE_USD = 0.5


def model_call(ran: list[int], n: int, *, cost: float | None = PRICE_USD) -> str:
    """One model call as an adapter records it: kind `model`, tokens and cost from the output."""

    def request(n: int) -> str:
        ran.append(n)
        return f"answer {n}"

    return run_checkpoint(
        "model",
        request,
        n,
        kind="model",
        usage=lambda _output: CallUsage(model_name="priced-model", input_tokens=100, output_tokens=10, cost_usd=cost),
    )


def test_a_reached_budget_waits_is_raised_and_completes_without_repeating_a_call(store_url: str) -> None:
    ran: list[int] = []

    @flow(name="budgeted", budget=Budget(usd=1.0))
    def budgeted() -> list[str]:
        return [model_call(ran, n) for n in range(5)]

    with pytest.raises(ExecutionWaitingError) as waiting:
        budgeted.run(execution_id="b-1")
    assert [wait.name for wait in waiting.value.waits] == ["budget"]
    assert ran == [0, 1]  # $1.00 spent after two calls: the third is not sent
    client = Client()
    detail = client.get_execution("b-1")
    assert detail.status == "waiting"
    [wait] = detail.waits
    assert wait.question.startswith("budget of $1.00 reached: $1.00 spent.")
    assert wait.metadata["reached"] == ["usd"]
    assert wait.metadata["call_key"] == "model:2"
    assert detail.budget is not None
    assert (detail.budget.limits, detail.budget.spent["usd"], detail.budget.reached) == ({"usd": 1.0}, 1.0, ["usd"])

    client.answer("b-1", "budget", {"action": "raise", "usd": 2.0})
    with pytest.raises(ExecutionWaitingError) as waiting:
        budgeted.run(execution_id="b-1")  # calls 0 and 1 are served (free); 2 and 3 run; 4 waits
    assert [wait.name for wait in waiting.value.waits] == ["budget-2"]
    assert ran == [0, 1, 2, 3]
    assert client.get_execution("b-1").budget.spent["usd"] == 2.0  # pyright: ignore[reportOptionalMemberAccess]

    client.answer("b-1", "budget-2", {"action": "raise", "usd": 10.0})
    assert budgeted.run(execution_id="b-1") == [f"answer {n}" for n in range(5)]
    assert ran == [0, 1, 2, 3, 4]  # every call ran once
    detail = client.get_execution("b-1")
    assert detail.status == "completed"
    assert detail.budget is not None
    assert detail.budget.limits == {"usd": 10.0}
    assert detail.budget.initial == {"usd": 1.0}
    assert detail.budget.spent == {"usd": 2.5, "input_tokens": 500, "output_tokens": 50, "model_calls": 5}
    assert [call.source for call in detail.calls] == ["store"] * 4 + ["live"]
    # served again after completion: nothing is sent, nothing is spent, no wait is asked
    assert budgeted.run(execution_id="b-1") == [f"answer {n}" for n in range(5)]
    assert ran == [0, 1, 2, 3, 4]


def test_a_stop_answer_cancels_the_execution_with_its_reason(sqlite_file_store: str) -> None:
    ran: list[int] = []

    @flow(name="stopped", budget=Budget(model_calls=2))
    def stopped() -> list[str]:
        return [model_call(ran, n) for n in range(3)]

    with pytest.raises(ExecutionWaitingError):
        stopped.run(execution_id="b-stop")
    Client().answer("b-stop", "budget", {"action": "stop", "reason": "too expensive for a draft"})
    with pytest.raises(ExecutionCancelledError) as cancelled:
        stopped.run(execution_id="b-stop")
    assert cancelled.value.reason == "budget: too expensive for a draft"
    assert ran == [0, 1]
    detail = Client().get_execution("b-stop")
    assert detail.status == "cancelled"
    assert detail.error == "kitaru_core._budgets.BudgetStopped: budget: too expensive for a draft"
    assert detail.budget is not None
    assert detail.budget.stopped == "too expensive for a draft"
    with pytest.raises(ExecutionCancelledError):  # a cancelled execution does not run again
        stopped.run(execution_id="b-stop")


def test_several_limits_and_a_raise_that_is_not_enough_asks_again(sqlite_file_store: str) -> None:
    ran: list[int] = []

    @flow(name="tokens", budget=Budget(input_tokens=250, output_tokens=1000))
    def tokens() -> list[str]:
        return [model_call(ran, n) for n in range(4)]

    with pytest.raises(ExecutionWaitingError):
        tokens.run(execution_id="b-tokens")
    assert ran == [0, 1, 2]  # 300 input tokens >= 250 before the fourth call
    client = Client()
    client.answer("b-tokens", "budget", {"action": "raise", "input_tokens": 300})  # still reached
    with pytest.raises(ExecutionWaitingError) as waiting:
        tokens.run(execution_id="b-tokens")
    assert [wait.name for wait in waiting.value.waits] == ["budget-2"]
    assert ran == [0, 1, 2]
    client.answer("b-tokens", "budget-2", {"action": "raise", "input_tokens": 1000})
    assert len(tokens.run(execution_id="b-tokens")) == 4
    assert ran == [0, 1, 2, 3]


def test_unknown_cost_stops_a_usd_budget_and_says_so(sqlite_file_store: str) -> None:
    ran: list[int] = []

    @flow(name="unpriced", budget=Budget(usd=5.0))
    def unpriced() -> list[str]:
        return [model_call(ran, n, cost=None) for n in range(3)]

    with pytest.raises(ExecutionWaitingError):
        unpriced.run(execution_id="b-unpriced")
    assert ran == [0]  # the first call's cost is unknown: a dollar limit cannot be kept silently
    detail = Client().get_execution("b-unpriced")
    [wait] = detail.waits
    assert "cost unknown for 1 model call(s) (no price for 'priced-model')" in wait.question
    assert detail.budget is not None
    assert detail.budget.cost_unknown_calls == 1
    assert detail.budget.spent["input_tokens"] == 100  # tokens still count
    Client().answer("b-unpriced", "budget", {"action": "raise"})  # go on, counting known prices only
    assert len(unpriced.run(execution_id="b-unpriced")) == 3
    assert ran == [0, 1, 2]


def test_an_inner_flow_without_a_budget_uses_the_executions(sqlite_file_store: str) -> None:
    ran: list[int] = []

    @flow(name="inner")
    def inner() -> str:
        return model_call(ran, 99)

    @flow(name="outer", budget=Budget(model_calls=1))
    def outer() -> list[str]:
        return [model_call(ran, 0), inner()]

    with pytest.raises(ExecutionWaitingError):
        outer.run(execution_id="b-outer")
    assert ran == [0]


def test_invalid_budgets_and_answers_are_refused(sqlite_file_store: str) -> None:
    with pytest.raises(ConfigurationError, match="at least one limit"):
        Budget()
    with pytest.raises(ConfigurationError, match="cannot be negative"):
        Budget(usd=-1.0)
    with pytest.raises(ConfigurationError, match="whole number"):
        Budget(input_tokens=1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="whole number"):
        Budget(model_calls=True)
    with pytest.raises(ConfigurationError, match="finite"):
        Budget(usd=math.nan)
    with pytest.raises(ConfigurationError, match=r"must be a kitaru_core\.Budget"):
        flow(budget=5.0)(lambda: None)  # type: ignore[arg-type]

    @flow(name="refusing", budget=Budget(model_calls=0))
    def refusing() -> str:
        return model_call([], 0)

    with pytest.raises(ExecutionWaitingError):
        refusing.run(execution_id="b-refuse")
    with pytest.raises(InvalidAnswerError):
        Client().answer("b-refuse", "budget", {"action": "raise", "usd": -1})
    with pytest.raises(InvalidAnswerError):
        Client().answer("b-refuse", "budget", {"action": "more"})
    assert Client().get_execution("b-refuse").waits[0].status == "pending"


# -- a real process killed with SIGKILL: the spend stays right ------------------------------------

CHILD_SCRIPT = """
import os
import sys
import time
from pathlib import Path

from kitaru_core import Budget, CallUsage, flow, run_checkpoint

BODIES = Path(sys.argv[1])


def request(n: int) -> str:
    with BODIES.open("a", encoding="utf-8") as handle:
        handle.write(f"{n}\\n")
    if n == 2 and os.environ.get("HANG_INSIDE") == "1":
        print("INSIDE", flush=True)
        time.sleep(120)
    return f"answer {n}"


def usage(_output: str) -> CallUsage:
    return CallUsage(model_name="priced-model", input_tokens=100, output_tokens=10, cost_usd=0.5)


@flow(name="killed-budget", budget=Budget(model_calls=3))
def killed_budget() -> list[str]:
    return [run_checkpoint("model", request, n, kind="model", usage=usage) for n in range(4)]


if __name__ == "__main__":
    try:
        print("RESULT", killed_budget.run(execution_id="b-kill"), flush=True)
    except Exception as error:
        print("STOPPED", type(error).__name__, flush=True)
"""


def test_killed_and_resumed_the_spend_counts_each_live_call_once(shared_store: str, tmp_path: Path) -> None:
    script = tmp_path / "killed_budget.py"
    script.write_text(CHILD_SCRIPT, encoding="utf-8")
    bodies = tmp_path / "bodies.log"
    env: dict[str, Any] = {
        **os.environ,
        "KITARU_STORE_URL": shared_store,
        "KITARU_ARTIFACTS_URL": str(tmp_path / "artifacts"),
        "KITARU_INTERACTIVE": "false",
    }
    command = [sys.executable, str(script), str(bodies)]
    kill_when_inside(command, env={**env, "HANG_INSIDE": "1"}, cwd=tmp_path)  # SIGKILL inside call 2
    assert bodies.read_text(encoding="utf-8").split() == ["0", "1", "2"]

    def run() -> str:
        result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    # calls 0 and 1 are served (free); call 2 runs again (its killed attempt recorded nothing);
    # then 3 calls have run and the fourth waits
    assert run() == "STOPPED ExecutionWaitingError"
    assert bodies.read_text(encoding="utf-8").split() == ["0", "1", "2", "2"]
    client = Client()
    detail = client.get_execution("b-kill")
    assert detail.budget is not None
    assert detail.budget.spent == {"usd": 1.5, "input_tokens": 300, "output_tokens": 30, "model_calls": 3}

    client.answer("b-kill", "budget", {"action": "raise", "model_calls": 4})
    assert run() == "RESULT ['answer 0', 'answer 1', 'answer 2', 'answer 3']"
    assert bodies.read_text(encoding="utf-8").split() == ["0", "1", "2", "2", "3"]
    detail = client.get_execution("b-kill")
    assert detail.status == "completed"
    assert detail.budget is not None
    assert detail.budget.spent["model_calls"] == 4
    assert detail.budget.limits == {"model_calls": 4}


# -- the docs' example, as written ---------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_docs_example_runs_as_written(tmp_path: Path) -> None:
    import re

    markdown = (DOCS / "concepts.md").read_text(encoding="utf-8")
    [block] = [b for b in re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL) if "# budget_example.py" in b]
    [printed] = [b for b in re.findall(r"```text\n(.*?)```", markdown.split("# budget_example.py", 1)[1], flags=re.DOTALL)][:1]
    (tmp_path / "budget_example.py").write_text(block, encoding="utf-8")
    environment = {
        **os.environ,
        "KITARU_INTERACTIVE": "false",
        "KITARU_CONFIG_FILE": str(tmp_path / "none.toml"),
        "KITARU_STORE_URL": f"sqlite:///{tmp_path / 'kitaru.db'}",
        "KITARU_ARTIFACTS_URL": str(tmp_path / "artifacts"),
    }
    result = subprocess.run(
        [sys.executable, "budget_example.py"], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == printed.strip().splitlines()
