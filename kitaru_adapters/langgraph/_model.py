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
import dataclasses
import inspect
import json
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    message_to_dict,
    messages_from_dict,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from kitaru_adapters.langgraph._position import Position, active_run, current_position
from kitaru_core.adapters import (
    UNCONVERTED,
    CallUsage,
    ModelResponseOverride,
    cost_usd,
    final_once_relayed,
    fingerprint,
    model_retry_policy,
    read_model_response_override,
    relay_while_running,
    run_checkpoint,
    run_checkpoint_async,
    stable_text,
)
from kitaru_core.adapters import jsonable as shared_jsonable
from kitaru_core.errors import AdapterError, SerializationError

CHAT_RESULT_FORMAT = "json:langchain.ChatResult"
MESSAGE_FORMAT = "json:langchain.AIMessage"
CHUNKS_FORMAT = "json:langchain.AIMessageChunks"
WRAPPED_MARKER = "__kitaru_langgraph_wrapped__"


def jsonable(value: Any) -> Any:
    """A JSON form of LangChain values (messages, pydantic models, containers) for fingerprints.

    `kitaru_core.adapters.jsonable`'s rules, with LangChain messages as `message_identity` gives
    them. As 0.1 wrote them (fingerprints recorded then still match): dataclass instances are their
    `repr`, classes their JSON schema or qualified name. Other objects are represented by their
    `repr`, or by their type alone when the `repr` names a memory address; such values do not tell
    calls apart.
    """
    return shared_jsonable(value, convert=_langchain_form)


def _langchain_form(value: Any) -> Any:
    if isinstance(value, BaseMessage):
        return message_identity(value)
    if isinstance(value, type):
        schema = getattr(value, "model_json_schema", None)
        return schema() if callable(schema) else value.__qualname__
    if dataclasses.is_dataclass(value):
        return stable_text(value, repr(value))
    return UNCONVERTED


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


