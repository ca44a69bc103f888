"""Budgets: model calls stop at a durable `budget` wait when a limit is reached; raise or stop.

Model calls are made the way adapters make them: `run_checkpoint(kind="model", usage=...)`.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kitaru_core import Budget, CallUsage, Client, _budgets, flow, run_checkpoint
from kitaru_core import _tables as tables
from kitaru_core._budgets import BudgetSpend, spend_of
from kitaru_core._runtime import get_store
from kitaru_core._store import Store
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


# -- the spend the database sums: the same as the records count ------------------------------------


def summed_spend(store: Store, execution_id: str) -> BudgetSpend:
    """The spend a run's budget bookkeeping starts from: the store's sums, as `_State` takes them."""
    return _budgets._Tally.of_totals(store.budget_totals(execution_id)).spend()


def assert_sums_equal_records(store: Store, execution_id: str) -> BudgetSpend:
    """The database's sums equal `spend_of` every record (dollars up to the order of float additions)."""
    counted = spend_of(store.load_calls(execution_id, include_superseded=True))
    summed = summed_spend(store, execution_id)
    assert summed.usd == pytest.approx(counted.usd, rel=1e-12, abs=1e-12)
    assert replace(summed, usd=0.0) == replace(counted, usd=0.0)
    return counted


def test_the_database_sums_every_kind_of_record_as_the_records_count(shared_store: str) -> None:
    store = get_store()
    for execution_id in ("sums", "sums-source", "sums-other"):
        store.create_execution(execution_id, flow_name="sums", entry_point=None, inputs_fingerprint=None, inputs=None)
    sequences = itertools.count(1)

    def record(
        key: str,
        *,
        execution_id: str = "sums",
        kind: str = "model",
        status: str = "completed",
        model: str | None = "priced-model",
        tokens: tuple[int | None, int | None] = (100, 10),
        cost: float | None = 0.5,
        details: dict[str, Any] | None = None,
        supersede: tuple[int, ...] = (),
    ) -> int:
        now = time.time()
        values: dict[str, Any] = {
            "execution_id": execution_id,
            "call_key": key,
            "name": key.split(":")[0],
            "kind": kind,
            "sequence": next(sequences),
            "status": status,
            "output_format": "json",
            "output": b'"an answer"',
            "run_number": 1,
            "started_at_epoch_s": now,
            "ended_at_epoch_s": now,
            "model_name": model,
            "input_tokens": tokens[0],
            "output_tokens": tokens[1],
            "cost_usd": cost,
        }
        if details is not None:
            values["details"] = json.dumps(details)
        return store.record_call(values, supersede_ids=supersede)

    served = record("model:0")  # completed, priced; served by a later run
    store.mark_served([served], 2)
    older = record("model:1", cost=0.25)  # paid once, then superseded by a divergent re-run
    record("model:1", cost=0.125, supersede=(older,))
    record("model:2", status="failed", cost=2.0)  # a failed attempt that reported usage
    record("model:3", model="free-model", tokens=(50, 5), cost=None)  # cost unknown
    record("model:4", model=None, tokens=(7, None), cost=None)  # cost unknown, no model name
    record("model:5", model="", tokens=(None, 3), cost=None)  # the same "unknown model"
    record("model:6", model="silent", tokens=(None, None), cost=None)  # no usage at all: a call, no cost unknown
    record("model:7", status="started", tokens=(None, None), cost=None)  # in flight or interrupted: not counted
    interrupted = record("model:8", status="started", tokens=(None, None), cost=None)
    record("model:8", cost=4.0, supersede=(interrupted,))  # the superseded `started` record counts as a call
    record("model:9", cost=8.0, details={"copied_from": None, "retries": [{"attempt": 1}]})  # counts
    record("model:10", cost=16.0, details={"given_by": "person", "wait": "interrupted-model"})  # a person's
    record("tool:0", kind="tool", cost=32.0)  # not a model call
    record("step:0", kind="user", cost=32.0)
    record("model:0", execution_id="sums-other", cost=64.0)  # another execution
    copied = record("model:0", execution_id="sums-source", cost=128.0)
    store.copy_calls("sums-source", "sums", store.load_calls_by_id([copied]))  # a replay's copy: not counted

    counted = assert_sums_equal_records(store, "sums")
    assert counted == BudgetSpend(
        usd=0.5 + 0.25 + 0.125 + 2.0 + 4.0 + 8.0,
        input_tokens=100 * 6 + 50 + 7,  # model:0, both model:1, model:2, model:8's outcome, model:9
        output_tokens=10 * 6 + 5 + 3,
        model_calls=11,  # model:0 to model:9 but model:7, plus the superseded model:1 and model:8
        cost_unknown_calls=3,
        cost_unknown_models=("free-model", "unknown model"),
    )
    assert store.budget_totals("sums-other")["usd"] == 64.0
    store.create_execution("sums-empty", flow_name="sums", entry_point=None, inputs_fingerprint=None, inputs=None)
    assert summed_spend(store, "sums-empty") == BudgetSpend() == spend_of([])


