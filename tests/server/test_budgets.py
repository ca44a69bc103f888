"""The budget in the dashboard: a card per limit in the totals, a form for the budget wait built from
its schema, and an answer through the HTTP API that lets the execution go on."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from kitaru_core import Budget, CallUsage, Client, flow, run_checkpoint
from kitaru_core._budgets import BudgetAnswer
from kitaru_core.errors import ExecutionWaitingError
from kitaru_core.server._forms import answer_form
from tests.server.conftest import bearer

ran: list[int] = []


def model_call(n: int) -> str:
    def request(n: int) -> str:
        ran.append(n)
        return f"answer {n}"

    usage = CallUsage(model_name="gpt-4o-mini", input_tokens=100, output_tokens=10, cost_usd=0.5)
    return run_checkpoint("model", request, n, kind="model", usage=lambda _output: usage)


@flow(name="budgeted-desk", budget=Budget(usd=1.0, model_calls=10))
def budgeted_desk() -> list[str]:
    return [model_call(n) for n in range(3)]


def test_the_budget_wait_is_shown_answered_over_http_and_the_execution_goes_on(api: TestClient) -> None:
    ran.clear()
    with pytest.raises(ExecutionWaitingError):
        budgeted_desk.run(execution_id="desk-1")
    page = api.get("/executions/desk-1")
    assert page.status_code == 200
    assert 'data-budget="usd"' in page.text
    assert "$1.0000 / $1.0000" in page.text
    assert "(reached)" in page.text
    assert 'data-budget="model_calls"' in page.text

    answered = api.post(
        "/api/executions/desk-1/waits/budget/answer", json={"value": {"action": "raise", "usd": 5.0}}, headers=bearer()
    )
    assert answered.status_code == 200, answered.text
    assert budgeted_desk.run(execution_id="desk-1") == ["answer 0", "answer 1", "answer 2"]
    assert ran == [0, 1, 2]
    budget = Client().get_execution("desk-1").budget
    assert budget is not None
    assert budget.limits == {"usd": 5.0, "model_calls": 10}


def test_the_answer_form_has_one_input_per_field() -> None:
    form = answer_form(TypeAdapter(BudgetAnswer).json_schema())
    assert form.kind == "object"
    fields = {field.name: field for field in form.fields}
    assert fields["action"].kind == "choice"
    assert fields["action"].required
    assert {name: field.kind for name, field in fields.items() if name != "action"} == {
        "usd": "number",
        "input_tokens": "integer",
        "output_tokens": "integer",
        "model_calls": "integer",
        "reason": "text",
    }
