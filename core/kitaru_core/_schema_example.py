"""A valid example value for a JSON schema: the suggested answer of a wait (`ExecutionWaitingError`)."""

from __future__ import annotations

from typing import Any

_STRING_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "duration": "P1D",
    "email": "person@example.com",
    "uri": "https://example.com",
    "uuid": "00000000-0000-0000-0000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
}
_MAX_DEPTH = 8


def example_for_schema(schema: dict[str, Any]) -> Any:
    """A value that satisfies `schema` for the common shapes pydantic produces.

    Covers `$ref`/`$defs`, `const`, `enum`, `default`, `examples`, `anyOf`/`oneOf`/`allOf`, objects
    (every property), arrays (`minItems`, `uniqueItems` of strings and numbers), strings (`format`, `minLength`),
    numbers (`minimum`, `exclusiveMinimum`, `multipleOf`) and booleans. What it cannot satisfy
    (`pattern`, `not`) it leaves to the person answering.

    Args:
        schema: The JSON schema (draft 2020-12, as pydantic writes it).

    Returns:
        A JSON value.
    """
    return _example(schema, schema, 0)


def _example(node: Any, root: dict[str, Any], depth: int) -> Any:
    if not isinstance(node, dict) or depth > _MAX_DEPTH:
        return None
    schema: dict[str, Any] = node  # pyright: ignore[reportUnknownVariableType]
    reference = schema.get("$ref")
    if isinstance(reference, str) and reference.startswith("#/"):
        target: Any = root
        for part in reference[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None  # pyright: ignore[reportUnknownMemberType]
        return _example(target, root, depth + 1)
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    examples = schema.get("examples")
    if isinstance(examples, list) and examples:
        return examples[0]  # pyright: ignore[reportUnknownVariableType]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]  # pyright: ignore[reportUnknownVariableType]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            useful = [option for option in options if not (isinstance(option, dict) and option.get("type") == "null")]  # pyright: ignore[reportUnknownVariableType, reportUnknownMemberType]
            return _example((useful or options)[0], root, depth + 1)  # pyright: ignore[reportUnknownArgumentType]
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        merged: dict[str, Any] = {}
        for part in all_of:  # pyright: ignore[reportUnknownVariableType]
            value = _example(part, root, depth + 1)
            if isinstance(value, dict):
                merged.update(value)  # pyright: ignore[reportUnknownArgumentType]
            elif value is not None:
                return value
        return merged
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [item for item in kind if item != "null"]  # pyright: ignore[reportUnknownVariableType]
        kind = kinds[0] if kinds else "null"  # pyright: ignore[reportUnknownVariableType]
    if kind is None and isinstance(schema.get("properties"), dict):
        kind = "object"
    if kind == "object":
        properties: Any = schema.get("properties") or {}
        return {
            name: _example(property_schema, root, depth + 1)
            for name, property_schema in properties.items()  # pyright: ignore[reportUnknownVariableType]
        }
    if kind == "array":
        minimum = schema.get("minItems")
        count = minimum if isinstance(minimum, int) else 0
        if "prefixItems" in schema and isinstance(schema["prefixItems"], list):
            return [_example(item, root, depth + 1) for item in schema["prefixItems"]]  # pyright: ignore[reportUnknownVariableType]
        items = [_example(schema.get("items", {}), root, depth + 1) for _ in range(count)]
        if schema.get("uniqueItems"):
            items = [_distinct(item, position) for position, item in enumerate(items)]
        return items
    if kind == "string":
        format_ = schema.get("format")
        if isinstance(format_, str) and format_ in _STRING_FORMATS:
            return _STRING_FORMATS[format_]
        length = schema.get("minLength")
        return "..." if not isinstance(length, int) or length <= 3 else "." * length
    if kind in {"integer", "number"}:
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    return None


def _distinct(item: Any, position: int) -> Any:
    """The `position`-th of items that must differ (`uniqueItems`): strings and numbers numbered."""
    if isinstance(item, str):
        return f"{item}{position}" if position else item
    if isinstance(item, int | float) and not isinstance(item, bool):
        return item + position
    return item


def _number(schema: dict[str, Any], *, integer: bool) -> int | float:
    value: float = 0
    minimum = schema.get("minimum")
    if isinstance(minimum, int | float) and minimum > value:
        value = minimum
    exclusive_minimum = schema.get("exclusiveMinimum")
    if isinstance(exclusive_minimum, int | float) and value <= exclusive_minimum:
        value = exclusive_minimum + 1
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int | float) and multiple > 0 and value % multiple:
        value = (value // multiple + 1) * multiple
    maximum = schema.get("maximum")
    if isinstance(maximum, int | float) and value > maximum:
        value = maximum
    exclusive_maximum = schema.get("exclusiveMaximum")
    if isinstance(exclusive_maximum, int | float) and value >= exclusive_maximum:
        value = exclusive_maximum - 1
    return int(value) if integer else value
