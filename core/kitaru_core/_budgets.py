"""Token and cost budgets: `Budget`, checked before every live model call of an execution.

The rules (see docs/concepts.md "Budgets"):

- **What is spent.** The spend of an execution is what its model calls (checkpoint calls of kind
  `model`) cost when they ran live: the tokens, the dollars (where a price is known) and the number
  of calls of every recorded attempt that finished (completed or failed), in every run of the
  execution, superseded records included (they were paid once). A call served from the store on
  resume is free: it adds no record, so it is never counted twice. Calls copied into a replay and
  results a person gave for an interrupted call did not run and are not counted.
- **When it stops.** Before each live model call, the spend is compared with the limits: when any
  limit is reached (`spent >= limit`: `usd`, `input_tokens`, `output_tokens`, or `model_calls`,
  so `Budget(model_calls=2)` allows exactly two calls), the run stops at a durable wait named
  `budget` (`budget-2`, `budget-3`... for later ones) before the call is sent.
- **Cost unknown.** A model without a known price records tokens but no dollars. With a `usd` limit
  such calls would never reach it, so the first check that finds one stops at the budget wait and
  says "cost unknown"; answering `raise` acknowledges it and later checks count the known dollars
  only (give `input_tokens`/`output_tokens` limits for such models). Tokens and calls always count.
- **Answers.** `{"action": "raise", "usd": 8.0}` (any of `usd`, `input_tokens`, `output_tokens`,
  `model_calls`: the new limit of each dimension given) lets the call proceed; if a limit is still
  reached the next budget wait is asked at once. `{"action": "stop", "reason": "..."}` ends the
  execution `cancelled`, the reason recorded as its error message and in its metadata.
- **Resume.** Limits are never stored as state a resume trusts: every run starts from the code's
  `Budget` and re-applies the answered budget waits in order (the k-th budget wait of the
  execution is reached at the same point in every run, since the spend there is the same), so a
  raise survives crashes and resumes.
- **Scope.** `@flow(budget=...)` and each adapter's `durable(..., budget=...)` set the budget for
  the model calls inside them; an inner run without its own budget uses the enclosing one. The
  spend is always the execution's.
"""

from __future__ import annotations

import contextvars
import math
import threading
from collections.abc import Generator, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kitaru_core import _checkpoint_calls, _context, _signals, _waits
from kitaru_core.errors import ConfigurationError

if TYPE_CHECKING:
    from kitaru_core._records import CallRecord

__all__ = [
    "BUDGET_METADATA_KEY",
    "BUDGET_WAIT_NAME",
    "Budget",
    "BudgetAnswer",
    "BudgetSpend",
    "BudgetStopped",
    "budget_scope",
    "current_budget",
    "spend_of",
]

BUDGET_WAIT_NAME = "budget"
"""The name of the first budget wait of an execution; later ones are `budget-2`, `budget-3`..."""

BUDGET_METADATA_KEY = "kitaru.budget"
"""The execution metadata key holding the budget in force (`limits`, `initial`, `stopped`)."""

DIMENSIONS: tuple[str, ...] = ("usd", "input_tokens", "output_tokens", "model_calls")


def _check_limit(name: str, value: Any, *, integer: bool) -> None:
    if value is None:
        return
    kind_ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not kind_ok:
        wanted = "a whole number" if integer else "a number of US dollars"
        raise ConfigurationError(f"Budget({name}={value!r:.80}): give {wanted} >= 0, or None for no limit.")
    if not integer and not math.isfinite(value):
        raise ConfigurationError(f"Budget({name}={value!r}): give a finite number of US dollars, or None.")
    if value < 0:
        raise ConfigurationError(f"Budget({name}={value!r}): a limit cannot be negative; give a value >= 0.")


