"""Chat model calls as checkpoint calls: a class-level wrap of LangChain's `BaseChatModel`.

Every provider's `invoke`, `ainvoke`, `batch`, `generate` (and so every `bind_tools` binding, every
`create_agent` / `create_react_agent` model node) goes through `BaseChatModel._generate_with_cache`
/ `_agenerate_with_cache`; a direct `stream()` / `astream()` does not, so those are wrapped too.
The wraps act only inside a run of a graph made durable; everywhere else they call straight through.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessageChunk,
    BaseMessage,
    message_to_dict,
    messages_from_dict,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import BaseModel

from kitaru_adapters._streaming import relay_while_running
from kitaru_adapters.langgraph._position import Position, current_position
from kitaru_core import CallUsage, fingerprint, run_checkpoint, run_checkpoint_async
from kitaru_core.errors import AdapterError, SerializationError

CHAT_RESULT_FORMAT = "json:langchain.ChatResult"
MESSAGE_FORMAT = "json:langchain.AIMessage"
WRAPPED_MARKER = "__kitaru_langgraph_wrapped__"


def jsonable(value: Any) -> Any:
    """A JSON form of LangChain values (messages, pydantic models, containers) for fingerprints.

    Other objects are represented by their `repr`, or by their type alone when the `repr` names a
    memory address; such values do not tell calls apart.
    """
    if isinstance(value, BaseMessage):
        return message_identity(value)
    if isinstance(value, BaseModel):
        return jsonable(value.model_dump(mode="json", exclude_none=True))
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items() if item is not None}  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]  # pyright: ignore[reportUnknownVariableType]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, type):
        schema = getattr(value, "model_json_schema", None)
        return schema() if callable(schema) else value.__qualname__
    text = repr(value)
    # A default repr names a memory address, which differs in every process: keep the type only.
    return f"<{type(value).__qualname__}>" if " at 0x" in text else text


def message_identity(message: BaseMessage) -> dict[str, Any]:
    """What a message contributes to a fingerprint: its role, content, name and tool calls.

    Message ids, response metadata (completion ids, timestamps) and usage are left out: they
    differ between a live reply and the same reply loaded back from a checkpointer.
    """
    identity: dict[str, Any] = {"type": message.type, "content": jsonable(message.content)}
    if message.name:
        identity["name"] = message.name
    tool_calls = getattr(message, "tool_calls", None)
    if tool_calls:
        identity["tool_calls"] = [
            {"name": call.get("name"), "args": jsonable(call.get("args")), "id": call.get("id")}
            for call in tool_calls
        ]
    tool_call_id = getattr(message, "tool_call_id", None)
    if tool_call_id:
        identity["tool_call_id"] = tool_call_id
    return identity


def model_name_of(model: BaseChatModel) -> str | None:
    """The model name a chat model sends to its provider (`model_name`, `model` or `model_id`)."""
    for attribute in ("model_name", "model", "model_id"):
        name = getattr(model, attribute, None)
        if isinstance(name, str) and name:
            return name
    return None


def request_identity(
    model: BaseChatModel, messages: Sequence[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """What a model call's fingerprint covers: model, messages (without ids), stop and bound options."""
    options = {key: value for key, value in kwargs.items() if key not in {"run_manager", "callbacks"}}
    return {
        "model": [type(model).__qualname__, model_name_of(model)],
        "messages": [message_identity(message) for message in messages],
        "stop": stop,
        "options": jsonable(options),
    }


# -- codecs ------------------------------------------------------------------------------------------


class ChatResultCodec:
    """Stores a `ChatResult` as LangChain's own message JSON (`message_to_dict`) plus generation info."""

    def encode(self, value: Any) -> tuple[str, bytes]:
        """Serialize a `ChatResult`."""
        result: ChatResult = value
        document = {
            "generations": [
                {"message": message_to_dict(generation.message), "info": generation.generation_info}
                for generation in result.generations
            ],
            "llm_output": result.llm_output,
        }
        try:
            return CHAT_RESULT_FORMAT, json.dumps(document, default=str).encode("utf-8")
        except (TypeError, ValueError) as error:
            raise SerializationError(f"A chat result could not be stored as JSON: {error}") from error

    def decode(self, format: str, payload: bytes) -> Any:
        """Load a `ChatResult`."""
        if format != CHAT_RESULT_FORMAT:
            raise SerializationError(f"Expected a stored LangChain chat result, found format {format!r}.")
        document = json.loads(payload)
        generations = [
            ChatGeneration(
                message=messages_from_dict([generation["message"]])[0], generation_info=generation["info"]
            )
            for generation in document["generations"]
        ]
        return ChatResult(generations=generations, llm_output=document.get("llm_output"))


