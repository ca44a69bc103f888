"""Compare two executions call by call (`kitaru-adapters executions diff A B`, `GET /api/diff`)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from kitaru_core._client import Totals

if TYPE_CHECKING:
    from kitaru_core._client import CallView, Client
    from kitaru_core._records import CallRecord

Change = Literal["same", "changed", "new", "missing"]


class DiffSide(BaseModel):
    """One execution's call in a diff row.

    Attributes:
        sequence: Its `#` in that execution's timeline.
        status: `completed`, `failed`, `interrupted`...
        source: `live`, `store` or `not reached` in that execution's latest run.
        output_preview: The first characters of its stored output (or its error).
        model_name: Model that answered (model calls).
        input_tokens: Prompt tokens (model calls).
        output_tokens: Completion tokens (model calls).
        cost_usd: Cost in US dollars where a price is known.
    """

    sequence: int
    status: str
    source: str
    output_preview: str | None = None
    model_name: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None


class DiffRow(BaseModel):
    """One call key lined up across two executions.

    Attributes:
        key: The call key.
        change: `same` (same status and stored output), `changed`, `new` (only in B), `missing` (only in A).
        a: The call in A, if it has one.
        b: The call in B, if it has one.
    """

    key: str
    change: Change
    a: DiffSide | None = None
    b: DiffSide | None = None


class ExecutionDiff(BaseModel):
    """Two executions lined up call by call.

    Attributes:
        a: The first execution's id.
        b: The second execution's id.
        a_status: A's status.
        b_status: B's status.
        rows: One row per call key, in A's order with B's new calls where B made them.
        counts: How many rows are `same`, `changed`, `new` and `missing`.
        a_totals: A's model and tool calls, tokens and cost.
        b_totals: B's model and tool calls, tokens and cost.
    """

    a: str
    b: str
    a_status: str
    b_status: str
    rows: list[DiffRow]
    counts: dict[str, int] = Field(default_factory=dict)
    a_totals: Totals
    b_totals: Totals


def _identity(call: CallRecord) -> tuple[Any, ...]:
    """What makes two calls the same: status, and the stored output's bytes (or its artifact, or its error)."""
    output = call.output
    if output is None:
        digest = None
    elif output.payload is not None:
        digest = hashlib.sha256(output.payload).hexdigest()
    else:
        digest = output.reference  # content-addressed: same reference, same bytes
    return (call.status, output.format if output else None, digest, call.error_type, call.error_message)


def _side(view: CallView) -> DiffSide:
    return DiffSide(
        sequence=view.sequence,
        status=view.status,
        source=view.source,
        output_preview=view.output_preview if view.output_preview is not None else view.error,
        model_name=view.model_name,
        input_tokens=view.input_tokens,
        output_tokens=view.output_tokens,
        cost_usd=view.cost_usd,
    )


def _order(a_keys: list[str], b_keys: list[str]) -> list[str]:
    """A's keys in A's order, each of B's new keys right after the key B made before it."""
    order = list(a_keys)
    known = set(a_keys)
    previous: str | None = None
    for key in b_keys:
        if key not in known:
            position = order.index(previous) + 1 if previous is not None else 0
            order.insert(position, key)
            known.add(key)
        previous = key
    return order


def diff_executions(client: Client, a: str, b: str) -> ExecutionDiff:
    """Line up the current calls (superseded ones left out) of executions `a` and `b` by call key.

    Raises:
        ExecutionNotFoundError: Either execution does not exist.
    """
    detail_a = client.get_execution(a)
    detail_b = client.get_execution(b)
    records_a = {call.call_key: call for call in client.store.load_calls(a)}
    records_b = {call.call_key: call for call in client.store.load_calls(b)}
    views_a = {view.key: view for view in detail_a.calls if view.status != "superseded"}
    views_b = {view.key: view for view in detail_b.calls if view.status != "superseded"}
    rows: list[DiffRow] = []
    for key in _order(list(views_a), list(views_b)):
        view_a, view_b = views_a.get(key), views_b.get(key)
        if view_a is None:
            change: Change = "new"
        elif view_b is None:
            change = "missing"
        else:
            record_a, record_b = records_a.get(key), records_b.get(key)
            same = record_a is not None and record_b is not None and _identity(record_a) == _identity(record_b)
            change = "same" if same else "changed"
        rows.append(
            DiffRow(
                key=key,
                change=change,
                a=_side(view_a) if view_a is not None else None,
                b=_side(view_b) if view_b is not None else None,
            )
        )
    counts = {name: sum(1 for row in rows if row.change == name) for name in ("same", "changed", "new", "missing")}
    return ExecutionDiff(
        a=a,
        b=b,
        a_status=detail_a.status,
        b_status=detail_b.status,
        rows=rows,
        counts=counts,
        a_totals=detail_a.totals,
        b_totals=detail_b.totals,
    )