@dataclass(frozen=True)
class Budget:
    """Limits on what the model calls of an execution may spend; see the module docstring for the rules.

    Attributes:
        usd: US dollars (where prices are known; see "cost unknown"). `None`: no limit.
        input_tokens: Prompt tokens. `None`: no limit.
        output_tokens: Completion tokens. `None`: no limit.
        model_calls: Model calls that ran live. `None`: no limit.

    Raises:
        ConfigurationError: A limit is negative, not a number (tokens and calls: not a whole
            number), not finite, or no limit is given at all.

    Example:
        ```python
        from kitaru_core import Budget

        budget = Budget(usd=5.0, model_calls=40)
        ```
    """

    usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    model_calls: int | None = None

    def __post_init__(self) -> None:
        _check_limit("usd", self.usd, integer=False)
        _check_limit("input_tokens", self.input_tokens, integer=True)
        _check_limit("output_tokens", self.output_tokens, integer=True)
        _check_limit("model_calls", self.model_calls, integer=True)
        if not self.limits():
            raise ConfigurationError(
                "Budget() needs at least one limit: usd=..., input_tokens=..., output_tokens=... or "
                "model_calls=... (for no budget, pass budget=None)."
            )

    @staticmethod
    def checked(budget: Any, where: str) -> Budget | None:
        """`budget` if it is a `Budget` or `None` (for `budget=` parameters); else a clear error.

        Raises:
            ConfigurationError: `budget` is something else (a number, a dict...); the message names `where`.
        """
        return check_budget(budget, where)

    def limits(self) -> dict[str, float]:
        """The limits given, by dimension (`usd`, `input_tokens`, `output_tokens`, `model_calls`)."""
        values = {
            "usd": self.usd,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "model_calls": self.model_calls,
        }
        return {name: value for name, value in values.items() if value is not None}


def check_budget(budget: Any, where: str) -> Budget | None:
    """Refuse a `budget=` that is not a `Budget` (or `None`).

    Raises:
        ConfigurationError: `budget` is something else (a number, a dict...).
    """
    if budget is None or isinstance(budget, Budget):
        return budget
    raise ConfigurationError(
        f"{where}: budget must be a kitaru_core.Budget (e.g. Budget(usd=5.0)) or None, "
        f"got {type(budget).__qualname__}."
    )


@dataclass(frozen=True)
class BudgetSpend:
    """What the model calls of an execution spent when they ran live.

    Attributes:
        usd: US dollars of the calls with a known price.
        input_tokens: Prompt tokens.
        output_tokens: Completion tokens.
        model_calls: Model calls that ran (each recorded attempt that finished).
        cost_unknown_calls: Calls that reported tokens but no cost (no price for the model).
        cost_unknown_models: The names of those calls' models.
    """

    usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    model_calls: int = 0
    cost_unknown_calls: int = 0
    cost_unknown_models: tuple[str, ...] = ()

    def value(self, dimension: str) -> float:
        """The spend in one dimension (`usd`, `input_tokens`, `output_tokens`, `model_calls`)."""
        return float(getattr(self, dimension))


def counts_toward_budget(record: CallRecord) -> bool:
    """Whether a call record is a model call that ran live in this execution (and so was paid)."""
    return (
        record.kind == "model"
        and record.status != "started"
        and record.details.get("copied_from") is None
        and record.details.get("given_by") is None
    )


@dataclass
class _Tally:
    """Running totals of the records that count, each record id once."""

    seen: set[int] = field(default_factory=set[int])
    usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    model_calls: int = 0
    cost_unknown_calls: int = 0
    cost_unknown_models: list[str] = field(default_factory=list[str])

    def add(self, record: CallRecord) -> None:
        if record.id in self.seen or not counts_toward_budget(record):
            return
        self.seen.add(record.id)
        self.model_calls += 1
        self.input_tokens += record.input_tokens or 0
        self.output_tokens += record.output_tokens or 0
        if record.cost_usd is not None:
            self.usd += record.cost_usd
        elif record.input_tokens is not None or record.output_tokens is not None:
            self.cost_unknown_calls += 1
            model = record.model_name or "unknown model"
            if model not in self.cost_unknown_models:
                self.cost_unknown_models.append(model)

    @classmethod
    def of_totals(cls, totals: dict[str, Any]) -> _Tally:
        """A tally starting from the sums the store computed (`Store.budget_totals`) instead of records.

        Its `seen` is empty: the records summed are told apart from later ones by the caller
        (`_State.let_through` counts only records written after the sums were taken).
        """
        tally = cls(
            usd=float(totals["usd"]),
            input_tokens=int(totals["input_tokens"]),
            output_tokens=int(totals["output_tokens"]),
            model_calls=int(totals["model_calls"]),
            cost_unknown_calls=int(totals["cost_unknown_calls"]),
        )
        for name in totals["cost_unknown_models"]:
            model = name or "unknown model"  # as `add` names a call without a model name
            if model not in tally.cost_unknown_models:
                tally.cost_unknown_models.append(model)
        return tally

    def spend(self) -> BudgetSpend:
        return BudgetSpend(
            self.usd,
            self.input_tokens,
            self.output_tokens,
            self.model_calls,
            self.cost_unknown_calls,
            tuple(self.cost_unknown_models),
        )


