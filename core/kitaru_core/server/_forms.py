"""Answer forms generated from a wait's JSON schema."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

FieldKind = Literal["boolean", "string", "text", "integer", "number", "choice", "json"]
LONG_TEXT_CHARACTERS = 200


@dataclass(frozen=True)
class FormField:
    """One input of an answer form.

    Attributes:
        name: The property it fills (`""` when the answer itself is this one value).
        label: What the page shows beside it.
        kind: The input: `boolean` (yes/no), `string` (a line), `text` (several lines), `integer`,
            `number`, `choice` (one of `choices`) or `json` (JSON typed by hand).
        required: Whether the schema requires it.
        description: The schema's description, if any.
        choices: The allowed values of a `choice`, as JSON text.
        default: The schema's default, as JSON text.
        constraints: Limits worth showing (`minimum`, `maxLength`, ...), as given by the schema.
    """

    name: str
    label: str
    kind: FieldKind
    required: bool = True
    description: str | None = None
    choices: list[str] = field(default_factory=list[str])
    default: str | None = None
    constraints: dict[str, Any] = field(default_factory=dict[str, Any])


@dataclass(frozen=True)
class AnswerForm:
    """How to ask for an answer: approve/deny buttons, typed fields, or a JSON box.

    Attributes:
        kind: `approval` (a tool-call approval: approve or deny, with a message), `value` (the
            answer is one value: `fields` has one field with name `""`), `object` (one field per
            property) or `json` (anything else: the answer is typed as JSON).
        fields: The inputs.
    """

    kind: Literal["approval", "value", "object", "json"]
    fields: list[FormField]


_CONSTRAINT_KEYS = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
)


def _unwrap_optional(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """`anyOf: [X, {type: null}]` (pydantic's `X | None`) as `(X, nullable)`."""
    options = schema.get("anyOf")
    if isinstance(options, list):
        typed: list[dict[str, Any]] = [option for option in options if isinstance(option, dict)]  # pyright: ignore[reportUnknownVariableType]
        rest = [option for option in typed if option.get("type") != "null"]
        if len(rest) == 1 and len(typed) == len(options) and len(rest) < len(typed):
            merged = {key: value for key, value in schema.items() if key != "anyOf"}
            return {**rest[0], **merged}, True
    return schema, False


def _field(name: str, schema: dict[str, Any], *, required: bool) -> FormField:
    schema, nullable = _unwrap_optional(schema)
    label = str(schema.get("title") or name or "Answer")
    description = schema.get("description") if isinstance(schema.get("description"), str) else None
    default = json.dumps(schema["default"]) if "default" in schema else None
    constraints = {key: schema[key] for key in _CONSTRAINT_KEYS if key in schema}
    kind: FieldKind = "json"
    choices: list[str] = []
    if isinstance(schema.get("enum"), list):
        kind = "choice"
        choices = [json.dumps(choice) for choice in schema["enum"]]
    elif "const" in schema:
        kind = "choice"
        choices = [json.dumps(schema["const"])]
    else:
        match schema.get("type"):
            case "boolean":
                kind = "boolean"
            case "integer":
                kind = "integer"
            case "number":
                kind = "number"
            case "string" if "format" not in schema or schema["format"] in {"email", "uri"}:
                long_text = int(schema.get("maxLength") or LONG_TEXT_CHARACTERS + 1) > LONG_TEXT_CHARACTERS
                kind = "text" if long_text else "string"
            case _:
                kind = "json"
    return FormField(
        name=name,
        label=label,
        kind=kind,
        required=required and not nullable and "default" not in schema,
        description=description,
        choices=choices,
        default=default,
        constraints=constraints,
    )


def is_approval(schema: dict[str, Any]) -> bool:
    """Whether a schema is a tool-call approval (`ApprovalDecision`: `approved` plus a message)."""
    properties = schema.get("properties")
    return (
        isinstance(properties, dict)
        and properties.get("approved", {}).get("type") == "boolean"
        and set(properties) <= {"approved", "message"}  # pyright: ignore[reportUnknownArgumentType]
    )


def answer_form(schema: dict[str, Any]) -> AnswerForm:
    """The form that asks for an answer satisfying `schema` (validation stays the server's job).

    Args:
        schema: The wait's JSON schema.

    Returns:
        Approve/deny for tool approvals, one typed input for a scalar answer, one input per
        property for an object of scalars, and a JSON box for anything else.
    """
    if is_approval(schema):
        return AnswerForm(
            "approval", [_field("message", schema["properties"].get("message", {}), required=False)]
        )
    if schema.get("type") == "object" and isinstance(schema.get("properties"), dict):
        required = set(schema.get("required") or [])
        fields = [
            _field(
                str(name),
                property_schema if isinstance(property_schema, dict) else {},
                required=name in required,
            )
            for name, property_schema in schema["properties"].items()
        ]
        return AnswerForm("object", fields)
    single = _field("", schema, required=True)
    if single.kind == "json":
        return AnswerForm("json", [single])
    return AnswerForm("value", [single])
