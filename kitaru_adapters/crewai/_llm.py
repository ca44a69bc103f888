"""LLM calls as checkpoint calls: a delegating `BaseLLM` for every LLM slot of a crew."""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections.abc import Generator
from typing import Any

from crewai.llms.base_llm import BaseLLM, call_stop_override, call_stream_override
from pydantic import BaseModel, ConfigDict, Field

from kitaru_core import current_execution
from kitaru_core.adapters import (
    CallUsage,
    ModelResponseOverride,
    cost_usd,
    fingerprint,
    jsonable,
    model_retry_policy,
    read_model_response_override,
    run_checkpoint,
    run_checkpoint_async,
)
from kitaru_core.errors import SerializationError

try:  # CrewAI retries rate limits inside every LLM call (3 attempts) while this flag is unset
    from crewai.llms.retry import (
        _active_llm_rate_limit_retry as _crewai_rate_limit_retry_active,  # pyright: ignore[reportPrivateUsage]
    )
except ImportError:  # older CrewAI: no retry of its own
    _crewai_rate_limit_retry_active = None

LLM_RESPONSE_FORMAT = "json:crewai.LLMResponse"
DISCRIMINATOR_CHARACTERS = 16

# True while a recorded LLM call sends its request: an LLM (or instructor client) that this request
# reaches in turn is part of the recorded call, not a call of its own.
_recording: contextvars.ContextVar[bool] = contextvars.ContextVar("kitaru_crewai_recording", default=False)


@contextlib.contextmanager
def sending_recorded_request() -> Generator[None]:
    """Mark the block as the live request of a recorded LLM call (nested LLM calls are part of it).

    CrewAI's own rate-limit retry is off inside it: the recorded call retries by the model-retry
    policy instead (`durable(..., model_retries=...)`), so every attempt is counted in the call.
    """
    token = _recording.set(True)
    crewai_token = (
        _crewai_rate_limit_retry_active.set(True) if _crewai_rate_limit_retry_active is not None else None
    )
    try:
        yield
    finally:
        if _crewai_rate_limit_retry_active is not None and crewai_token is not None:
            _crewai_rate_limit_retry_active.reset(crewai_token)
        _recording.reset(token)


def records_now() -> bool:
    """Whether an LLM request made here should be a checkpoint call of its own.

    That is inside an execution and not inside a recorded call's own request.
    """
    return current_execution() is not None and not _recording.get()


def _tool_identity(tool: Any) -> Any:
    """A tool schema as sent to the model (dicts in CrewAI 1.15); tool objects by name and schema."""
    if isinstance(tool, dict):
        return jsonable(tool)
    name = getattr(tool, "name", None)
    schema = getattr(tool, "args_schema", None)
    return {"name": name, "args_schema": jsonable(schema)}


def llm_request_identity(
    llm: BaseLLM,
    messages: Any,
    tools: Any,
    response_model: Any,
    stop: list[str],
) -> dict[str, Any]:
    """What an LLM call's fingerprint covers.

    That is the model name and provider, the messages (text, tool calls, tool results), the
    tool schemas, the stop words in effect for the call and the structured-output schema.
    Callbacks, the calling task and agent objects and CrewAI's per-call ids are left out.
    Prompts that CrewAI dates (`Agent(inject_date=True)`) carry the date in their text, so a
    resume on a later day does not match the stored call: it runs live, the old record is kept
    as superseded.

    Args:
        llm: The LLM that really answers.
        messages: The messages as CrewAI passes them (a string or a list of message dicts).
        tools: The tool schemas offered, or `None`.
        response_model: The structured-output model class, or `None`.
        stop: The stop words in effect.

    Returns:
        A JSON-able dict.
    """
    return {
        "model": [type(llm).__qualname__, llm.model, llm.provider],
        "messages": jsonable(messages),
        "tools": [_tool_identity(tool) for tool in tools or []],
        "stop": sorted(stop),
        "response_model": jsonable(response_model) if response_model is not None else None,
    }