def spend_of(records: Iterable[CallRecord]) -> BudgetSpend:
    """The spend of an execution from its call records (superseded ones included).

    Args:
        records: Call records of one execution (a record id given twice counts once).

    Returns:
        The totals of the records that count (`counts_toward_budget`).
    """
    tally = _Tally()
    for record in records:
        tally.add(record)
    return tally.spend()


class BudgetAnswer(BaseModel):
    """The answer to a budget wait: raise limits (the call proceeds) or stop the execution.

    Attributes:
        action: `raise` or `stop`.
        usd: The new dollar limit (`raise`).
        input_tokens: The new prompt token limit (`raise`).
        output_tokens: The new completion token limit (`raise`).
        model_calls: The new model call limit (`raise`).
        reason: Why the execution stops (`stop`), recorded with it.
    """

    model_config = ConfigDict(extra="forbid")

    action: Literal["raise", "stop"]
    usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)
    model_calls: int | None = Field(default=None, ge=0)
    reason: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _one_kind(self) -> BudgetAnswer:
        raised = [name for name in DIMENSIONS if getattr(self, name) is not None]
        if self.action == "stop" and raised:
            raise ValueError("a stop answer gives no limits; answer action 'raise' to raise them")
        if self.action == "raise" and self.reason is not None:
            raise ValueError("reason belongs to a stop answer")
        return self


class BudgetStopped(_signals.CancelExecution):
    """The budget wait was answered `stop`: the execution ends `cancelled` (not an `Exception`)."""

    def __init__(self, execution_id: str, reason: str) -> None:
        super().__init__(execution_id)
        self.reason = reason


_budget_var: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("kitaru_budget", default=None)


def current_budget() -> Budget | None:
    """The budget that applies to model calls made in this context, or `None`."""
    return _budget_var.get()


@contextmanager
def budget_scope(budget: Budget | None) -> Generator[Budget | None]:
    """Apply `budget` to the model calls inside the block; `None` keeps the enclosing one (used by adapters).

    Args:
        budget: The budget, or `None` to inherit.

    Yields:
        The budget in force inside the block.
    """
    if budget is None:
        yield _budget_var.get()
        return
    token = _budget_var.set(budget)
    try:
        yield budget
    finally:
        _budget_var.reset(token)


# -- the check before each live model call --------------------------------------------------------


@dataclass
class _State:
    """The budget bookkeeping of one run of an execution (started from the store's sums every run)."""

    tally: _Tally = field(default_factory=_Tally)
    let_through: dict[str, int | None] = field(default_factory=dict[str, int | None])
    """Keys of the model calls let through in this run whose records were not counted yet, each with
    the id of the record stored for the key when it was let through (`None`: none). That older
    record (superseded by the call, or a failed or interrupted attempt of an earlier run) was in
    the store's sums already: only a record with another id is the call's own."""
    raised: dict[str, float] = field(default_factory=dict[str, float])
    cost_acknowledged: bool = False
    written: dict[str, Any] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_state_lock = threading.Lock()
"""Makes the first `_State` of a run the only one when parallel model calls start it together."""


def _state(context: _context.ExecutionContext) -> _State:
    """The run's budget bookkeeping, started at its first model call from the store's sums.

    The database sums the execution's calls that count (`Store.budget_totals`, one query): a resume
    of an execution with many stored calls neither reads nor holds their records here.
    """
    state = context.budget_state
    if isinstance(state, _State):
        return state
    fresh = _State(tally=_Tally.of_totals(context.store.budget_totals(context.execution_id)))
    with _state_lock:  # two parallel first calls: both read the sums, one state is kept by both
        state = context.budget_state
        if isinstance(state, _State):
            return state
        context.budget_state = fresh
    return fresh


