# pyright: strict
"""A scripted, OpenAI-compatible model server (chat completions and Responses API) for tests and demos.

The server answers `POST /v1/chat/completions` and `POST /v1/responses` from a `Script`: an ordered
list of `Rule`s, each choosing a reply from the conversation the client sent. A Responses API
request's `instructions` and `input` items are read as the equivalent chat messages (function calls
as an assistant message's tool calls, function-call outputs as tool messages), so one script drives
both APIs. The reply depends only on the request, so a restarted agent process that sends the same
conversation gets the same reply, including the same tool-call ids. Every model request is appended
to an optional request log with `O_APPEND` and `fsync`, so a test can count the model requests that
really reached the server even after the client or the server was killed.

The module uses the standard library only. `http.server` is imported when a server starts, so
importing `kitaru_core.testing` stays cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, cast

if TYPE_CHECKING:
    import socket
    from http.server import ThreadingHTTPServer

__all__ = [
    "Rule",
    "Script",
    "ScriptedModelServer",
    "ScriptedToolCall",
    "ScriptedUsage",
    "read_request_log",
]

DEFAULT_MODEL_NAME = "scripted"
"""The model name listed by `GET /v1/models` when a script names no models."""

CREATED_TIMESTAMP = 0
"""The fixed `created` value of every completion, so replies are byte-for-byte reproducible."""

LAST_TOOL_RESULT_PLACEHOLDER = "{last_tool_result}"
"""Replaced in a reply text by the content of the most recent `role: tool` message."""

LAST_USER_PLACEHOLDER = "{last_user}"
"""Replaced in a reply text by the text of the most recent `role: user` message."""

_CHAT_COMPLETIONS_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
_RESPONSES_PATHS = frozenset({"/v1/responses", "/responses"})
_MODELS_PATHS = frozenset({"/v1/models", "/models"})
_HEALTH_PATHS = frozenset({"/health", "/v1/health"})
_ARGUMENT_PIECE_LENGTH = 12
_MAXIMUM_BODY_BYTES = 64 * 1024 * 1024

JsonObject = dict[str, Any]
ReplyKind = Literal["text", "tool_calls", "no_match", "invalid_request", "scripted_error"]


class _RecordRequest(Protocol):
    def __call__(
        self,
        *,
        path: str,
        body: dict[str, Any] | None,
        conversation: _Conversation | None,
        matched_rule: int | None,
        reply_kind: ReplyKind,
        tool_call_names: Sequence[str],
        status: int,
    ) -> None: ...


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


@dataclass(frozen=True)
class _Conversation:
    """The facts about a model request that rules can match on (Responses API items read as chat messages).

    Args:
        messages: The request's messages.
        last_user_text: The text of the most recent user message, or `""`.
        last_tool_result: The content of the most recent tool message anywhere, or `None`.
        tool_result_after_last_user: The content of the most recent tool message if it comes
            after the last user message, else `None`.
        assistant_message_count: How many assistant messages the conversation holds.
        offered_tool_names: The names of the tools offered in the request.
    """

    messages: Sequence[Mapping[str, Any]]
    last_user_text: str
    last_tool_result: str | None
    tool_result_after_last_user: str | None
    assistant_message_count: int
    offered_tool_names: frozenset[str]

    @classmethod
    def from_request(cls, body: Mapping[str, Any]) -> _Conversation:
        """Extract the conversation from a chat-completions request body.

        Args:
            body: The parsed JSON request body.

        Returns:
            The conversation facts.

        Raises:
            ValueError: If the body has no list of message objects in `messages`.
        """
        raw_messages = body.get("messages")
        if not isinstance(raw_messages, list) or not all(
            isinstance(message, dict) for message in cast(list[Any], raw_messages)
        ):
            raise ValueError("The request body needs 'messages': a list of message objects.")
        return cls.from_messages(cast(list[JsonObject], raw_messages), body)

    @classmethod
    def from_responses_request(cls, body: Mapping[str, Any]) -> _Conversation:
        """Extract the conversation from a Responses API request body, as chat messages.

        Args:
            body: The parsed JSON request body.

        Returns:
            The conversation facts.

        Raises:
            ValueError: If `input` is neither a string nor a list of input item objects.
        """
        return cls.from_messages(_responses_messages(body), body)

    @classmethod
    def from_messages(cls, messages: list[JsonObject], body: Mapping[str, Any]) -> _Conversation:
        """Compute the conversation facts of chat messages.

        Args:
            messages: The chat messages.
            body: The request body, for the tools it offers.

        Returns:
            The conversation facts.
        """
        last_user_position = -1
        last_tool_position = -1
        assistant_message_count = 0
        for position, message in enumerate(messages):
            role = message.get("role")
            if role == "user":
                last_user_position = position
            elif role == "tool":
                last_tool_position = position
            elif role == "assistant":
                assistant_message_count += 1
        last_user_text = (
            _content_text(messages[last_user_position].get("content")) if last_user_position >= 0 else ""
        )
        last_tool_result = (
            _content_text(messages[last_tool_position].get("content")) if last_tool_position >= 0 else None
        )
        return cls(
            messages=messages,
            last_user_text=last_user_text,
            last_tool_result=last_tool_result,
            tool_result_after_last_user=last_tool_result if last_tool_position > last_user_position else None,
            assistant_message_count=assistant_message_count,
            offered_tool_names=frozenset(_offered_tool_names(body)),
        )

    @property
    def digest(self) -> str:
        """A SHA-256 hex digest of the messages, stable across processes.

        Returns:
            The hex digest.
        """
        canonical = json.dumps(self.messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class _RenderedToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class _Reply:
    """A reply ready to be sent, computed from a rule and a conversation only."""

    completion_id: str
    model: str
    text: str | None
    tool_calls: tuple[_RenderedToolCall, ...]
    prompt_tokens: int
    completion_tokens: int

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"

    @property
    def kind(self) -> ReplyKind:
        return "tool_calls" if self.tool_calls else "text"

    def usage(self) -> JsonObject:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def completion(self) -> JsonObject:
        message: JsonObject = {"role": "assistant", "content": self.text, "refusal": None}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.tool_calls
            ]
        return {
            "id": self.completion_id,
            "object": "chat.completion",
            "created": CREATED_TIMESTAMP,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish_reason}
            ],
            "usage": self.usage(),
        }

    def chunks(self, *, include_usage: bool) -> Iterator[JsonObject]:
        """Yield `chat.completion.chunk` objects the way OpenAI streams them."""

        def chunk(delta: JsonObject, finish_reason: str | None = None) -> JsonObject:
            data: JsonObject = {
                "id": self.completion_id,
                "object": "chat.completion.chunk",
                "created": CREATED_TIMESTAMP,
                "model": self.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                data["usage"] = None
            return data

        first_content = "" if self.text is not None else None
        yield chunk({"role": "assistant", "content": first_content, "refusal": None})
        for piece in _split_words(self.text or ""):
            yield chunk({"content": piece})
        for index, call in enumerate(self.tool_calls):
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": ""},
                        }
                    ]
                }
            )
            for piece in _split_fixed(call.arguments, _ARGUMENT_PIECE_LENGTH):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield chunk({}, self.finish_reason)
        if include_usage:
            yield {
                "id": self.completion_id,
                "object": "chat.completion.chunk",
                "created": CREATED_TIMESTAMP,
                "model": self.model,
                "system_fingerprint": None,
                "choices": [],
                "usage": self.usage(),
            }


def _item_id(prefix: str, completion_id: str, index: int) -> str:
    seed = f"{completion_id}:{index}".encode()
    return prefix + hashlib.sha256(seed).hexdigest()[:24]


@dataclass(frozen=True)
class _ResponsesReply:
    """A reply rendered as the OpenAI Responses API sends it: a `response` object and its SSE events."""

    reply: _Reply
    request: Mapping[str, Any]

    @property
    def response_id(self) -> str:
        return "resp_" + self.reply.completion_id.removeprefix("chatcmpl-")

    def _message_item(self, text: str, *, done: bool) -> JsonObject:
        return {
            "id": _item_id("msg_", self.reply.completion_id, 0),
            "type": "message",
            "status": "completed" if done else "in_progress",
            "role": "assistant",
            "content": [_output_text_part(text)] if done else [],
        }

    def _call_item(self, index: int, call: _RenderedToolCall, *, done: bool) -> JsonObject:
        return {
            "id": _item_id("fc_", self.reply.completion_id, index + 1),
            "type": "function_call",
            "status": "completed" if done else "in_progress",
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments if done else "",
        }

    def output(self) -> list[JsonObject]:
        """The response's output items: the message (when the reply has text), then the function calls."""
        items: list[JsonObject] = []
        if self.reply.text is not None:
            items.append(self._message_item(self.reply.text, done=True))
        items.extend(
            self._call_item(index, call, done=True) for index, call in enumerate(self.reply.tool_calls)
        )
        return items

    def usage(self) -> JsonObject:
        return {
            "input_tokens": self.reply.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": self.reply.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.reply.prompt_tokens + self.reply.completion_tokens,
        }

    def response(self, *, completed: bool = True) -> JsonObject:
        """The `response` object; while in progress it has no output and no usage yet."""
        request = self.request
        text_options = request.get("text")
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": CREATED_TIMESTAMP,
            "status": "completed" if completed else "in_progress",
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": request.get("instructions"),
            "max_output_tokens": request.get("max_output_tokens"),
            "metadata": request.get("metadata") or {},
            "model": self.reply.model,
            "output": self.output() if completed else [],
            "parallel_tool_calls": request.get("parallel_tool_calls", True),
            "previous_response_id": request.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": request.get("store", True),
            "temperature": request.get("temperature", 1.0),
            "text": text_options if isinstance(text_options, dict) else {"format": {"type": "text"}},
            "tool_choice": request.get("tool_choice", "auto"),
            "tools": request.get("tools") or [],
            "top_p": request.get("top_p", 1.0),
            "truncation": request.get("truncation", "disabled"),
            "usage": self.usage() if completed else None,
            "user": None,
        }

    def events(self) -> Iterator[JsonObject]:
        """Yield the streamed events in the order OpenAI sends them, numbered by `sequence_number`."""
        sequence = 0

        def event(kind: str, **fields: Any) -> JsonObject:
            nonlocal sequence
            data: JsonObject = {"type": kind, "sequence_number": sequence, **fields}
            sequence += 1
            return data

        yield event("response.created", response=self.response(completed=False))
        yield event("response.in_progress", response=self.response(completed=False))
        output_index = 0
        text = self.reply.text
        if text is not None:
            item_id = _item_id("msg_", self.reply.completion_id, 0)
            place: JsonObject = {"item_id": item_id, "output_index": output_index, "content_index": 0}
            yield event(
                "response.output_item.added",
                output_index=output_index,
                item=self._message_item(text, done=False),
            )
            yield event("response.content_part.added", **place, part=_output_text_part(""))
            for piece in _split_words(text):
                yield event("response.output_text.delta", **place, delta=piece, logprobs=[])
            yield event("response.output_text.done", **place, text=text, logprobs=[])
            yield event("response.content_part.done", **place, part=_output_text_part(text))
            yield event(
                "response.output_item.done",
                output_index=output_index,
                item=self._message_item(text, done=True),
            )
            output_index += 1
        for index, call in enumerate(self.reply.tool_calls):
            item_id = _item_id("fc_", self.reply.completion_id, index + 1)
            yield event(
                "response.output_item.added",
                output_index=output_index,
                item=self._call_item(index, call, done=False),
            )
            for piece in _split_fixed(call.arguments, _ARGUMENT_PIECE_LENGTH):
                yield event(
                    "response.function_call_arguments.delta",
                    item_id=item_id,
                    output_index=output_index,
                    delta=piece,
                )
            yield event(
                "response.function_call_arguments.done",
                item_id=item_id,
                output_index=output_index,
                name=call.name,
                arguments=call.arguments,
            )
            yield event(
                "response.output_item.done",
                output_index=output_index,
                item=self._call_item(index, call, done=True),
            )
            output_index += 1
        yield event("response.completed", response=self.response())


