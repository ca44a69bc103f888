# pyright: strict
"""Which rule of a `Script` answers which model request, and the reply it renders.

A request (chat completions, or the Responses API read as the equivalent chat messages) is reduced
to a `_Conversation`; the first rule that matches it is rendered into a `_Reply` (a chat
completion or its chunks) or a `_ResponsesReply` (a `response` object and its SSE events). The
reply depends only on the request, so a restarted agent process that sends the same conversation
gets the same reply, including the same tool-call ids.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from kitaru_core.testing._script import (
    LAST_TOOL_RESULT_PLACEHOLDER,
    LAST_USER_PLACEHOLDER,
    JsonObject,
    Rule,
    Script,
)

__all__ = [  # what the server (`_http`) uses
    "CREATED_TIMESTAMP",
    "ReplyKind",
    "_Conversation",
    "_Reply",
    "_ResponsesReply",
    "_no_match_message",
    "_render_reply",
    "_select_rule",
    "_structured_output_problem",
]

CREATED_TIMESTAMP = 0
"""The fixed `created` value of every completion, so replies are byte-for-byte reproducible."""

_ARGUMENT_PIECE_LENGTH = 12

ReplyKind = Literal["text", "tool_calls", "no_match", "invalid_request", "scripted_error"]


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


def _no_match_message(conversation: _Conversation, rule_count: int) -> str:
    tool_result = conversation.tool_result_after_last_user
    details = (
        f"last user message: {conversation.last_user_text!r}; "
        f"assistant turns so far: {conversation.assistant_message_count}; "
        f"last tool result: {tool_result!r}; "
        f"tools offered: {sorted(conversation.offered_tool_names)}"
    )
    return f"No rule of the script ({rule_count} rules) matched the request. {details}"