def _tool_call_dict(call: Any) -> dict[str, Any]:
    """A native tool call as the OpenAI-style dict CrewAI's executor accepts from any provider."""
    data = jsonable(call)
    if isinstance(data, dict):
        return data  # pyright: ignore[reportUnknownVariableType]
    raise SerializationError(f"CrewAI returned a tool call that is not an object: {call!r}.")


def overridden_response(override: ModelResponseOverride, response_model: type[BaseModel] | None) -> Any:
    """A replay's model-response override as `BaseLLM.call` returns it.

    Tool calls become the OpenAI-style dicts the executor runs (`{"id", "type": "function",
    "function": {"name", "arguments": "<JSON>"}}`); CrewAI's native tool-calling answer is the tool
    calls alone, so a text given with them is not seen by the agent. A text-only override is the
    answer's text (in ReAct mode: the `Thought:`/`Action:`/`Final Answer:` text CrewAI parses), or,
    for a call with a structured-output `response_model`, validated into it as JSON.

    Raises:
        SerializationError: The text is not valid JSON for the call's `response_model`.
    """
    if override.tool_calls:
        return [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in override.tool_calls
        ]
    text = override.text or ""
    if response_model is None:
        return text
    try:
        return response_model.model_validate_json(text)
    except ValueError as error:
        raise SerializationError(
            f"The replay override of an LLM call with response_model {response_model.__name__} is not "
            f"its JSON ({error}). Give the override as that model's JSON text."
        ) from error


class LLMResponseCodec:
    """Stores what `BaseLLM.call` returned: text, native tool calls, or a structured output.

    Tool calls are stored (and, live too, handed to CrewAI) as OpenAI-style dicts, so the
    executor builds the same conversation whether a call ran live or came from the store.
    Structured outputs are stored as JSON and validated back into the call's `response_model`.
    A replay's override (`kitaru_core.adapters.read_model_response_override`) is served as `overridden_response`
    makes it.
    """

    def __init__(self, response_model: type[BaseModel] | None = None) -> None:
        self.response_model = response_model

    def normalize(self, value: Any) -> Any:
        """The value CrewAI gets: text as is, tool calls as dicts, structured outputs as models."""
        if isinstance(value, list):
            return [_tool_call_dict(call) for call in value]  # pyright: ignore[reportUnknownVariableType]
        return value

    def encode(self, value: Any) -> tuple[str, bytes]:
        """Serialize a response."""
        if isinstance(value, str):
            document: dict[str, Any] = {"type": "text", "text": value}
        elif isinstance(value, list):
            document = {"type": "tool_calls", "calls": [_tool_call_dict(call) for call in value]}  # pyright: ignore[reportUnknownVariableType]
        elif isinstance(value, BaseModel):
            document = {"type": "model", "data": value.model_dump(mode="json")}
        elif value is None:
            document = {"type": "none"}
        else:
            try:
                document = {"type": "json", "data": json.loads(json.dumps(value))}
            except (TypeError, ValueError) as error:
                raise SerializationError(
                    f"The LLM returned a {type(value).__qualname__}, which cannot be stored as JSON: {error}"
                ) from error
        return LLM_RESPONSE_FORMAT, json.dumps(document).encode("utf-8")

    def decode(self, format: str, payload: bytes) -> Any:
        """Load a response (or a replay's override of it)."""
        override = read_model_response_override(format, payload)
        if override is not None:
            return overridden_response(override, self.response_model)
        if format != LLM_RESPONSE_FORMAT:
            raise SerializationError(f"Expected a stored CrewAI LLM response, found format {format!r}.")
        document = json.loads(payload)
        kind = document["type"]
        if kind == "text":
            return document["text"]
        if kind == "tool_calls":
            return document["calls"]
        if kind == "model":
            if self.response_model is not None:
                return self.response_model.model_validate(document["data"])
            return document["data"]
        if kind == "none":
            return None
        return document["data"]