def _output_text_part(text: str) -> JsonObject:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _structured_output_problem(request: Mapping[str, Any], reply: _Reply) -> str | None:
    """Why a reply cannot answer a request for JSON-schema structured output, or `None` if it can."""
    text_options = request.get("text")
    response_format = request.get("response_format")
    requested: Any = None
    if isinstance(text_options, dict):
        requested = cast(JsonObject, text_options).get("format")
    elif isinstance(response_format, dict):
        requested = cast(JsonObject, response_format)
    if not isinstance(requested, dict) or cast(JsonObject, requested).get("type") not in (
        "json_schema",
        "json_object",
    ):
        return None
    if reply.text is None:
        return None
    try:
        json.loads(reply.text)
    except json.JSONDecodeError:
        return (
            "The request asks for structured output (a JSON schema) but the matching rule's text is not "
            f"JSON: {reply.text[:200]!r}. Give the rule a JSON text."
        )
    return None


def _responses_messages(body: Mapping[str, Any]) -> list[JsonObject]:
    """Read a Responses API request's `instructions` and `input` items as chat messages.

    Consecutive assistant output items (a message, function calls, reasoning) form one assistant
    message, as one chat completion would, so `Rule.when_turn` counts model replies on both APIs.
    """
    messages: list[JsonObject] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        messages.append({"role": "user", "content": raw_input})
        return messages
    if not isinstance(raw_input, list):
        raise ValueError("The request body needs 'input': a string or a list of input items.")
    assistant: JsonObject | None = None  # the assistant message being assembled from output items

    def open_assistant() -> JsonObject:
        nonlocal assistant
        if assistant is None:
            assistant = {"role": "assistant", "content": None}
            messages.append(assistant)
        return assistant

    for raw_item in cast(list[Any], raw_input):
        if not isinstance(raw_item, dict):
            raise ValueError(f"Each Responses API input item must be a JSON object, got {raw_item!r}.")
        item = cast(JsonObject, raw_item)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            text = _content_text(item.get("content"))
            if role == "assistant":
                message = open_assistant()
                message["content"] = text if message["content"] is None else f"{message['content']}\n{text}"
            else:
                assistant = None
                messages.append({"role": "system" if role == "developer" else role, "content": text})
        elif kind == "function_call":
            calls = open_assistant().setdefault("tool_calls", [])
            calls.append(
                {
                    "id": item.get("call_id"),
                    "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments")},
                }
            )
        elif kind == "function_call_output":
            assistant = None
            output = item.get("output")
            messages.append(
                {"role": "tool", "tool_call_id": item.get("call_id"), "content": _content_text(output)}
            )
        elif kind == "reasoning":
            open_assistant()
    return messages


