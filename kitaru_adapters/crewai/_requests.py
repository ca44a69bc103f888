"""Every request CrewAI sends to a model, whatever path sends it, as a checkpoint call.

`DurableLLM` covers the LLM slots `durable()` can see (agents' `llm` and `function_calling_llm`, a
crew's `manager_llm`, `planning_llm` and `chat_llm`). CrewAI also builds LLMs of its own and sends
requests past them; inside an execution those are recorded here, at two seams:

- the `call`/`acall` of every `BaseLLM` class (CrewAI's provider classes, `LLM` for LiteLLM, and any
  user subclass, present or imported later): a request of an LLM object the adapter never wrapped
  (a planner built without `planning_llm`, an `LLMGuardrail`'s or an evaluator's LLM, the LLM that
  memory uses to analyse and consolidate, a Flow step's own `LLM(...).call(...)`, a
  `@human_feedback` LLM) is recorded exactly as a `DurableLLM` would record it;
- `InternalInstructor.to_pydantic`: structured-output conversion (`Converter.to_json` with a
  function-calling LLM, `LLM` with `response_format` on LiteLLM) sends its request through an
  `instructor` client built on the provider SDK or `litellm.completion`, past every LLM object.

A request made while a recorded call sends its own (a `DurableLLM` calling the LLM it wraps) is
part of that call, not recorded twice. Outside an execution nothing changes.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any

from crewai.llms.base_llm import BaseLLM
from crewai.utilities.internal_instructor import InternalInstructor

from kitaru_adapters.crewai._llm import (
    DurableLLM,
    jsonable,
    llm_checkpoint_options,
    llm_request_identity,
    measured_usage,
    records_now,
    sending_recorded_request,
)
from kitaru_core.adapters import CallUsage, run_checkpoint

_MARK = "__kitaru_records_requests__"
_CALL_PARAMETERS = inspect.signature(BaseLLM.call).parameters
_installed: list[bool] = []
# Two threads installing at once would each wrap what the other just wrapped.
_install_lock = threading.Lock()


def _bind_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """`BaseLLM.call`'s arguments by name, or `None` for a call outside its signature."""
    try:
        bound = inspect.Signature(list(_CALL_PARAMETERS.values())).bind(None, *args, **kwargs)
    except TypeError:
        return None
    arguments = dict(bound.arguments)
    arguments.pop("self", None)
    return arguments


def _recording_call(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: BaseLLM, *args: Any, **kwargs: Any) -> Any:
        arguments = _bind_call(args, kwargs) if records_now() else None
        if arguments is None:
            return method(self, *args, **kwargs)
        return DurableLLM(self).call(**arguments)

    setattr(call, _MARK, True)
    call._crewai_rate_limit_wrapped = True  # type: ignore[attr-defined]  # the wrapped method has it
    return call


def _recording_acall(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def acall(self: BaseLLM, *args: Any, **kwargs: Any) -> Any:
        arguments = _bind_call(args, kwargs) if records_now() else None
        if arguments is None:
            return await method(self, *args, **kwargs)
        return await DurableLLM(self).acall(**arguments)

    setattr(acall, _MARK, True)
    acall._crewai_rate_limit_wrapped = True  # type: ignore[attr-defined]
    return acall


def _record_class(cls: type[Any]) -> None:
    """Make the `call`/`acall` that `cls` itself defines record its requests (idempotent)."""
    if issubclass(cls, DurableLLM):
        return
    for name, wrap in (("call", _recording_call), ("acall", _recording_acall)):
        method = cls.__dict__.get(name)
        if method is None or getattr(method, _MARK, False) or getattr(method, "__isabstractmethod__", False):
            continue
        setattr(cls, name, wrap(method))


def _subclasses(cls: type[Any]) -> list[type[Any]]:
    found: list[type[Any]] = []
    pending = list(cls.__subclasses__())
    while pending:
        current = pending.pop()
        if current not in found:
            found.append(current)
            pending.extend(current.__subclasses__())
    return found


def _instructor_identity(instructor: Any, messages: list[dict[str, Any]]) -> dict[str, Any]:
    llm = instructor.llm
    if isinstance(llm, DurableLLM):
        llm = llm.wrapped
    if isinstance(llm, BaseLLM):
        identity = llm_request_identity(llm, messages, None, instructor.model, [])
    else:  # a model name
        identity = {
            "model": ["str", str(llm), None],
            "messages": messages,
            "tools": [],
            "stop": [],
            "response_model": jsonable(instructor.model),
        }
    return {**identity, "via": "instructor"}


def _instructor_usage(model_name: str | None, output: Any) -> CallUsage:
    usage = getattr(getattr(output, "_raw_response", None), "usage", None)
    input_tokens = getattr(usage, "prompt_tokens", None) or getattr(usage, "input_tokens", None) or 0
    output_tokens = getattr(usage, "completion_tokens", None) or getattr(usage, "output_tokens", None) or 0
    if not isinstance(input_tokens, int) or not isinstance(output_tokens, int):
        return CallUsage(model_name=model_name)
    return measured_usage(model_name, input_tokens, output_tokens)


def _recording_to_pydantic(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def to_pydantic(self: Any) -> Any:
        if not records_now():
            return method(self)
        messages = [{"role": "user", "content": self.content}]
        identity = _instructor_identity(self, messages)
        llm = self.llm.wrapped if isinstance(self.llm, DurableLLM) else self.llm
        model_name = getattr(llm, "model", None) if not isinstance(llm, str) else llm
        measured: list[CallUsage] = []

        def request() -> Any:
            with sending_recorded_request():
                output = method(self)
            measured.append(_instructor_usage(model_name, output))
            return output

        options = llm_checkpoint_options(
            identity, self.model, measured, model_name, getattr(llm, "provider", None)
        )
        return run_checkpoint("llm", request, **options)

    setattr(to_pydantic, _MARK, True)
    return to_pydantic


def install_request_recording() -> None:
    """Record every model request CrewAI sends inside an execution (once per process; idempotent).

    Called by `durable()` after `_seams.check()`, which raises `AdapterError` (naming the version
    found) when `InternalInstructor.to_pydantic` or another seam used here is missing or changed.
    """
    with _install_lock:
        _install_request_recording()


def _install_request_recording() -> None:
    if _installed:
        return
    to_pydantic = InternalInstructor.to_pydantic
    _installed.append(True)
    # BaseLLM defines its own `__init_subclass__` in newer releases; older ones inherit pydantic's.
    own = BaseLLM.__dict__.get("__init_subclass__")
    original: Callable[..., None] | None = getattr(own, "__func__", own) if own is not None else None

    def record_subclass(cls: type[BaseLLM], **kwargs: Any) -> None:
        if original is not None:
            original(cls, **kwargs)
        else:
            super(BaseLLM, cls).__init_subclass__(**kwargs)
        _record_class(cls)

    BaseLLM.__init_subclass__ = classmethod(record_subclass)  # type: ignore[assignment, method-assign]
    for cls in _subclasses(BaseLLM):
        _record_class(cls)
    InternalInstructor.to_pydantic = _recording_to_pydantic(to_pydantic)  # type: ignore[method-assign]