def llm_checkpoint_options(
    identity: dict[str, Any],
    response_model: Any,
    measured: list[CallUsage],
    model_name: str | None,
    provider: str | None,
) -> dict[str, Any]:
    """The `run_checkpoint` options of one recorded LLM request.

    Args:
        identity: What the request's fingerprint covers (`llm_request_identity`).
        response_model: The structured-output model class, or `None`.
        measured: Filled by the live request with its token usage (empty when served).
        model_name: The model, for the timeline and prices.
        provider: The provider, for the timeline.

    Returns:
        Keyword arguments for `run_checkpoint` / `run_checkpoint_async`: key `llm:<digest>`,
        kind `model`, the response codec, usage and details.
    """
    digest = fingerprint(identity)  # None when the request cannot be fingerprinted: keyed by occurrence
    return {
        "discriminator": digest[:DISCRIMINATOR_CHARACTERS] if digest else None,
        "kind": "model",
        "inputs": identity,
        "codec": LLMResponseCodec(response_model if isinstance(response_model, type) else None),
        "usage": lambda _output: measured[0] if measured else CallUsage(model_name=model_name),  # pyright: ignore[reportUnknownLambdaType]
        "details": {"model": model_name, "provider": provider},
        # `durable(..., model_retries=...)` is set for the kickoff by its boundary; the provider's
        # errors (openai's, LiteLLM's) are classified through their status code and their causes.
        "retry": model_retry_policy(),
    }


def measured_usage(
    model_name: str | None, input_tokens: int, output_tokens: int, cached_tokens: int = 0
) -> CallUsage:
    """Token usage and cost (genai-prices, where the model is known) of one live request."""
    return CallUsage(
        model_name=model_name,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost_usd(model_name, input_tokens, output_tokens, cached_tokens),
    )


def _mark_not_rate_limited(function: Any) -> Any:
    """Tell `BaseLLM.__init_subclass__` not to add its rate-limit retry: the wrapped LLM has its own."""
    function._crewai_rate_limit_wrapped = True
    return function