def _rule_matches(rule: Rule, conversation: _Conversation) -> bool:
    """Tell whether every condition of a rule holds for a conversation."""
    if (
        rule.when_last_user_contains is not None
        and rule.when_last_user_contains not in conversation.last_user_text
    ):
        return False
    tool_result = conversation.tool_result_after_last_user
    if rule.when_last_tool_result_contains is not None and (
        tool_result is None or rule.when_last_tool_result_contains not in tool_result
    ):
        return False
    if rule.when_turn is not None and rule.when_turn != conversation.assistant_message_count:
        return False
    if rule.when_conversation_contains is not None and not any(
        rule.when_conversation_contains in _content_text(message.get("content"))
        for message in conversation.messages
    ):
        return False
    return rule.when_tools_offered is None or rule.when_tools_offered in conversation.offered_tool_names


def _select_rule(script: Script, conversation: _Conversation) -> tuple[int, Rule] | None:
    """Return the index and the first rule of a script that matches, or `None`."""
    for index, rule in enumerate(script.rules):
        if _rule_matches(rule, conversation):
            return index, rule
    return None


def _render_reply(rule: Rule, conversation: _Conversation, model: str) -> _Reply:
    digest = conversation.digest
    text = rule.text
    if text is not None:
        text = text.replace(LAST_TOOL_RESULT_PLACEHOLDER, conversation.last_tool_result or "").replace(
            LAST_USER_PLACEHOLDER, conversation.last_user_text
        )
    tool_calls = tuple(
        _RenderedToolCall(
            id=call.id if call.id is not None else _derived_tool_call_id(digest, index),
            name=call.name,
            arguments=json.dumps(call.arguments, ensure_ascii=False),
        )
        for index, call in enumerate(rule.tool_calls)
    )
    if rule.usage is not None:
        prompt_tokens = rule.usage.prompt_tokens
        completion_tokens = rule.usage.completion_tokens
    else:
        prompt_tokens = _estimate_tokens(_conversation_character_count(conversation.messages))
        completion_tokens = _estimate_tokens(
            len(text or "") + sum(len(call.name) + len(call.arguments) for call in tool_calls)
        )
    return _Reply(
        completion_id="chatcmpl-" + digest[:24],
        model=model,
        text=text,
        tool_calls=tool_calls,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )


