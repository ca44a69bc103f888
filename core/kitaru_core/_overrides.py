"""Replay overrides of adapter calls, in one framework-neutral form that each adapter converts.

A replay (`Client.replay(..., overrides=...)`) may give a model request a new response or a tool call
a new result. The process that prepares the replay (the CLI, the server) need not have the agent
framework installed, so the override is checked and stored in a neutral form here, and the adapter
turns it into its framework's type when the call is served in the replayed run:

- a model response: `ModelResponseOverride` (text and/or tool calls), stored as
  `MODEL_RESPONSE_OVERRIDE_FORMAT`;
- a tool call's result: any JSON value, stored as `TOOL_RESULT_OVERRIDE_FORMAT`.

An adapter's output codec calls `read_override(format, payload)` first in its `decode` and converts
what it returns (`ModelResponseOverride` or `ToolResultOverride`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kitaru_core.errors import ConfigurationError, SerializationError

MODEL_RESPONSE_OVERRIDE_FORMAT = "json:override.ModelResponse"
"""The stored format of a model response given by a replay override (a `ModelResponseOverride`)."""

TOOL_RESULT_OVERRIDE_FORMAT = "json:override.ToolResult"
"""The stored format of a tool call's result given by a replay override (`{"value": <JSON>}`)."""


class ToolCallOverride(BaseModel):
    """One tool call in an overridden model response.

    Attributes:
        name: The tool's name, as the agent knows it.
        arguments: The tool's arguments (a JSON object).
        id: The tool call's id; filled in (`call_replay_<hash>_<index>`) when the override gives none, the
            same each time the replayed call is served.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict[str, Any])
    id: str | None = Field(default=None, min_length=1)


class ModelResponseOverride(BaseModel):
    """A model response given by a replay override: its text and/or the tool calls it asks for.

    Given as JSON: `{"text": "...", "tool_calls": [{"name": "refund", "arguments": {"order": 7}}]}`,
    or a plain string for a text-only response. At least one of the two is required.

    Attributes:
        text: The response's text (`None`: no text part).
        tool_calls: The tool calls the response asks for, in order.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str | None = None
    tool_calls: tuple[ToolCallOverride, ...] = ()

    @model_validator(mode="after")
    def _not_empty(self) -> ModelResponseOverride:
        if self.text is None and not self.tool_calls:
            raise ValueError("give `text`, `tool_calls` or both")
        return self


@dataclass(frozen=True)
class ToolResultOverride:
    """A tool call's result given by a replay override.

    Attributes:
        value: The result as plain JSON (what the tool is taken to have returned).
    """

    value: Any


def model_response_override(value: Any, *, call_key: str, execution_id: str) -> tuple[str, bytes]:
    """Check a replay's model-response override and store it in the neutral form.

    Args:
        value: The override as given: a string (the text) or an object with `text` and/or `tool_calls`.
        call_key: The overridden call's key (tool call ids without one are derived from it).
        execution_id: The replayed execution's id (ditto).

    Returns:
        `(MODEL_RESPONSE_OVERRIDE_FORMAT, payload)`.

    Raises:
        ConfigurationError: The value is not a model response override.
    """
    given = {"text": value} if isinstance(value, str) else value
    try:
        override = ModelResponseOverride.model_validate(given)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'value'}: {problem['msg']}"
            for problem in error.errors()
        )
        raise ConfigurationError(
            f"Override for model call {call_key!r} is not a model response ({problems}). Give a string (the "
            'response text) or {"text": "...", "tool_calls": [{"name": "tool", "arguments": {...}}]}.'
        ) from None
    salt = hashlib.sha256(f"{execution_id}\x00{call_key}".encode()).hexdigest()[:12]
    calls = tuple(
        call if call.id is not None else call.model_copy(update={"id": f"call_replay_{salt}_{index}"})
        for index, call in enumerate(override.tool_calls)
    )
    filled = override.model_copy(update={"tool_calls": calls})
    return MODEL_RESPONSE_OVERRIDE_FORMAT, filled.model_dump_json().encode("utf-8")


def tool_result_override(value: Any, *, call_key: str) -> tuple[str, bytes]:
    """Store a replay's tool-result override (any JSON value) in the neutral form.

    Raises:
        ConfigurationError: The value has no JSON form.
    """
    try:
        payload = json.dumps({"value": value}, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as error:
        raise ConfigurationError(f"Override for tool call {call_key!r} is not plain JSON: {error}") from None
    return TOOL_RESULT_OVERRIDE_FORMAT, payload


def read_override(format: str, payload: bytes) -> ModelResponseOverride | ToolResultOverride | None:
    """The replay override a stored output holds, or `None` when it holds the call's own output.

    An adapter's codec calls this first in `decode` and converts what it gets into its framework's
    type (a `ModelResponseOverride` into a model response, a `ToolResultOverride` into a tool result).

    Raises:
        SerializationError: The stored override is corrupt.
    """
    if format == MODEL_RESPONSE_OVERRIDE_FORMAT:
        try:
            return ModelResponseOverride.model_validate_json(payload)
        except ValidationError as error:
            raise SerializationError(f"A stored model response override is corrupt: {error}") from error
    if format == TOOL_RESULT_OVERRIDE_FORMAT:
        try:
            document = json.loads(payload)
            return ToolResultOverride(document["value"])
        except (ValueError, KeyError, TypeError) as error:
            raise SerializationError(f"A stored tool result override is corrupt: {error!r}") from error
    return None


def read_model_response_override(format: str, payload: bytes) -> ModelResponseOverride | None:
    """The model response a replay's override gives a model call, or `None` for the call's own output.

    A model call's codec calls this first in `decode` and converts what it returns.

    Raises:
        SerializationError: The stored override is corrupt, or it is a tool result override (a model
            call takes a response override).
    """
    override = read_override(format, payload)
    if isinstance(override, ToolResultOverride):
        raise SerializationError(
            "A model call's stored output is a tool result override; a model call takes a response "
            'override (a string or {"text": ..., "tool_calls": [...]}).'
        )
    return override


def read_tool_result_override(format: str, payload: bytes) -> ToolResultOverride | None:
    """The result a replay's override gives a tool call, or `None` for the call's own output.

    A tool call's codec calls this first in `decode` and converts `value` to its tool outcome.

    Raises:
        SerializationError: The stored override is corrupt, or it is a model response override (a
            tool call takes its result as plain JSON).
    """
    override = read_override(format, payload)
    if isinstance(override, ModelResponseOverride):
        raise SerializationError(
            "A tool call's stored output is a model response override; a tool call takes its result as "
            "plain JSON."
        )
    return override
