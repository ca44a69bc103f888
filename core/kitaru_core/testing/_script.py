# pyright: strict
"""What the scripted model server answers from: a `Script` of `Rule`s, their tool calls and usage.

A script is data (it round-trips through JSON, `Script.from_json`), so a test, a demo and a server
in another process read the same rules. Which rule answers a request is decided in `_matching`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

DEFAULT_MODEL_NAME = "scripted"
"""The model name listed by `GET /v1/models` when a script names no models."""

LAST_TOOL_RESULT_PLACEHOLDER = "{last_tool_result}"
"""Replaced in a reply text by the content of the most recent `role: tool` message."""

LAST_USER_PLACEHOLDER = "{last_user}"
"""Replaced in a reply text by the text of the most recent `role: user` message."""

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class ScriptedToolCall:
    """One tool call that a scripted reply asks the client to make.

    Args:
        name: The name of the tool (function) to call.
        arguments: The JSON-serializable arguments of the call. They are sent as a JSON string,
            as OpenAI does.
        id: The tool-call id. When `None`, the server derives `call_` plus 24 hex characters from
            a hash of the conversation so far and the index of the call, so the same conversation
            always gets the same id, in any process.

    Raises:
        ValueError: If `name` is empty or `arguments` cannot be serialized to JSON.
    """

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict[str, Any])
    id: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("ScriptedToolCall.name must be a non-empty tool name.")
        try:
            json.dumps(self.arguments)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"The arguments of the scripted call to {self.name!r} are not JSON-serializable: {error}"
            ) from error
        object.__setattr__(self, "arguments", dict(self.arguments))

    def to_dict(self) -> JsonObject:
        """Return the call as a JSON-compatible dictionary.

        Returns:
            A dictionary with `name`, `arguments` and, when set, `id`.
        """
        data: JsonObject = {"name": self.name, "arguments": dict(self.arguments)}
        if self.id is not None:
            data["id"] = self.id
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScriptedToolCall:
        """Build a call from the dictionary form used in JSON scripts.

        Args:
            data: A mapping with `name` and optionally `arguments` and `id`.

        Returns:
            The scripted tool call.

        Raises:
            ValueError: If the mapping has unknown keys or values of the wrong type.
        """
        _reject_unknown_keys(data, {"name", "arguments", "id"}, "tool call")
        name = data.get("name")
        arguments = data.get("arguments", {})
        call_id = data.get("id")
        if not isinstance(name, str):
            raise ValueError(f"A scripted tool call needs a string 'name', got {name!r}.")
        if not isinstance(arguments, Mapping):
            raise ValueError(f"The 'arguments' of the scripted call to {name!r} must be a JSON object.")
        if call_id is not None and not isinstance(call_id, str):
            raise ValueError(f"The 'id' of the scripted call to {name!r} must be a string or null.")
        return cls(name=name, arguments=cast(Mapping[str, Any], arguments), id=call_id)


@dataclass(frozen=True)
class ScriptedUsage:
    """Token counts reported for a scripted reply instead of the derived defaults.

    Args:
        prompt_tokens: The reported number of prompt (input) tokens.
        completion_tokens: The reported number of completion (output) tokens.

    Raises:
        ValueError: If a count is negative.
    """

    prompt_tokens: int
    completion_tokens: int

    def __post_init__(self) -> None:
        if self.prompt_tokens < 0 or self.completion_tokens < 0:
            raise ValueError("Token counts in ScriptedUsage must not be negative.")

    def to_dict(self) -> JsonObject:
        """Return the counts as a JSON-compatible dictionary.

        Returns:
            A dictionary with `prompt_tokens` and `completion_tokens`.
        """
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScriptedUsage:
        """Build usage counts from the dictionary form used in JSON scripts.

        Args:
            data: A mapping with integer `prompt_tokens` and `completion_tokens`.

        Returns:
            The usage counts.

        Raises:
            ValueError: If a key is missing or unknown, or a count is not an integer.
        """
        _reject_unknown_keys(data, {"prompt_tokens", "completion_tokens"}, "usage")
        prompt_tokens = data.get("prompt_tokens")
        completion_tokens = data.get("completion_tokens")
        if not _is_integer(prompt_tokens) or not _is_integer(completion_tokens):
            raise ValueError("A scripted usage needs integer 'prompt_tokens' and 'completion_tokens'.")
        return cls(prompt_tokens=cast(int, prompt_tokens), completion_tokens=cast(int, completion_tokens))


@dataclass(frozen=True, kw_only=True)
class Rule:
    """One step of a script: a condition on the conversation and the reply to send when it holds.

    All given conditions must hold for the rule to match; a rule without conditions matches any
    request and serves as a fallback. The reply is `text`, `tool_calls`, or both (text first).
    A reply text may contain `{last_tool_result}` and `{last_user}`, replaced by the content of the
    most recent tool message and the text of the most recent user message.

    Args:
        when_last_user_contains: A substring that the text of the most recent user message must
            contain.
        when_last_tool_result_contains: A substring that the content of the most recent
            `role: tool` message must contain; that message must come after the last user message.
        when_turn: The number of assistant messages that must already be in the conversation
            (0 for the first model call after a user message in a fresh conversation).
        when_tools_offered: The name of a tool that the request must offer in `tools`.
        when_conversation_contains: A substring that the text of some message of the request
            (any role: system, user, assistant or tool) must contain. It tells apart conversations
            whose last user message is the same, such as a framework's ReAct follow-up prompts.
        text: The reply text.
        tool_calls: The tool calls of the reply.
        usage: Token counts to report. When `None`, counts are derived from text lengths.
        error_status: An HTTP error status (400-599) to answer instead of the reply, e.g. 429, 401
            or 500, with an OpenAI-style error body (`rate_limit_exceeded`, `invalid_api_key`...).
        error_headers: Response headers sent with the error, e.g. `{"Retry-After": "1"}`.
        error_times: How many times the rule answers with the error before it sends its reply
            (counted per server, over the requests it matches); `None`: always the error, and the
            rule needs no reply.

    Raises:
        ValueError: If the rule has neither `text` nor `tool_calls` (and does not always answer an
            error), `when_turn` is negative, `error_status` is not 400-599, `error_times` is
            negative, or error headers are given without a status.
    """

    when_last_user_contains: str | None = None
    when_last_tool_result_contains: str | None = None
    when_turn: int | None = None
    when_tools_offered: str | None = None
    when_conversation_contains: str | None = None
    text: str | None = None
    tool_calls: Sequence[ScriptedToolCall] = ()
    usage: ScriptedUsage | None = None
    error_status: int | None = None
    error_headers: Mapping[str, str] = field(default_factory=dict[str, str])
    error_times: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tool_calls", tuple(self.tool_calls))
        object.__setattr__(self, "error_headers", dict(self.error_headers))
        if self.error_status is not None and not (
            _is_integer(self.error_status) and 400 <= self.error_status <= 599
        ):
            raise ValueError(f"Rule.error_status must be an HTTP error status 400-599, got {self.error_status!r}.")
        if self.error_status is None and (self.error_headers or self.error_times is not None):
            raise ValueError("Rule.error_headers and Rule.error_times need an error_status.")
        if self.error_times is not None and (not _is_integer(self.error_times) or self.error_times < 0):
            raise ValueError(f"Rule.error_times must be an integer >= 0 or None, got {self.error_times!r}.")
        for header, value in self.error_headers.items():
            if not isinstance(header, str) or not isinstance(value, str) or "\n" in header + value or "\r" in header + value:  # pyright: ignore[reportUnnecessaryIsInstance]
                raise ValueError(f"Rule.error_headers must map names to values on one line, got {header!r}: {value!r}.")
        always_error = self.error_status is not None and self.error_times is None
        if self.text is None and not self.tool_calls and not always_error:
            raise ValueError("A Rule needs a reply: give `text`, `tool_calls`, or both.")
        if self.when_turn is not None and self.when_turn < 0:
            raise ValueError(f"Rule.when_turn must not be negative, got {self.when_turn}.")

    def to_dict(self) -> JsonObject:
        """Return the rule as a JSON-compatible dictionary, leaving out unset fields.

        Returns:
            The dictionary form used in JSON scripts.
        """
        data: JsonObject = {}
        for key in ("when_last_user_contains", "when_last_tool_result_contains", "when_turn"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        if self.when_tools_offered is not None:
            data["when_tools_offered"] = self.when_tools_offered
        if self.when_conversation_contains is not None:
            data["when_conversation_contains"] = self.when_conversation_contains
        if self.text is not None:
            data["text"] = self.text
        if self.tool_calls:
            data["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        if self.usage is not None:
            data["usage"] = self.usage.to_dict()
        if self.error_status is not None:
            data["error_status"] = self.error_status
            if self.error_headers:
                data["error_headers"] = dict(self.error_headers)
            if self.error_times is not None:
                data["error_times"] = self.error_times
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        """Build a rule from the dictionary form used in JSON scripts.

        Args:
            data: A mapping with the fields of `Rule`; `tool_calls` is a list of objects and
                `usage` an object.

        Returns:
            The rule.

        Raises:
            ValueError: If the mapping has unknown keys, values of the wrong type, or no reply.
        """
        _reject_unknown_keys(
            data,
            {
                "when_last_user_contains",
                "when_last_tool_result_contains",
                "when_turn",
                "when_tools_offered",
                "when_conversation_contains",
                "text",
                "tool_calls",
                "usage",
                "error_status",
                "error_headers",
                "error_times",
            },
            "rule",
        )
        for key in (
            "when_last_user_contains",
            "when_last_tool_result_contains",
            "when_tools_offered",
            "when_conversation_contains",
            "text",
        ):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"The rule field {key!r} must be a string or null, got {value!r}.")
        when_turn = data.get("when_turn")
        if when_turn is not None and not _is_integer(when_turn):
            raise ValueError(f"The rule field 'when_turn' must be an integer or null, got {when_turn!r}.")
        raw_tool_calls: Any = data.get("tool_calls") or []
        if not isinstance(raw_tool_calls, list):
            raise ValueError("The rule field 'tool_calls' must be a list of objects.")
        tool_calls: list[ScriptedToolCall] = []
        for raw_call in cast(list[Any], raw_tool_calls):
            if not isinstance(raw_call, Mapping):
                raise ValueError(f"Each scripted tool call must be a JSON object, got {raw_call!r}.")
            tool_calls.append(ScriptedToolCall.from_dict(cast(Mapping[str, Any], raw_call)))
        raw_usage = data.get("usage")
        usage: ScriptedUsage | None = None
        if raw_usage is not None:
            if not isinstance(raw_usage, Mapping):
                raise ValueError("The rule field 'usage' must be a JSON object or null.")
            usage = ScriptedUsage.from_dict(cast(Mapping[str, Any], raw_usage))
        raw_headers: Any = data.get("error_headers") or {}
        if not isinstance(raw_headers, Mapping):
            raise ValueError("The rule field 'error_headers' must be a JSON object of strings.")
        return cls(
            error_status=data.get("error_status"),
            error_headers=cast(Mapping[str, str], raw_headers),
            error_times=data.get("error_times"),
            when_last_user_contains=data.get("when_last_user_contains"),
            when_last_tool_result_contains=data.get("when_last_tool_result_contains"),
            when_turn=cast(int | None, when_turn),
            when_tools_offered=data.get("when_tools_offered"),
            when_conversation_contains=data.get("when_conversation_contains"),
            text=data.get("text"),
            tool_calls=tool_calls,
            usage=usage,
        )


@dataclass(frozen=True)
class Script:
    """An ordered list of rules; the first rule that matches a request supplies the reply.

    Args:
        rules: The rules, tried in order.
        model_names: The model names listed by `GET /v1/models`. Requests may name any model;
            the name is echoed in the reply.

    Raises:
        ValueError: If `model_names` is empty.
    """

    rules: Sequence[Rule]
    model_names: Sequence[str] = (DEFAULT_MODEL_NAME,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "model_names", tuple(self.model_names))
        if not self.model_names:
            raise ValueError("Script.model_names must name at least one model.")

    def to_dict(self) -> JsonObject:
        """Return the script as a JSON-compatible dictionary.

        Returns:
            A dictionary with `rules` and `model_names`.
        """
        return {"model_names": list(self.model_names), "rules": [rule.to_dict() for rule in self.rules]}

    def to_json(self, path: str | os.PathLike[str] | None = None, *, indent: int | None = 2) -> str:
        """Serialize the script to JSON, and optionally write it to a file.

        Args:
            path: A file to write the JSON to, replacing its content. When `None`, nothing is
                written.
            indent: The JSON indentation, or `None` for a single line.

        Returns:
            The JSON text.
        """
        text = json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Script:
        """Build a script from its dictionary form, or from a bare list of rule dictionaries.

        Args:
            data: A mapping with `rules` (a list of rule objects) and optionally `model_names`,
                or just the list of rule objects.

        Returns:
            The script.

        Raises:
            ValueError: If the data does not describe a valid script.
        """
        if isinstance(data, Mapping):
            _reject_unknown_keys(data, {"rules", "model_names"}, "script")
            raw_rules = data.get("rules")
            raw_model_names = data.get("model_names", [DEFAULT_MODEL_NAME])
        else:
            raw_rules = data
            raw_model_names = [DEFAULT_MODEL_NAME]
        if not isinstance(raw_rules, Sequence) or isinstance(raw_rules, str):
            raise ValueError("A script needs 'rules': a list of rule objects.")
        rules: list[Rule] = []
        for position, raw_rule in enumerate(cast(Sequence[Any], raw_rules)):
            if not isinstance(raw_rule, Mapping):
                raise ValueError(f"Rule {position} of the script must be a JSON object, got {raw_rule!r}.")
            try:
                rules.append(Rule.from_dict(cast(Mapping[str, Any], raw_rule)))
            except ValueError as error:
                raise ValueError(f"Rule {position} of the script is invalid: {error}") from error
        if not isinstance(raw_model_names, list) or not all(
            isinstance(name, str) for name in cast(list[Any], raw_model_names)
        ):
            raise ValueError("The script field 'model_names' must be a list of strings.")
        return cls(rules=rules, model_names=cast(list[str], raw_model_names))

    @classmethod
    def from_json(
        cls, source: str | os.PathLike[str] | Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> Script:
        """Load a script from a JSON file, or from already-parsed JSON data.

        Args:
            source: The path of a JSON file, or the parsed content of one (see `from_dict`).

        Returns:
            The script.

        Raises:
            OSError: If the file cannot be read.
            ValueError: If the file is not valid JSON or does not describe a valid script.
        """
        if isinstance(source, str | os.PathLike):
            path = Path(source)
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise ValueError(f"The script file {str(path)!r} is not valid JSON: {error}") from error
            if not isinstance(data, Mapping | list):
                raise ValueError(f"The script file {str(path)!r} must hold a JSON object or list.")
            return cls.from_dict(cast(Mapping[str, Any] | list[Mapping[str, Any]], data))
        return cls.from_dict(source)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _reject_unknown_keys(data: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(
            f"Unknown key(s) in a scripted {what}: {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}."
        )