def _derived_tool_call_id(conversation_digest: str, call_index: int) -> str:
    seed = f"{conversation_digest}:{call_index}".encode()
    return "call_" + hashlib.sha256(seed).hexdigest()[:24]


def _estimate_tokens(character_count: int) -> int:
    return character_count // 4 + 1


def _conversation_character_count(messages: Sequence[Mapping[str, Any]]) -> int:
    total = 0
    for message in messages:
        total += len(_content_text(message.get("content")))
        raw_tool_calls = message.get("tool_calls")
        if isinstance(raw_tool_calls, list):
            for raw_call in cast(list[Any], raw_tool_calls):
                if isinstance(raw_call, dict):
                    function = cast(JsonObject, raw_call).get("function")
                    if isinstance(function, dict):
                        arguments = cast(JsonObject, function).get("arguments")
                        if isinstance(arguments, str):
                            total += len(arguments)
    return total


def _content_text(content: Any) -> str:
    """Return the text of a message `content`: a string, or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in cast(list[Any], content):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                text = cast(JsonObject, part).get("text")
                if isinstance(text, str):
                    texts.append(text)
        return "\n".join(texts)
    return ""


def _offered_tool_names(body: Mapping[str, Any]) -> Iterator[str]:
    raw_tools = body.get("tools")
    if isinstance(raw_tools, list):
        for raw_tool in cast(list[Any], raw_tools):
            if isinstance(raw_tool, dict):
                tool = cast(JsonObject, raw_tool)
                function = tool.get("function")
                if isinstance(function, dict):
                    name = cast(JsonObject, function).get("name")
                    if isinstance(name, str):
                        yield name
                elif tool.get("type") == "function" and isinstance(tool.get("name"), str):
                    yield cast(str, tool["name"])  # the Responses API's flat function tool
    raw_functions = body.get("functions")
    if isinstance(raw_functions, list):
        for raw_function in cast(list[Any], raw_functions):
            if isinstance(raw_function, dict):
                name = cast(JsonObject, raw_function).get("name")
                if isinstance(name, str):
                    yield name


def _split_words(text: str) -> list[str]:
    """Split text into pieces that each end a word and keep all whitespace, as streams do."""
    return [piece for piece in re.findall(r"\s*\S+|\s+", text) if piece]


def _split_fixed(text: str, length: int) -> list[str]:
    if not text:
        return []
    return [text[start : start + length] for start in range(0, len(text), length)]


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _reject_unknown_keys(data: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(
            f"Unknown key(s) in a scripted {what}: {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}."
        )


def read_request_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read the request log written by a `ScriptedModelServer`, one record per request.

    A last line without its newline (a write cut short by a crash) is ignored.

    Args:
        path: The request log file.

    Returns:
        The records in file order; an empty list if the file does not exist. Each record has
        `sequence`, `pid`, `unix_time`, `path`, `model`, `last_user`, `turn`, `matched_rule`,
        `streamed`, `reply_kind` (`"text"`, `"tool_calls"`, `"no_match"` or
        `"invalid_request"`), `tool_calls` (the names called) and `status`.

    Raises:
        ValueError: If a complete line is not a JSON object.
    """
    try:
        content = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    lines = content.split(b"\n")
    complete_lines = lines[:-1]
    trailing = lines[-1]
    records: list[dict[str, Any]] = []
    for line_number, line in enumerate(complete_lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"Line {line_number} of the request log {str(path)!r} is not JSON.") from error
        if not isinstance(record, dict):
            raise ValueError(f"Line {line_number} of the request log {str(path)!r} is not a JSON object.")
        records.append(cast(dict[str, Any], record))
    if trailing.strip():
        try:
            record = json.loads(trailing)
        except json.JSONDecodeError:
            return records
        if isinstance(record, dict):
            records.append(cast(dict[str, Any], record))
    return records


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(
            f"ScriptedModelServer only binds to a loopback address (127.0.0.1, ::1 or localhost), "
            f"not {host!r}: it is a test server without authentication."
        )