def overridden_message(override: ModelResponseOverride) -> AIMessage:
    """A replay's model-response override as the `AIMessage` a chat model returns.

    Its content is the text (`""` without one), its `tool_calls` the given calls (LangChain's
    `{"name", "args", "id", "type": "tool_call"}`), and its usage zero: no tokens were spent on it.
    """
    return AIMessage(
        content=override.text or "",
        tool_calls=[
            {"name": call.name, "args": dict(call.arguments), "id": call.id, "type": "tool_call"}
            for call in override.tool_calls
        ],
        usage_metadata={"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
        response_metadata={"kitaru_override": True},
    )


@dataclass
class RecordedChat:
    """A model call's outcome as stored: the `ChatResult` and, when the call streamed, its chunks.

    Attributes:
        result: What `_generate_with_cache` returned.
        chunks: The chunks the model streamed to the run's callbacks (`on_llm_new_token`), in
            order, or `None` when the call did not stream (and for records made before chunks
            were kept).
    """

    result: ChatResult
    chunks: list[BaseMessage] | None = None


class ChatResultCodec:
    """Stores a `ChatResult` as LangChain's own message JSON (`message_to_dict`) plus generation info.

    A call that streamed also stores its chunks (`"chunks"`: one message JSON per chunk), so a served
    call streams the same chunks again. Records without `"chunks"` still load. A replay's override
    (`kitaru_core.adapters.read_model_response_override`) loads as one generation of `overridden_message`, streamed
    (when the call streams) as one chunk.
    """

    def encode(self, value: Any) -> tuple[str, bytes]:
        """Serialize a `RecordedChat`."""
        recorded: RecordedChat = value
        document: dict[str, Any] = {
            "generations": [
                {"message": message_to_dict(generation.message), "info": generation.generation_info}
                for generation in recorded.result.generations
            ],
            "llm_output": recorded.result.llm_output,
        }
        if recorded.chunks is not None:
            document["chunks"] = [message_to_dict(chunk) for chunk in recorded.chunks]
        try:
            return CHAT_RESULT_FORMAT, json.dumps(document, default=str).encode("utf-8")
        except (TypeError, ValueError) as error:
            raise SerializationError(f"A chat result could not be stored as JSON: {error}") from error

    def decode(self, format: str, payload: bytes) -> Any:
        """Load a `RecordedChat` (or a replay's override of it)."""
        override = read_model_response_override(format, payload)
        if override is not None:
            message = overridden_message(override)
            chat = ChatResult(generations=[ChatGeneration(message=message)])
            return RecordedChat(chat, [_chunk_of(message)])
        if format != CHAT_RESULT_FORMAT:
            raise SerializationError(f"Expected a stored LangChain chat result, found format {format!r}.")
        document = json.loads(payload)
        generations = [
            ChatGeneration(
                message=messages_from_dict([generation["message"]])[0], generation_info=generation["info"]
            )
            for generation in document["generations"]
        ]
        chunks = document.get("chunks")
        return RecordedChat(
            ChatResult(generations=generations, llm_output=document.get("llm_output")),
            None if chunks is None else messages_from_dict(chunks),
        )


class MessageCodec:
    """Stores the chunks a direct `stream()` yielded, in order, as LangChain message JSON.

    Records made before chunks were kept (`json:langchain.AIMessage`, the chunks added up) load as
    a stream of that one message, and so does a replay's override (`overridden_message`).
    """

    def encode(self, value: Any) -> tuple[str, bytes]:
        """Serialize a list of chunks."""
        chunks: list[BaseMessage] = value
        document = [message_to_dict(chunk) for chunk in chunks]
        return CHUNKS_FORMAT, json.dumps(document, default=str).encode("utf-8")

    def decode(self, format: str, payload: bytes) -> Any:
        """Load the list of chunks (or a replay's override of them)."""
        override = read_model_response_override(format, payload)
        if override is not None:
            return [_chunk_of(overridden_message(override))]
        if format == CHUNKS_FORMAT:
            return messages_from_dict(json.loads(payload))
        if format == MESSAGE_FORMAT:
            return [_chunk_of(messages_from_dict([json.loads(payload)])[0])]
        raise SerializationError(f"Expected a stored LangChain message stream, found format {format!r}.")


# -- usage -------------------------------------------------------------------------------------------


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
        cost = cost_usd(model_name, input_tokens, output_tokens, details.get("cache_read") or 0)
    return CallUsage(
        model_name=model_name, input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost
    )


def _result_usage(fallback_model: str | None) -> Callable[[RecordedChat], CallUsage | None]:
    def usage_of(recorded: RecordedChat) -> CallUsage | None:
        if not recorded.result.generations:
            return None
        return message_usage(recorded.result.generations[0].message, fallback_model)

    return usage_of


def _chunks_usage(fallback_model: str | None) -> Callable[[list[BaseMessage]], CallUsage | None]:
    def usage_of(chunks: list[BaseMessage]) -> CallUsage | None:
        return message_usage(_added(chunks), fallback_model)

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
    run = active_run()
    return {
        "discriminator": position.discriminator(digest),
        "kind": "model",
        "inputs": identity,
        "codec": codec,
        "usage": usage,
        "details": details,
        # langchain-openai raises the openai SDK's errors; other providers' are classified by
        # their status code, type names and causes (see `classify_model_error`).
        "retry": model_retry_policy(run.options.model_retries if run is not None else None),
    }


# -- the wraps ---------------------------------------------------------------------------------------

_original: dict[str, Any] = {}
_install_lock = threading.Lock()


def _streams(model: BaseChatModel, run_manager: Any, async_api: bool, kwargs: dict[str, Any]) -> bool:
    """Whether LangChain streams this call to the run's callbacks (`on_llm_new_token`), as it decides."""
    if run_manager is None:
        return False
    try:
        return bool(model._should_stream(async_api=async_api, run_manager=run_manager, **kwargs))  # pyright: ignore[reportPrivateUsage]
    except Exception:  # a provider's override that cannot answer: treat it as not streaming
        return False


def _recording_tokens(run_manager: Any, chunks: list[BaseMessage]) -> None:
    """Make `run_manager` note each chunk it hands to the callbacks (one call's own run manager)."""
    if run_manager is None:
        return
    forward = run_manager.on_llm_new_token
    if inspect.iscoroutinefunction(forward):

        async def on_llm_new_token_async(token: str, *args: Any, chunk: Any = None, **kwargs: Any) -> None:
            if isinstance(chunk, ChatGenerationChunk):
                chunks.append(chunk.message)
            await forward(token, *args, chunk=chunk, **kwargs)

        run_manager.on_llm_new_token = on_llm_new_token_async
    else:

        def on_llm_new_token(token: str, *args: Any, chunk: Any = None, **kwargs: Any) -> None:
            if isinstance(chunk, ChatGenerationChunk):
                chunks.append(chunk.message)
            forward(token, *args, chunk=chunk, **kwargs)

        run_manager.on_llm_new_token = on_llm_new_token


def _replayed(chunk: BaseMessage) -> ChatGenerationChunk:
    return ChatGenerationChunk(message=_chunk_of(chunk))


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
    streams = _streams(self, run_manager, False, kwargs)
    live: list[bool] = []

    def request() -> RecordedChat:
        live.append(True)
        chunks: list[BaseMessage] = []
        if streams:
            _recording_tokens(run_manager, chunks)
        result = original(self, messages, stop, run_manager, **kwargs)
        return RecordedChat(result, chunks if streams else None)

    recorded = run_checkpoint(
        "model", request, **_options(self, position, identity, ChatResultCodec(), _result_usage(name))
    )
    if not live and streams and recorded.chunks:
        # Served: stream the stored chunks to the callbacks as the live call did (`messages` mode).
        for chunk in recorded.chunks:
            run_manager.on_llm_new_token(str(chunk.content), chunk=_replayed(chunk))
    return recorded.result


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
    streams = _streams(self, run_manager, True, kwargs)
    live: list[bool] = []

    async def request() -> RecordedChat:
        live.append(True)
        chunks: list[BaseMessage] = []
        if streams:
            _recording_tokens(run_manager, chunks)
        result = await original(self, messages, stop, run_manager, **kwargs)
        return RecordedChat(result, chunks if streams else None)

    recorded = await run_checkpoint_async(
        "model", request, **_options(self, position, identity, ChatResultCodec(), _result_usage(name))
    )
    if not live and streams and recorded.chunks:
        for chunk in recorded.chunks:
            await run_manager.on_llm_new_token(str(chunk.content), chunk=_replayed(chunk))
    return recorded.result


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

    def consume() -> list[BaseMessage]:
        with final_once_relayed(held):
            for chunk in original(self, input, config, stop=stop, **kwargs):
                if held:
                    live.put(held[-1])
                held.append(chunk)
        _added(held)  # raises when the stream was empty
        return list(held)

    outcome: list[Any] = []

    def call() -> None:
        try:
            outcome.append(
                run_checkpoint(
                    "model",
                    consume,
                    **_options(self, position, identity, MessageCodec(), _chunks_usage(name)),
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
    # Live: the last chunk, now that the whole reply is committed; served: the stored chunks, in order.
    if held:
        yield held[-1]
    else:
        yield from (_chunk_of(chunk) for chunk in result)


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

    async def consume() -> list[BaseMessage]:
        with final_once_relayed(held):
            async for chunk in original(self, input, config, stop=stop, **kwargs):
                if held:
                    live.put_nowait(held[-1])
                held.append(chunk)
        _added(held)  # raises when the stream was empty
        return list(held)

    call = asyncio.ensure_future(
        run_checkpoint_async(
            "model", consume, **_options(self, position, identity, MessageCodec(), _chunks_usage(name))
        )
    )
    async with contextlib.aclosing(relay_while_running(call, live)) as chunks:
        async for chunk in chunks:
            yield chunk
    result = call.result()
    if held:
        yield held[-1]
    else:
        for chunk in result:
            yield _chunk_of(chunk)


def install_model_wraps() -> None:
    """Wrap `BaseChatModel` once per process (the wraps do nothing outside durable graph runs)."""
    with _install_lock:  # a second thread must not take our wrap for the original and call itself
        _install_model_wraps()


def _install_model_wraps() -> None:
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