class MessageCodec:
    """Stores the message a direct `stream()` produced (all chunks added up) as LangChain JSON."""

    def encode(self, value: Any) -> tuple[str, bytes]:
        """Serialize a message."""
        return MESSAGE_FORMAT, json.dumps(message_to_dict(value), default=str).encode("utf-8")

    def decode(self, format: str, payload: bytes) -> Any:
        """Load a message."""
        if format != MESSAGE_FORMAT:
            raise SerializationError(f"Expected a stored LangChain message, found format {format!r}.")
        return messages_from_dict([json.loads(payload)])[0]


# -- usage -------------------------------------------------------------------------------------------


def _cost_usd(model_name: str | None, input_tokens: int, output_tokens: int, cached: int) -> float | None:
    if not model_name:
        return None
    try:
        from genai_prices import Usage as PriceUsage
        from genai_prices import calc_price

        price = calc_price(
            PriceUsage(input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=cached),
            model_ref=model_name,
        )
        return float(price.total_price)
    except (ImportError, LookupError, ValueError, TypeError):
        return None


def message_usage(message: BaseMessage, fallback_model: str | None) -> CallUsage:
    """Tokens and cost (genai-prices, where the model is known) of one AI message."""
    usage = getattr(message, "usage_metadata", None) or {}
    metadata = getattr(message, "response_metadata", None) or {}
    model_name = metadata.get("model_name") or metadata.get("model") or fallback_model
    input_tokens = usage.get("input_tokens")
    output_tokens = usage.get("output_tokens")
    details = usage.get("input_token_details") or {}
    cost = None
    if input_tokens is not None and output_tokens is not None:
        cost = _cost_usd(model_name, input_tokens, output_tokens, details.get("cache_read") or 0)
    return CallUsage(
        model_name=model_name, input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost
    )


def _result_usage(fallback_model: str | None) -> Callable[[ChatResult], CallUsage | None]:
    def usage_of(result: ChatResult) -> CallUsage | None:
        if not result.generations:
            return None
        return message_usage(result.generations[0].message, fallback_model)

    return usage_of


def _message_usage(fallback_model: str | None) -> Callable[[BaseMessage], CallUsage | None]:
    def usage_of(message: BaseMessage) -> CallUsage | None:
        return message_usage(message, fallback_model)

    return usage_of


def _options(
    model: BaseChatModel, position: Position, identity: dict[str, Any], codec: Any, usage: Any
) -> dict[str, Any]:
    digest = fingerprint(identity)
    name = model_name_of(model)
    details: dict[str, Any] = {"model": name or type(model).__qualname__}
    if position.node:
        details["node"] = position.node
    if position.step is not None:
        details["step"] = position.step
    return {
        "discriminator": position.discriminator(digest),
        "kind": "model",
        "inputs": identity,
        "codec": codec,
        "usage": usage,
        "details": details,
    }


# -- the wraps ---------------------------------------------------------------------------------------

_original: dict[str, Any] = {}


def _generate_with_cache(
    self: BaseChatModel,
    messages: list[BaseMessage],
    stop: list[str] | None = None,
    run_manager: Any = None,
    **kwargs: Any,
) -> ChatResult:
    original = _original["_generate_with_cache"]
    position = current_position()
    if position is None:
        return original(self, messages, stop, run_manager, **kwargs)
    identity = request_identity(self, messages, stop, kwargs)
    name = model_name_of(self)

    def request() -> ChatResult:
        return original(self, messages, stop, run_manager, **kwargs)

    return run_checkpoint(
        "model", request, **_options(self, position, identity, ChatResultCodec(), _result_usage(name))
    )