def _money(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.4f}"


def _amount(dimension: str, value: float) -> str:
    if dimension == "usd":
        return _money(value)
    words = {"input_tokens": "input tokens", "output_tokens": "output tokens", "model_calls": "model calls"}
    return f"{int(value):,} {words[dimension]}"


def _reached(limits: dict[str, float], spend: BudgetSpend, state: _State) -> tuple[list[str], bool]:
    """The dimensions whose limit is reached, and whether an unacknowledged unknown cost stops the run."""
    reached = [name for name, limit in limits.items() if spend.value(name) >= limit]
    unknown = "usd" in limits and spend.cost_unknown_calls > 0 and not state.cost_acknowledged
    return reached, unknown


def _cost_note(spend: BudgetSpend) -> str:
    models = ", ".join(repr(model) for model in spend.cost_unknown_models[:3])
    return (
        f"cost unknown for {spend.cost_unknown_calls} model call(s) (no price for {models}): "
        "dollars count known prices only"
    )


def _question(limits: dict[str, float], spend: BudgetSpend, reached: list[str], unknown: bool) -> str:
    parts = [f"{_amount(name, limits[name])} reached: {_amount(name, spend.value(name))} spent" for name in reached]
    if parts:
        text = "budget of " + "; budget of ".join(parts) + "."
    else:
        text = f"budget of {_money(limits['usd'])}: {_money(spend.usd)} spent at known prices."
    if unknown or (spend.cost_unknown_calls and "usd" in limits):
        text += f" Note: {_cost_note(spend)}."
    example = reached[0] if reached else "usd"
    suggestion = max(limits.get(example, 0.0) * 2, spend.value(example) + 1)
    shown = round(suggestion, 2) if example == "usd" else int(suggestion)
    return (
        f"{text} Raise it to? Answer {{\"action\": \"raise\", \"{example}\": {shown}}} to continue, or "
        '{"action": "stop", "reason": "..."} to stop the execution.'
    )


def _record_budget(context: _context.ExecutionContext, state: _State, payload: dict[str, Any]) -> None:
    if state.written == payload:
        return
    if not context.store.merge_execution_metadata(context.execution_id, context.owner, {BUDGET_METADATA_KEY: payload}):
        context.lease_lost = True
        raise _signals.LeaseLost(context.execution_id)
    state.written = payload


def check_before_model_call(context: _context.ExecutionContext, call_key: str) -> None:
    """Stop at the budget wait when the budget in force is reached; called before each live model call.

    Args:
        context: The running execution.
        call_key: The key of the model call about to run (the wait is shown with it).

    Raises:
        SuspendExecution: A limit is reached and the budget wait has no answer yet.
        BudgetStopped: The budget wait was answered `stop`.
    """
    budget = _budget_var.get()
    if budget is None:
        return
    state = _state(context)
    with state.lock:
        # The calls let through before this one have committed by now (or are still running, in
        # parallel): count what they recorded. O(calls in flight), not O(calls of the execution).
        for key, earlier_id in list(state.let_through.items()):
            record = context.stored_call(key)
            if record is not None and record.id != earlier_id and record.status != "started":
                state.tally.add(record)
                del state.let_through[key]
        spend = state.tally.spend()
        limits = {**budget.limits(), **state.raised}
    initial = budget.limits()
    while True:
        reached, unknown = _reached(limits, spend, state)
        _record_budget(context, state, {"initial": initial, "limits": limits})
        if not reached and not unknown:
            earlier = context.stored_call(call_key)  # just read by the call's plan: cached
            with state.lock:
                state.let_through[call_key] = earlier.id if earlier is not None else None
            return
        metadata = {
            "kind": "budget",
            "call_key": call_key,
            "limits": limits,
            "spent": {name: spend.value(name) for name in DIMENSIONS},
            "reached": reached,
            "cost_unknown_calls": spend.cost_unknown_calls,
            "cost_unknown_models": list(spend.cost_unknown_models),
        }
        token = _context.enter_scope(call_key)  # the wait is shown with the call it holds back
        try:
            answer: BudgetAnswer = _waits.wait(
                BUDGET_WAIT_NAME,
                question=_question(limits, spend, reached, unknown),
                schema=BudgetAnswer,
                metadata=metadata,
            )
        finally:
            _context.leave_scope(token)
        if answer.action == "stop":
            reason = answer.reason or "stopped at the budget wait"
            _record_budget(context, state, {"initial": initial, "limits": limits, "stopped": reason})
            raise BudgetStopped(context.execution_id, f"budget: {reason}")
        with state.lock:
            for name in DIMENSIONS:
                value = getattr(answer, name)
                if value is not None:
                    state.raised[name] = value
            if unknown:
                state.cost_acknowledged = True
            limits = {**budget.limits(), **state.raised}


