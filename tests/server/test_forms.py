"""Answer forms generated from wait schemas (the schemas `wait()` stores, made by pydantic)."""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field, TypeAdapter

from kitaru_core import ApprovalDecision
from kitaru_core.server._forms import answer_form, is_approval


def schema_of(kind: Any) -> dict[str, Any]:
    return TypeAdapter(kind).json_schema()


class Color(Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str


class Order(BaseModel):
    quantity: int = Field(ge=1, description="How many.")
    price: float
    gift: bool = False
    note: str | None = None
    color: Color
    size: Literal["S", "M"]
    essay: str = Field(max_length=2000)
    address: Address
    tags: list[str]


def test_tool_approvals_get_approve_and_deny() -> None:
    form = answer_form(schema_of(ApprovalDecision))
    assert form.kind == "approval"
    assert [(field.name, field.kind, field.required) for field in form.fields] == [("message", "text", False)]
    assert is_approval(schema_of(ApprovalDecision))
    assert not is_approval(schema_of(Order))


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (bool, "boolean"),
        (int, "integer"),
        (float, "number"),
        (str, "text"),
        (Color, "choice"),
        (Literal["a", "b"], "choice"),
    ],
)
def test_a_single_value_gets_one_typed_input(kind: Any, expected: str) -> None:
    form = answer_form(schema_of(kind))
    (field,) = form.fields
    assert field.name == ""
    assert field.kind == expected
    assert form.kind == ("json" if expected == "json" else "value")


def test_an_object_gets_one_input_per_property() -> None:
    form = answer_form(schema_of(Order))
    assert form.kind == "object"
    fields = {field.name: field for field in form.fields}
    assert {name: field.kind for name, field in fields.items()} == {
        "quantity": "integer",
        "price": "number",
        "gift": "boolean",
        "note": "text",
        "color": "json",  # a $ref to the enum's definition: typed as JSON
        "size": "choice",
        "essay": "text",
        "address": "json",
        "tags": "json",
    }
    assert fields["quantity"].required
    assert fields["quantity"].constraints == {"minimum": 1}
    assert fields["quantity"].description == "How many."
    assert not fields["gift"].required
    assert fields["gift"].default == "false"
    assert not fields["note"].required  # `str | None = None`
    assert fields["size"].choices == ['"S"', '"M"']


def test_anything_else_is_typed_as_json() -> None:
    assert answer_form(schema_of(list[int])).kind == "json"
    assert answer_form({}).kind == "json"