class ScriptedModelServer:
    """An OpenAI-compatible model server (chat completions and Responses API) that replies from a `Script`.

    Routes: `POST /v1/chat/completions` (also `/chat/completions`), `POST /v1/responses` (also
    `/responses`), `GET /v1/models` and `GET /health`. Streaming requests get Server-Sent Events in
    chunked transfer encoding: `chat.completion.chunk`s, or the Responses API's event sequence
    (`response.created`, `response.in_progress`, `response.output_item.added`,
    `response.content_part.added`, `response.output_text.delta`..., `response.function_call_arguments.delta`...,
    `response.output_item.done`, `response.completed`). A Responses API request is matched as the
    equivalent chat messages (see the module docstring). When no rule matches, the server answers
    HTTP 500 with an OpenAI-style error that quotes the last user message; so it does when a request
    asks for JSON-schema structured output and the matching rule's text is not JSON. Both carry
    `x-should-retry: false`, so neither the client nor a model-retry policy sends them again. A rule with
    `error_status` answers that HTTP error (with its `error_headers`, e.g. `Retry-After`) the first
    `error_times` times it matches, or always. Use the server as a context manager, or call `start`
    and `stop`.

    Clients should not retry, so that the request log counts each model call once: for the
    `openai` client, pass `max_retries=0`.

    Args:
        script: The rules that choose each reply.
        host: The loopback address to bind to.
        port: The port to bind to; 0 picks a free port.
        request_log_path: A file to append one JSON line to for every model request (either API),
            before the reply is sent. Read it with `read_request_log`.

    Raises:
        ValueError: If `host` is not a loopback address.

    Example:
        ```python
        script = Script([Rule(text="Hello!")])
        with ScriptedModelServer(script) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        ```
    """

    def __init__(
        self,
        script: Script,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        request_log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        _check_loopback(host)
        self._script = script
        self._host = host
        self._requested_port = port
        self._request_log_path = Path(request_log_path) if request_log_path is not None else None
        self._lock = threading.Lock()
        self._sequence = 0
        self._request_records: list[dict[str, Any]] = []
        self._request_bodies: list[dict[str, Any]] = []
        self._http_server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._open_connections: set[socket.socket] = set()
        self._log_directory_synced = False
        self._errors_sent: dict[int, int] = {}

    @property
    def script(self) -> Script:
        """The script that chooses the replies."""
        return self._script

    @property
    def port(self) -> int:
        """The port the server listens on.

        Raises:
            RuntimeError: If the server is not running.
        """
        return int(self._running_server().server_address[1])

    @property
    def host(self) -> str:
        """The address the server listens on.

        Raises:
            RuntimeError: If the server is not running.
        """
        return str(self._running_server().server_address[0])

    @property
    def base_url(self) -> str:
        """The OpenAI base URL of the server, such as `http://127.0.0.1:PORT/v1`.

        Raises:
            RuntimeError: If the server is not running.
        """
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"

    @property
    def request_log_path(self) -> Path | None:
        """The request log file, if one was given."""
        return self._request_log_path

    @property
    def request_count(self) -> int:
        """How many model requests (chat completions and Responses API) this server received, failed ones too."""
        with self._lock:
            return len(self._request_records)

    @property
    def request_records(self) -> list[dict[str, Any]]:
        """A copy of the records of the model requests received, as in the request log."""
        with self._lock:
            return [dict(record) for record in self._request_records]

    @property
    def request_bodies(self) -> list[dict[str, Any]]:
        """The parsed JSON bodies of the valid model requests received (either API), in order."""
        with self._lock:
            return list(self._request_bodies)

    def start(self) -> Self:
        """Bind the port and serve requests on a daemon thread.

        Returns:
            The server itself, so that `server = ScriptedModelServer(script).start()` works.

        Raises:
            RuntimeError: If the server was already started.
            OSError: If the address cannot be bound.
        """
        if self._http_server is not None:
            raise RuntimeError("This ScriptedModelServer is already running.")
        http_server = _create_http_server(
            self._script,
            self._host,
            self._requested_port,
            record_request=self._record_request,
            track_connection=self._track_connection,
            answer_error=self._answer_error,
        )
        self._http_server = http_server
        self._thread = threading.Thread(
            target=http_server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"ScriptedModelServer:{http_server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and release the port. Does nothing if not running."""
        http_server = self._http_server
        if http_server is None:
            return
        http_server.shutdown()
        http_server.server_close()
        with self._lock:
            connections = list(self._open_connections)
        for connection in connections:
            _close_quietly(connection)
        if self._thread is not None:
            self._thread.join()
        self._http_server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exception_type: type[BaseException] | None,
        exception: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._http_server is not None else "not running"
        return f"ScriptedModelServer({len(self._script.rules)} rules, {where})"

    def _running_server(self) -> ThreadingHTTPServer:
        if self._http_server is None:
            raise RuntimeError("The ScriptedModelServer is not running: call start() or use a with block.")
        return self._http_server

    def _track_connection(self, connection: socket.socket, opened: bool) -> None:
        with self._lock:
            if opened:
                self._open_connections.add(connection)
            else:
                self._open_connections.discard(connection)

    def _record_request(
        self,
        *,
        path: str,
        body: dict[str, Any] | None,
        conversation: _Conversation | None,
        matched_rule: int | None,
        reply_kind: ReplyKind,
        tool_call_names: Sequence[str],
        status: int,
    ) -> None:
        """Append a request record to memory and to the request log, durably, before replying."""
        streamed = bool(body.get("stream")) if body is not None else False
        model = body.get("model") if body is not None else None
        with self._lock:
            self._sequence += 1
            record: dict[str, Any] = {
                "sequence": self._sequence,
                "pid": os.getpid(),
                "unix_time": time.time(),
                "path": path,
                "model": model if isinstance(model, str) else None,
                "last_user": conversation.last_user_text if conversation is not None else None,
                "turn": conversation.assistant_message_count if conversation is not None else None,
                "matched_rule": matched_rule,
                "streamed": streamed,
                "reply_kind": reply_kind,
                "tool_calls": list(tool_call_names),
                "status": status,
            }
            self._request_records.append(record)
            if body is not None:
                self._request_bodies.append(body)
            if self._request_log_path is not None:
                self._append_log_line(self._request_log_path, json.dumps(record, ensure_ascii=False) + "\n")

    def _answer_error(self, rule_index: int, rule: Rule) -> bool:
        """Whether this request matched by `rule` gets the rule's scripted error (counted per rule)."""
        if rule.error_status is None:
            return False
        with self._lock:
            sent = self._errors_sent.get(rule_index, 0)
            if rule.error_times is not None and sent >= rule.error_times:
                return False
            self._errors_sent[rule_index] = sent + 1
            return True

    def _append_log_line(self, path: Path, line: str) -> None:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line.encode("utf-8"))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        if not self._log_directory_synced:
            self._log_directory_synced = True
            _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a newly created file's directory entry durable; best effort where unsupported."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _close_quietly(connection: socket.socket) -> None:
    import socket as socket_module

    with contextlib.suppress(OSError):
        connection.shutdown(socket_module.SHUT_RDWR)


def _create_http_server(
    script: Script,
    host: str,
    port: int,
    *,
    record_request: _RecordRequest,
    track_connection: Callable[[socket.socket, bool], None],
    answer_error: Callable[[int, Rule], bool] = lambda _index, _rule: False,
) -> ThreadingHTTPServer:
    """Build and bind the HTTP server. `http.server` is imported here to keep imports cheap."""
    import socket as socket_module
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class _Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

        def process_request(self, request: Any, client_address: Any) -> None:
            track_connection(cast("socket.socket", request), True)
            super().process_request(request, client_address)

        def shutdown_request(self, request: Any) -> None:
            track_connection(cast("socket.socket", request), False)
            super().shutdown_request(request)

    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "KitaruScriptedModelServer/1"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the default per-request logging to stderr."""

        def do_GET(self) -> None:
            """Serve the model list and the health check."""
            path = self._route_path()
            if path in _HEALTH_PATHS:
                self._send_json(200, {"status": "ok"})
            elif path in _MODELS_PATHS:
                self._send_json(
                    200,
                    {"object": "list", "data": [_model_entry(name) for name in script.model_names]},
                )
            elif path.startswith(("/v1/models/", "/models/")):
                self._send_json(200, _model_entry(path.rsplit("/", 1)[-1]))
            else:
                self._send_error(404, f"No route for GET {path}.", "not_found")

        def do_POST(self) -> None:
            """Serve chat completions and Responses API requests."""
            path = self._route_path()
            responses_api = path in _RESPONSES_PATHS
            if path not in _CHAT_COMPLETIONS_PATHS and not responses_api:
                self._read_body()
                self._send_error(404, f"No route for POST {path}.", "not_found")
                return
            api_name = "Responses API" if responses_api else "chat-completions"
            body: dict[str, Any] | None = None
            conversation: _Conversation | None = None
            try:
                parsed = json.loads(self._read_body() or b"null")
                if not isinstance(parsed, dict):
                    raise ValueError("The request body must be a JSON object.")
                body = cast(dict[str, Any], parsed)
                conversation = (
                    _Conversation.from_responses_request(body)
                    if responses_api
                    else _Conversation.from_request(body)
                )
            except ValueError as error:
                record_request(
                    path=path,
                    body=body,
                    conversation=None,
                    matched_rule=None,
                    reply_kind="invalid_request",
                    tool_call_names=(),
                    status=400,
                )
                self.close_connection = True
                self._send_error(400, f"Invalid {api_name} request: {error}", "invalid_request_error")
                return
            selection = _select_rule(script, conversation)
            if selection is None:
                record_request(
                    path=path,
                    body=body,
                    conversation=conversation,
                    matched_rule=None,
                    reply_kind="no_match",
                    tool_call_names=(),
                    status=500,
                )
                self._send_error(500, _no_match_message(conversation, len(script.rules)), "no_matching_rule", final=True)
                return
            rule_index, rule = selection
            if rule.error_status is not None and answer_error(rule_index, rule):
                record_request(
                    path=path,
                    body=body,
                    conversation=conversation,
                    matched_rule=rule_index,
                    reply_kind="scripted_error",
                    tool_call_names=(),
                    status=rule.error_status,
                )
                self._send_scripted_error(rule.error_status, rule.error_headers)
                return
            model = body.get("model")
            reply = _render_reply(rule, conversation, model if isinstance(model, str) else DEFAULT_MODEL_NAME)
            problem = _structured_output_problem(body, reply)
            if problem is not None:
                record_request(
                    path=path,
                    body=body,
                    conversation=conversation,
                    matched_rule=rule_index,
                    reply_kind="invalid_request",
                    tool_call_names=(),
                    status=500,
                )
                self._send_error(500, problem, "scripted_reply_not_json", final=True)
                return
            record_request(
                path=path,
                body=body,
                conversation=conversation,
                matched_rule=rule_index,
                reply_kind=reply.kind,
                tool_call_names=[call.name for call in reply.tool_calls],
                status=200,
            )
            if responses_api:
                responses_reply = _ResponsesReply(reply, body)
                if body.get("stream"):
                    self._send_events(responses_reply.events())
                else:
                    self._send_json(200, responses_reply.response())
            elif body.get("stream"):
                stream_options = body.get("stream_options")
                include_usage = isinstance(stream_options, dict) and bool(
                    cast(JsonObject, stream_options).get("include_usage")
                )
                self._send_stream(reply, include_usage=include_usage)
            else:
                self._send_json(200, reply.completion())

        def _route_path(self) -> str:
            path = self.path.split("?", 1)[0]
            return path.rstrip("/") or "/"

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                return self._read_chunked_body()
            length = int(self.headers.get("Content-Length") or 0)
            if length > _MAXIMUM_BODY_BYTES:
                raise ValueError("The request body is too large.")
            return self.rfile.read(length) if length > 0 else b""

        def _read_chunked_body(self) -> bytes:
            parts: list[bytes] = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()

        def _send_json(self, status: int, payload: JsonObject, headers: Mapping[str, str] | None = None) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def _send_scripted_error(self, status: int, headers: Mapping[str, str]) -> None:
            default_kind = "server_error" if status >= 500 else "invalid_request_error"
            code, kind = _SCRIPTED_ERRORS.get(status, (default_kind, default_kind))
            message = f"Scripted error: HTTP {status}."
            error = {"message": message, "type": kind, "param": None, "code": code}
            self._send_json(status, {"error": error}, headers)

        def _send_error(self, status: int, message: str, code: str, *, final: bool = False) -> None:
            # `final`: a mistake in the script; `x-should-retry: false` (OpenAI's header) tells the
            # client and a model-retry policy that sending the request again cannot help.
            self._send_json(
                status,
                {
                    "error": {
                        "message": message,
                        "type": "invalid_request_error" if status < 500 else "server_error",
                        "param": None,
                        "code": code,
                    }
                },
                {"x-should-retry": "false"} if final else None,
            )

        def _send_stream(self, reply: _Reply, *, include_usage: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for chunk in reply.chunks(include_usage=include_usage):
                    self._write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
                self._write_chunk(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _send_events(self, events: Iterator[JsonObject]) -> None:
            """Send Responses API events as Server-Sent Events, each with its `event:` name."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for data in events:
                    self._write_chunk(f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _write_chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n")
            self.wfile.flush()

    family = socket_module.AF_INET6 if ":" in host else socket_module.AF_INET
    _Server.address_family = family
    return _Server((host, port), _Handler)


_SCRIPTED_ERRORS: dict[int, tuple[str, str]] = {
    401: ("invalid_api_key", "invalid_request_error"),
    403: ("permission_denied", "invalid_request_error"),
    408: ("timeout", "invalid_request_error"),
    429: ("rate_limit_exceeded", "requests"),
    500: ("server_error", "server_error"),
    503: ("overloaded", "server_error"),
}
"""The OpenAI-style `code` and `type` of a scripted error by HTTP status."""


def _model_entry(name: str) -> JsonObject:
    return {"id": name, "object": "model", "created": CREATED_TIMESTAMP, "owned_by": "kitaru-scripted"}


def _no_match_message(conversation: _Conversation, rule_count: int) -> str:
    tool_result = conversation.tool_result_after_last_user
    details = (
        f"last user message: {conversation.last_user_text!r}; "
        f"assistant turns so far: {conversation.assistant_message_count}; "
        f"last tool result: {tool_result!r}; "
        f"tools offered: {sorted(conversation.offered_tool_names)}"
    )
    return f"No rule of the script ({rule_count} rules) matched the request. {details}"