_checkpoint_calls.model_call_gate = check_before_model_call


# -- what surfaces show ----------------------------------------------------------------------------


class BudgetView(BaseModel):
    """The budget of an execution as `Client.get_execution`, the CLI and the dashboard show it.

    Attributes:
        limits: The limits in force, by dimension (`usd`, `input_tokens`, `output_tokens`,
            `model_calls`): the code's `Budget` with the answered raises applied.
        initial: The limits the code's `Budget` gave.
        spent: What the execution's live model calls spent, by dimension (every dimension).
        reached: The dimensions whose limit is reached (`spent >= limit`).
        cost_unknown_calls: Model calls that reported tokens but no cost (no price for the model):
            `spent["usd"]` counts known prices only.
        cost_unknown_models: Those calls' model names.
        stopped: The reason given when a budget wait was answered `stop`, else `None`.
    """

    limits: dict[str, int | float]
    initial: dict[str, int | float]
    spent: dict[str, int | float]
    reached: list[str] = Field(default_factory=list[str])
    cost_unknown_calls: int = 0
    cost_unknown_models: list[str] = Field(default_factory=list[str])
    stopped: str | None = None


def budget_view(metadata: dict[str, Any], records: Iterable[CallRecord]) -> BudgetView | None:
    """The budget of an execution from its metadata and call records, or `None` when it has none."""
    stored = metadata.get(BUDGET_METADATA_KEY)
    if not isinstance(stored, dict):
        return None
    stored_dict: dict[str, Any] = stored  # pyright: ignore[reportUnknownVariableType]

    def typed(name: str, number: float) -> int | float:
        """Dollars stay a float; tokens and calls are counts (`3`, not `3.0`)."""
        return number if name == "usd" or not float(number).is_integer() else int(number)

    def numbers(value: Any) -> dict[str, int | float]:
        if not isinstance(value, dict):
            return {}
        items: dict[Any, Any] = value  # pyright: ignore[reportUnknownVariableType]
        return {
            str(key): typed(str(key), number)
            for key, number in items.items()
            if key in DIMENSIONS and isinstance(number, int | float) and not isinstance(number, bool)
        }

    limits = numbers(stored_dict.get("limits"))
    spend = spend_of(records)
    stopped = stored_dict.get("stopped")
    return BudgetView(
        limits=limits,
        initial=numbers(stored_dict.get("initial")),
        spent={name: typed(name, spend.value(name)) for name in DIMENSIONS},
        reached=[name for name, limit in limits.items() if spend.value(name) >= limit],
        cost_unknown_calls=spend.cost_unknown_calls,
        cost_unknown_models=list(spend.cost_unknown_models),
        stopped=stopped if isinstance(stopped, str) else None,
    )


def describe_budget(view: BudgetView) -> str:
    """One line for the CLI: `budget: $5.00 (initial $2.00), $5.02 spent; 3 model calls...; cost unknown...`."""
    parts: list[str] = []
    for name, limit in view.limits.items():
        initial = view.initial.get(name)
        raised = f" (raised from {_amount(name, initial)})" if initial is not None and initial != limit else ""
        mark = " REACHED" if name in view.reached else ""
        parts.append(f"{_amount(name, view.spent[name])} of {_amount(name, limit)}{raised}{mark}")
    text = "; ".join(parts)
    if view.cost_unknown_calls:
        models = ", ".join(view.cost_unknown_models[:3])
        text += f"; cost unknown for {view.cost_unknown_calls} call(s) ({models}): dollars count known prices only"
    if view.stopped:
        text += f"; stopped: {view.stopped}"
    return text
