"""Checkpoint calls cut off inside their body: `on_interrupted="retry" | "ask" | "fail"`.

A call marked `ask` or `fail` commits a `started` record before its body runs. A later run that
finds that record still `started` knows its runner stopped inside the body, so the call may have
acted. `retry` runs it again (at-least-once, the default, which records nothing before the body);
`ask` turns it into a durable wait a person answers with `{"action": "retry"}` or
`{"action": "result", "result": ...}`; `fail` records the same wait and fails the execution with
`InterruptedCallError` until it is answered.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, RootModel, TypeAdapter, create_model
from pydantic.errors import PydanticSchemaGenerationError, PydanticUserError

from kitaru_core._records import CallRecord

WAIT_PREFIX = "interrupted:"
MAX_WAIT_NAME_CHARACTERS = 200
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.:\-]+")
_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9_.:\-]+")
_PREVIEW_CHARACTERS = 60


def wait_name(call_key: str, run_number: int) -> str:
    """The wait that resolves the interrupted attempt made by run `run_number` of the call `call_key`.

    `interrupted:<key>:run<N>` when that is short and made of `A-Z a-z 0-9 _ . : -` (safe in a shell
    command and a URL path); otherwise the key's last part, cleaned and shortened, plus a hash of the
    whole key, so the name stays unique and within 200 characters.
    """
    suffix = f":run{run_number}"
    plain = f"{WAIT_PREFIX}{call_key}{suffix}"
    if len(plain) <= MAX_WAIT_NAME_CHARACTERS and _SAFE_NAME.fullmatch(call_key):
        return plain
    digest = hashlib.sha256(call_key.encode("utf-8")).hexdigest()[:16]
    tail = _UNSAFE_CHARACTERS.sub("_", call_key.rsplit("/", 1)[-1])
    room = MAX_WAIT_NAME_CHARACTERS - len(WAIT_PREFIX) - len(digest) - len(suffix) - 1
    return f"{WAIT_PREFIX}{tail[:room]}~{digest}{suffix}"


def _preview(value: Any) -> str:
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except ValueError:
        text = repr(value)
    return text if len(text) <= _PREVIEW_CHARACTERS else text[: _PREVIEW_CHARACTERS - 1] + "…"


def describe(name: str, inputs: Any) -> str:
    """The call as a person reads it: `refund(order=42)` (adapters' tool inputs show the tool and arguments)."""
    if isinstance(inputs, Mapping):
        mapping: Mapping[str, Any] = inputs  # pyright: ignore[reportUnknownVariableType]
        arguments = mapping.get("arguments")
        if set(mapping) == {"tool", "arguments"} and isinstance(arguments, Mapping):
            name, mapping = str(mapping["tool"]), arguments  # pyright: ignore[reportUnknownVariableType]
        shown = ", ".join(f"{key}={_preview(value)}" for key, value in mapping.items())
        return f"{name}({shown})"
    return f"{name}(…)"


def started_text(epoch_s: float) -> str:
    """A start time as `2026-12-02T18:40:01Z`."""
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RunAgain(BaseModel):
    """Run the interrupted call's body again."""

    action: Literal["retry"]


def _result_type(type_hint: Any) -> Any:
    """`type_hint` when pydantic can build a schema for it, else `Any`."""
    if type_hint is None:
        return Any
    try:
        TypeAdapter(type_hint).json_schema()
    except (PydanticSchemaGenerationError, PydanticUserError, TypeError):
        return Any
    return type_hint


def answer_type(type_hint: Any) -> Any:
    """The answer a person gives: `{"action": "retry"}` or `{"action": "result", "result": <value>}`.

    The result is validated against the call's return annotation when there is one.
    """
    given = create_model(  # pyright: ignore[reportCallIssue, reportUnknownVariableType]
        "GiveResult",
        __doc__="Do not run the call again: use this value as its output.",
        action=(Literal["result"], ...),
        result=(_result_type(type_hint), ...),
    )
    choice = Annotated[RunAgain | given, Field(discriminator="action")]  # pyright: ignore[reportUnknownVariableType]
    return type(
        "InterruptedCallAnswer", (RootModel[choice],), {"__doc__": "Run the call again, or give its result."}
    )  # pyright: ignore[reportInvalidTypeArguments]


@dataclass(frozen=True)
class Question:
    """What a person is asked about an interrupted call."""

    wait_name: str
    text: str
    metadata: dict[str, Any]
    description: str


def question(call: CallRecord, name: str, inputs: Any, mode: str) -> Question:
    """The wait name, question and metadata for the interrupted record `call`."""
    description = describe(name, inputs)
    started = started_text(call.started_at_epoch_s)
    text = (
        f"`{description}` started at {started} and may have acted (its runner stopped inside it): "
        'run it again ({"action": "retry"}), or give its result ({"action": "result", "result": ...}).'
    )
    metadata = {
        "kind": "interrupted_call",
        "call_key": call.call_key,
        "checkpoint": name,
        "started_at": started,
        "interrupted_run": call.run_number,
        "on_interrupted": mode,
    }
    return Question(wait_name(call.call_key, call.run_number), text, metadata, description)


def resolution(answer: Any) -> tuple[Literal["retry", "result"], Any]:
    """`("retry", None)` or `("result", value)` from a validated answer."""
    choice = answer.root
    if isinstance(choice, RunAgain):
        return "retry", None
    return "result", choice.result


GivenResult = Callable[[Any], Any]
"""Turns a result a person gave (validated JSON) into the call's output (adapters' own output types)."""


@dataclass(frozen=True)
class SideEffectPolicy:
    """Which tool calls act on the world, and what a later run does when one was cut off inside its body.

    Adapters take it as `durable(..., side_effects=..., on_interrupted=...)` and pass the mode of each
    tool call to `run_checkpoint(..., on_interrupted=...)`. Model requests are not covered: they act
    on nothing, so an interrupted one is simply sent again.

    Attributes:
        rule: Tool names whose interrupted calls ask a person (`["refund"]` means `{"refund": "ask"}`),
            or a mapping of tool name to `"retry"`, `"ask"` or `"fail"`. `None`: no tool is named.
        default: The mode of tools the rule does not name; `None`: `configure(on_interrupted=...)`,
            itself `"retry"` by default.
    """

    rule: Sequence[str] | Mapping[str, str] | None = None
    default: str | None = None

    def __post_init__(self) -> None:
        from kitaru_core._checkpoint_calls import check_on_interrupted
        from kitaru_core.errors import ConfigurationError

        if isinstance(self.rule, str):
            raise ConfigurationError(
                f"side_effects= takes a list of tool names or a mapping of tool name to mode, not the string "
                f"{self.rule!r}: write side_effects=[{self.rule!r}]."
            )
        if isinstance(self.rule, Mapping):
            for tool_name, mode in self.rule.items():
                check_on_interrupted(mode, f"side_effects[{tool_name!r}]")
        if self.default is not None:
            check_on_interrupted(self.default, "durable(on_interrupted=...)")

    def mode(self, tool_name: str) -> Any:
        """The `on_interrupted` mode for a call of `tool_name` (`None`: the global default)."""
        if isinstance(self.rule, Mapping):
            return self.rule.get(tool_name, self.default)
        if self.rule is not None and tool_name in self.rule:
            return "ask"
        return self.default