class DurableLLM(BaseLLM):
    """Delegates to a CrewAI LLM; inside an execution each `call`/`acall` is a checkpoint call.

    Keys are `llm:<fingerprint prefix>` under the crew's scope (a repeat of the same request gets
    `#2`, `#3`...), so a resumed crew, whichever order its agents reach their calls in, is served
    the response recorded for the same request. The response is committed before CrewAI sees it;
    native tool calls are handed over as OpenAI-style dicts, live and served alike. Token usage
    (the wrapped LLM's counters before and after the call) and cost (genai-prices, where the model
    is known) are recorded per call. Outside an execution calls go straight to the wrapped LLM.

    The stop words and streaming mode CrewAI sets for one call (`call_stop_override`,
    `call_stream_override`) are passed on to the wrapped LLM; capability questions
    (`supports_function_calling`, `supports_stop_words`, context window, multimodal) and token
    counters are answered by it.

    Args:
        wrapped: The LLM that really answers (e.g. `LLM(model="gpt-4o-mini")`).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    llm_type: str = "kitaru_durable"
    wrapped: BaseLLM = Field(exclude=True, description="The LLM that really answers.")

    def __init__(self, wrapped: BaseLLM | None = None, /, **data: Any) -> None:
        if wrapped is not None:
            if isinstance(wrapped, DurableLLM):
                wrapped = wrapped.wrapped
            # The wrapped LLM's settings, so code that reads them off the LLM it was given (the
            # instructor client of structured-output conversion takes `base_url`, `api_key` and
            # `is_litellm`) builds the same request as with the wrapped LLM.
            mirrored = {
                name: getattr(wrapped, name)
                for name in BaseLLM.model_fields
                if name not in ("llm_type", "wrapped") and name in type(wrapped).model_fields
            }
            data = {**mirrored, "stop": list(wrapped.stop), **data, "wrapped": wrapped}
        super().__init__(**data)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # pyright: ignore[reportAttributeAccessIssue]
        except AttributeError:
            if name.startswith("__") or name == "wrapped":
                raise
            return getattr(self.__dict__["wrapped"], name)

    # -- capabilities and counters: the wrapped LLM's ------------------------------------------------

    def supports_function_calling(self) -> bool:
        """Whether the wrapped LLM takes native tool calls (else CrewAI uses ReAct text)."""
        method = getattr(self.wrapped, "supports_function_calling", None)  # not on BaseLLM itself
        return bool(method()) if callable(method) else False

    def supports_stop_words(self) -> bool:
        """Whether the wrapped LLM takes stop words."""
        return self.wrapped.supports_stop_words()

    def get_context_window_size(self) -> int:
        """The wrapped LLM's usable context window, in tokens."""
        return self.wrapped.get_context_window_size()

    def supports_multimodal(self) -> bool:
        """Whether the wrapped LLM takes images and files."""
        return self.wrapped.supports_multimodal()

    def get_input_tokens_count(self, messages: Any, tools: Any = None, response_model: Any = None) -> int:
        """The wrapped LLM's estimate of a request's input tokens."""
        return self.wrapped.get_input_tokens_count(messages, tools, response_model)

    def get_token_usage_summary(self) -> Any:
        """The wrapped LLM's lifetime token counters (calls served from the store add nothing)."""
        return self.wrapped.get_token_usage_summary()

    def to_config_dict(self) -> dict[str, Any]:
        """The wrapped LLM's configuration (what `LLM(**config)` rebuilds)."""
        return self.wrapped.to_config_dict()

    # -- calls ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _call_settings(self) -> Generator[list[str]]:
        """Pass this call's stop words and streaming mode on to the wrapped LLM; yield the stop words."""
        stop = list(self.stop_sequences)
        with contextlib.ExitStack() as stack:
            if stop != list(self.wrapped.stop):
                stack.enter_context(call_stop_override(self.wrapped, stop))
            stream = self._effective_stream()
            if stream is not None and stream != self.wrapped.stream:
                stack.enter_context(call_stream_override(self.wrapped, stream))
            yield stop

    def _options(
        self, identity: dict[str, Any], response_model: Any, measured: list[CallUsage]
    ) -> dict[str, Any]:
        return llm_checkpoint_options(
            identity, response_model, measured, self.wrapped.model, self.wrapped.provider
        )

    def _measure(self, before: Any, measured: list[CallUsage]) -> None:
        delta = self.wrapped.get_token_usage_summary().delta_since(before)
        measured.append(
            measured_usage(
                self.wrapped.model, delta.prompt_tokens, delta.completion_tokens, delta.cached_prompt_tokens
            )
        )

    @_mark_not_rate_limited
    def call(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> Any:
        """Serve the response from the store, or call the wrapped LLM and commit it first."""
        with self._call_settings() as stop:
            if not records_now():
                return self.wrapped.call(
                    messages, tools, callbacks, available_functions, from_task, from_agent, response_model
                )
            measured: list[CallUsage] = []
            codec = LLMResponseCodec(response_model if isinstance(response_model, type) else None)

            def request() -> Any:
                before = self.wrapped.get_token_usage_summary()
                with sending_recorded_request():
                    response = self.wrapped.call(
                        messages, tools, callbacks, available_functions, from_task, from_agent, response_model
                    )
                self._measure(before, measured)
                return codec.normalize(response)

            identity = llm_request_identity(self.wrapped, messages, tools, response_model, stop)
            return run_checkpoint("llm", request, **self._options(identity, response_model, measured))

    @_mark_not_rate_limited
    async def acall(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> Any:
        """Like `call`, awaiting the wrapped LLM's `acall`."""
        with self._call_settings() as stop:
            if not records_now():
                return await self.wrapped.acall(
                    messages, tools, callbacks, available_functions, from_task, from_agent, response_model
                )
            measured: list[CallUsage] = []
            codec = LLMResponseCodec(response_model if isinstance(response_model, type) else None)

            async def request() -> Any:
                before = self.wrapped.get_token_usage_summary()
                with sending_recorded_request():
                    response = await self.wrapped.acall(
                        messages, tools, callbacks, available_functions, from_task, from_agent, response_model
                    )
                self._measure(before, measured)
                return codec.normalize(response)

            identity = llm_request_identity(self.wrapped, messages, tools, response_model, stop)
            return await run_checkpoint_async(
                "llm", request, **self._options(identity, response_model, measured)
            )