async def _agenerate_with_cache(
    self: BaseChatModel,
    messages: list[BaseMessage],
    stop: list[str] | None = None,
    run_manager: Any = None,
    **kwargs: Any,
) -> ChatResult:
    original = _original["_agenerate_with_cache"]
    position = current_position()
    if position is None:
        return await original(self, messages, stop, run_manager, **kwargs)
    identity = request_identity(self, messages, stop, kwargs)
    name = model_name_of(self)

    async def request() -> ChatResult:
        return await original(self, messages, stop, run_manager, **kwargs)

    return await run_checkpoint_async(
        "model", request, **_options(self, position, identity, ChatResultCodec(), _result_usage(name))
    )


def _chunk_of(message: BaseMessage) -> AIMessageChunk:
    """A stored message as the single chunk of a served stream."""
    if isinstance(message, AIMessageChunk):
        return message
    data = message.model_dump(exclude={"type", "tool_calls", "invalid_tool_calls"})
    tool_calls = getattr(message, "tool_calls", None) or []
    chunk = AIMessageChunk(**data, tool_calls=tool_calls)
    return chunk


def _added(chunks: Sequence[BaseMessage]) -> BaseMessage:
    if not chunks:
        raise AdapterError(
            "The model's stream ended without any chunk, so there is no reply to record; the call "
            "will run again on resume."
        )
    total: Any = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


_END = object()


def _stream(
    self: BaseChatModel, input: Any, config: Any = None, *, stop: list[str] | None = None, **kwargs: Any
) -> Iterator[Any]:
    original = _original["stream"]
    position = current_position()
    if position is None:
        yield from original(self, input, config, stop=stop, **kwargs)
        return
    messages = self._convert_input(input).to_messages()
    identity = request_identity(self, messages, stop, kwargs)
    name = model_name_of(self)
    live: queue.Queue[Any] = queue.Queue()
    held: list[BaseMessage] = []

    def consume() -> BaseMessage:
        for chunk in original(self, input, config, stop=stop, **kwargs):
            if held:
                live.put(held[-1])
            held.append(chunk)
        return _added(held)

    outcome: list[Any] = []

    def call() -> None:
        try:
            outcome.append(
                run_checkpoint(
                    "model",
                    consume,
                    **_options(self, position, identity, MessageCodec(), _message_usage(name)),
                )
            )
        except BaseException as error:  # handed to the consumer's thread below
            outcome.append(error)
        finally:
            live.put(_END)

    worker = threading.Thread(target=contextvars.copy_context().run, args=(call,), daemon=True)
    worker.start()
    while (item := live.get()) is not _END:
        yield item
    worker.join()
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    # Live: the last chunk, now that the whole reply is committed; served: the stored reply as one chunk.
    yield held[-1] if held else _chunk_of(result)


async def _astream(
    self: BaseChatModel, input: Any, config: Any = None, *, stop: list[str] | None = None, **kwargs: Any
) -> AsyncIterator[Any]:
    original = _original["astream"]
    position = current_position()
    if position is None:
        async for chunk in original(self, input, config, stop=stop, **kwargs):
            yield chunk
        return
    messages = self._convert_input(input).to_messages()
    identity = request_identity(self, messages, stop, kwargs)
    name = model_name_of(self)
    live: asyncio.Queue[Any] = asyncio.Queue()
    held: list[BaseMessage] = []

    async def consume() -> BaseMessage:
        async for chunk in original(self, input, config, stop=stop, **kwargs):
            if held:
                live.put_nowait(held[-1])
            held.append(chunk)
        return _added(held)

    call = asyncio.ensure_future(
        run_checkpoint_async(
            "model", consume, **_options(self, position, identity, MessageCodec(), _message_usage(name))
        )
    )
    async with contextlib.aclosing(relay_while_running(call, live)) as chunks:
        async for chunk in chunks:
            yield chunk
    result = call.result()
    yield held[-1] if held else _chunk_of(result)


def install_model_wraps() -> None:
    """Wrap `BaseChatModel` once per process (the wraps do nothing outside durable graph runs)."""
    if getattr(BaseChatModel._generate_with_cache, WRAPPED_MARKER, False):
        return
    replacements: dict[str, Any] = {
        "_generate_with_cache": _generate_with_cache,
        "_agenerate_with_cache": _agenerate_with_cache,
        "stream": _stream,
        "astream": _astream,
    }
    for attribute, replacement in replacements.items():
        _original[attribute] = getattr(BaseChatModel, attribute)
        setattr(replacement, WRAPPED_MARKER, True)
        replacement.__doc__ = _original[attribute].__doc__
        setattr(BaseChatModel, attribute, replacement)