MODEL_NAMES = st.sampled_from([None, "", "model-a", "model-b", "model-c"])
COSTS = st.one_of(
    st.none(),
    st.sampled_from([0.0, 0.1, 0.2, 0.3, 1e-7, 2.5]),
    st.floats(min_value=0, max_value=50, allow_nan=False, allow_infinity=False),
)
TOKENS = st.one_of(st.none(), st.integers(min_value=0, max_value=2_000_000))
DETAILS = st.sampled_from(
    [
        None,
        {},
        {"copied_from": "source"},
        {"copied_from": None},
        {"copied_from": ""},
        {"given_by": "person", "wait": "w"},
        {"given_by": None},
        {"retries": [{"attempt": 1, "error": "RateLimit"}]},
        {"tool": "given_by copied_from"},
    ]
)
CALLS = st.lists(
    st.fixed_dictionaries(
        {
            "kind": st.sampled_from(["model", "model", "model", "tool", "user"]),
            "status": st.sampled_from(["completed", "completed", "failed", "started", "superseded"]),
            "model_name": MODEL_NAMES,
            "input_tokens": TOKENS,
            "output_tokens": TOKENS,
            "cost_usd": COSTS,
            "details": DETAILS,
            "last_served_run": st.sampled_from([None, 2]),
        }
    ),
    max_size=25,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(calls=CALLS, order=st.randoms(use_true_random=False), noise=CALLS)
def test_the_database_sums_any_mix_of_calls_as_the_records_count(
    shared_store: str, calls: list[dict[str, Any]], order: Any, noise: list[dict[str, Any]]
) -> None:
    store = get_store()
    execution_id, other_id = f"mix-{uuid.uuid4().hex[:12]}", f"noise-{uuid.uuid4().hex[:12]}"
    for made in (execution_id, other_id):
        store.create_execution(made, flow_name="mix", entry_point=None, inputs_fingerprint=None, inputs=None)
    sequences = list(range(1, len(calls) + 1))
    order.shuffle(sequences)  # a `started` record finished in place takes a later sequence than its id
    rows: list[dict[str, Any]] = []
    for owner, mix, numbers in ((execution_id, calls, sequences), (other_id, noise, range(1, len(noise) + 1))):
        for index, (call, sequence) in enumerate(zip(mix, numbers, strict=True)):
            rows.append(
                {
                    **call,
                    "details": json.dumps(call["details"]) if call["details"] is not None else None,
                    "execution_id": owner,
                    "call_key": f"call:{index}",
                    "name": "call",
                    "sequence": sequence,
                    "run_number": 1,
                    "attempts": 1,
                    "started_at_epoch_s": 0.0,
                    "ended_at_epoch_s": 0.0,
                }
            )
    if rows:
        with store.engine.begin() as connection:
            connection.execute(sqlalchemy.insert(tables.checkpoint_calls), rows)
    assert_sums_equal_records(store, execution_id)


# -- a budgeted resume reads sums, not records -------------------------------------------------------


def test_a_budgeted_resume_starts_from_the_sums_without_loading_a_record(
    shared_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[int] = []
    version = {"call 0": 1}

    def priced_call(n: int) -> str:
        def request(n: int, _version: int) -> str:
            ran.append(n)
            if n == 1:
                raise ConnectionError("the provider hung up")  # recorded `failed`: a call, no usage
            return f"answer {n}"

        return run_checkpoint(
            "model",
            request,
            n,
            version["call 0"] if n == 0 else 1,
            kind="model",
            usage=lambda _output: CallUsage(model_name="m", input_tokens=100, output_tokens=10, cost_usd=0.5),
        )

    @flow(name="sums-resume", budget=Budget(model_calls=5))
    def sums_resume() -> list[str]:
        answers = [priced_call(0)]
        try:
            answers.append(priced_call(1))
        except ConnectionError:
            answers.append("no answer")
        return answers + [priced_call(n) for n in range(2, 7)]

    with pytest.raises(ExecutionWaitingError):
        sums_resume.run(execution_id="b-sums")
    assert ran == [0, 1, 2, 3, 4]  # five calls (one failed): the sixth waits
    client = Client()
    client.answer("b-sums", "budget", {"action": "raise", "model_calls": 8})

    def no_full_load(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("budget bookkeeping must not load every call record")

    with monkeypatch.context() as patched:
        patched.setattr(Store, "load_calls", no_full_load)
        version["call 0"] = 2  # call 0 diverges: it runs again and its first record is superseded
        with pytest.raises(ExecutionWaitingError) as waiting:
            sums_resume.run(execution_id="b-sums")
    # the resume starts from the sums of 5 calls; call 0 runs again (6), the failed call 1 runs
    # again (7), 2 to 4 are served, 5 runs (8): call 6 waits at the second budget wait
    assert ran == [0, 1, 2, 3, 4, 0, 1, 5]
    assert [wait.name for wait in waiting.value.waits] == ["budget-2"]
    detail = client.get_execution("b-sums")
    [_, second] = detail.waits
    assert second.metadata["spent"] == {"usd": 3.0, "input_tokens": 600, "output_tokens": 60, "model_calls": 8}
    assert detail.budget is not None
    assert detail.budget.spent == second.metadata["spent"]
    counted = assert_sums_equal_records(get_store(), "b-sums")
    assert (counted.model_calls, counted.usd) == (8, 3.0)


def test_a_call_in_flight_when_the_next_one_is_checked_counts_once_by_its_own_record(
    shared_store: str,
) -> None:
    # A call that supersedes an earlier record is still running (in another thread) when the next
    # model call is checked: the record stored for its key then is the earlier one, which the
    # store's sums counted already. It must not be counted again, and the call's own record must
    # be counted once it commits.
    version = {"slow": 1}
    inside, release = threading.Event(), threading.Event()
    problems: list[BaseException] = []

    def model(name: str, cost: float, *, hold: bool = False) -> str:
        def request(name: str, _version: int) -> str:
            if hold:
                inside.set()
                assert release.wait(30), "the test never released the call"
            return name

        return run_checkpoint(
            "model",
            request,
            name,
            version.get(name, 1),
            discriminator=name,
            kind="model",
            usage=lambda _output: CallUsage(model_name="m", input_tokens=1, output_tokens=1, cost_usd=cost),
        )

    def slow_in_thread() -> None:
        try:
            model("slow", 0.25, hold=True)
        except BaseException as error:  # reported by the test below
            problems.append(error)

    @flow(name="in-flight", budget=Budget(usd=1.5))
    def in_flight() -> list[str]:
        if version["slow"] == 1:
            model("slow", 1.0)  # run 1: $1.00, then the run fails and the next run resumes
            raise RuntimeError("stop after the first call")
        worker = threading.Thread(target=contextvars.copy_context().run, args=(slow_in_thread,))
        worker.start()  # runs again (its inputs changed): $0.25, held inside its body
        try:
            assert inside.wait(30)
            fast = model("fast", 0.25)  # checked while "slow" is in flight: $1.00 spent so far
        finally:
            release.set()
            worker.join(30)
        return [fast, model("after", 0.25)]  # $1.00 + $0.25 + $0.25 = $1.50: the budget waits

    with pytest.raises(RuntimeError, match="stop after the first call"):
        in_flight.run(execution_id="b-in-flight")
    version["slow"] = 2
    with pytest.raises(ExecutionWaitingError):
        in_flight.run(execution_id="b-in-flight")
    assert problems == []
    [wait] = Client().get_execution("b-in-flight").waits
    assert wait.metadata["call_key"] == "model:after"
    assert wait.metadata["spent"] == {"usd": 1.5, "input_tokens": 3, "output_tokens": 3, "model_calls": 3}
