"""CrewAI Flow methods (`@start`, `@listen`, `@router`) as checkpoint calls.

A completed step is served on resume: its return value (a router's route) comes from the store and
the flow state is set to the snapshot taken right after the step, so the step's code (its `input()`
prompts, its side effects, the crews it kicks off) does not run again. A step that crashed runs
again; the LLM and tool calls it had completed are served inside it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from kitaru_core import current_execution
from kitaru_core.adapters import jsonable, run_checkpoint_async
from kitaru_core.errors import SerializationError

STEP_FORMAT = "json:crewai.FlowStep"

@dataclass
class StepOutcome:
    """What a flow step left behind: its return value and the flow state right after it."""

    output: Any
    state: dict[str, Any]


def _encode_output(value: Any) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        cls = type(value)
        return {
            "kind": "model",
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "data": value.model_dump(mode="json"),
        }
    try:
        return {"kind": "json", "data": json.loads(json.dumps(value))}
    except (TypeError, ValueError):
        # Documented: a step returning another object is served as that object's JSON form.
        return {"kind": "jsonable", "data": jsonable(value)}


def _decode_output(document: dict[str, Any]) -> Any:
    if document["kind"] == "model":
        module_name, _, qualname = str(document["class"]).partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError):
            return document["data"]
        if isinstance(target, type) and issubclass(target, BaseModel):
            return target.model_validate(document["data"])
        return document["data"]
    return document["data"]


class StepCodec:
    """Stores a `StepOutcome` as JSON (a pydantic return value is rebuilt as its own class)."""

    def encode(self, value: Any) -> tuple[str, bytes]:
        """Serialize a step's outcome."""
        if not isinstance(value, StepOutcome):
            raise SerializationError(f"Expected a flow step outcome, got {type(value).__qualname__}.")
        document = {"output": _encode_output(value.output), "state": jsonable(value.state)}
        return STEP_FORMAT, json.dumps(document).encode("utf-8")

    def decode(self, format: str, payload: bytes) -> Any:
        """Load a step's outcome."""
        if format != STEP_FORMAT:
            raise SerializationError(f"Expected a stored CrewAI flow step, found format {format!r}.")
        document = json.loads(payload)
        return StepOutcome(_decode_output(document["output"]), document["state"])


def state_snapshot(flow: Any) -> dict[str, Any]:
    """The flow state as JSON (CrewAI's own serialization of it)."""
    return dict(flow._copy_and_serialize_state())  # pyright: ignore[reportUnknownArgumentType]


def durable_step(flow: Any, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """`method` as a checkpoint call `step:<name>` of the running execution.

    Its fingerprint covers the arguments (a listener's trigger output), not the flow state: a
    persisted flow restored with `kickoff(inputs={"id": ...})` starts from the state CrewAI saved
    after its last step, and its completed steps must still be served. (A restore that passes
    inputs besides the id is a new turn, a new execution, in which every step runs live.)
    """

    @functools.wraps(method)
    async def step(*args: Any, **kwargs: Any) -> Any:
        identity: dict[str, Any] = {"args": jsonable(list(args)), "kwargs": jsonable(kwargs)}
        ran: list[bool] = []

        async def body() -> StepOutcome:
            ran.append(True)
            if inspect.iscoroutinefunction(method):
                result = await method(*args, **kwargs)
            else:  # as CrewAI runs a sync step: in a thread, in a copy of the context
                context = contextvars.copy_context()
                result = await asyncio.to_thread(context.run, method, *args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            return StepOutcome(result, state_snapshot(flow))

        outcome = await run_checkpoint_async(
            f"step:{name}", body, kind="user", inputs=identity, codec=StepCodec(), details={"step": name}
        )
        if not ran:  # served: the state the step left behind
            flow._restore_state(outcome.state)
        return outcome.output

    return step


def wrap_execute_method(
    original: Callable[..., Any], always_run: Callable[[Any], frozenset[str] | None]
) -> Callable[..., Any]:
    """`Flow._execute_method` running each step as a checkpoint call inside a durable kickoff.

    Args:
        original: The class's `_execute_method`.
        always_run: Gives the step names that run every time, or `None` outside a durable kickoff.

    Returns:
        The replacement method.
    """

    @functools.wraps(original)
    async def _execute_method(self: Any, method_name: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
        skip = always_run(self)
        if skip is None or current_execution() is None or str(method_name) in skip:
            return await original(self, method_name, method, *args, **kwargs)
        return await original(
            self, method_name, durable_step(self, str(method_name), method), *args, **kwargs
        )

    _execute_method.__kitaru_durable__ = True  # type: ignore[attr-defined]
    return _execute_method
