"""Small framework-free helpers every adapter needs: JSON forms for fingerprints, cost lookup, the run context."""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, cast

from kitaru_core import _context

if TYPE_CHECKING:
    from kitaru_core._context import ExecutionContext

APPROVAL_BATCH_WINDOW_S: Final = 0.05
"""Seconds the first tool call of a batch waits for its siblings before asking for approval.

Tool calls a model asked for in one response start within microseconds of each other; 50 ms lets
every one of them join one `request_approval_together` batch (one person-facing wait for the batch)
without delaying a lone call noticeably.
"""


class _Unconverted:
    """The type of `UNCONVERTED`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCONVERTED"


UNCONVERTED: Final = _Unconverted()
"""What a `jsonable(..., convert=...)` hook returns for a value it leaves to the default rules."""

_MEMORY_ADDRESS = re.compile(r"\bat 0x[0-9A-Fa-f]+")


def stable_text(value: Any, text: str) -> str:
    """`text` (a `repr` or `str` of `value`), or `<TypeName>` when it names a memory address.

    A default `repr` (`<Foo object at 0x7f...>`) differs in every process: in a fingerprint it
    would make every resumed call look changed. Such values keep only their type, so they do not
    tell calls apart.

    Args:
        value: The value `text` describes.
        text: Its `repr` or `str`.

    Returns:
        `text`, or `<` + the type's qualified name + `>`.
    """
    return f"<{type(value).__qualname__}>" if _MEMORY_ADDRESS.search(text) else text


def jsonable(value: Any, *, convert: Callable[[Any], Any] | None = None) -> Any:
    """A JSON form of what a framework passes to and gets from a model or tool, for fingerprints and storage.

    The rules, at every depth:

    - `convert(value)`, when given and it returns anything but `UNCONVERTED` (an adapter's own
      rules for its framework's types, applied first).
    - Pydantic models: their JSON dump with `None` fields left out (a value loaded from the store and
      the live one compare equal), converted again.
    - Pydantic model classes (a structured output type): their JSON schema.
    - Dataclass instances: a mapping of their fields.
    - Mappings (`dict`): string keys, items whose value is `None` left out.
    - Lists and tuples: lists.
    - `None`, `str`, `int`, `float`, `bool`: themselves.
    - Anything else: its `repr`, or `<TypeName>` when the `repr` names a memory address (see
      `stable_text`), so the result never contains one.

    Args:
        value: What to convert.
        convert: An adapter's hook for its framework's types: returns the JSON form, or `UNCONVERTED`.

    Returns:
        JSON values (dicts, lists, strings, numbers, booleans, `None`).
    """
    if convert is not None:
        converted = convert(value)
        if converted is not UNCONVERTED:
            return converted
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {
            stable_text(key, str(key)): jsonable(item, convert=convert)  # pyright: ignore[reportUnknownArgumentType]
            for key, item in value.items()  # pyright: ignore[reportUnknownVariableType]
            if item is not None
        }
    if isinstance(value, list | tuple):
        return [jsonable(item, convert=convert) for item in value]  # pyright: ignore[reportUnknownVariableType]
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None:
        if isinstance(value, pydantic.BaseModel):
            return jsonable(value.model_dump(mode="json", exclude_none=True), convert=convert)
        if isinstance(value, type) and issubclass(value, pydantic.BaseModel):
            return value.model_json_schema()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: jsonable(getattr(value, field.name), convert=convert)
            for field in dataclasses.fields(value)
        }
    return stable_text(value, repr(value))


def cost_usd(
    model_name: str | None,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    *,
    provider_id: str | None = None,
) -> float | None:
    """The price of one model request in US dollars, from genai-prices, or `None` where it is unknown.

    genai-prices is imported on the first call (it is an optional dependency, installed with every
    adapter's extra). An adapter should import it when it is imported itself (in its package's
    `__init__`): a first import of genai-prices from many threads at once can hand a thread a
    partially initialized module.

    Args:
        model_name: The model as the provider reported it (`"gpt-4o-mini"`); `None`/empty: unknown.
        input_tokens: Prompt tokens billed, including cached ones.
        output_tokens: Completion tokens billed.
        cache_read_tokens: Prompt tokens read from the provider's cache (billed cheaper).
        provider_id: The genai-prices provider id (`"openai"`), when known; else matched by model name.

    Returns:
        Dollars, or `None` without a model name, without genai-prices, or for a model it has no
        price for.
    """
    if not model_name:
        return None
    try:
        import genai_prices
    except ImportError:
        return None
    try:
        usage = genai_prices.Usage(
            input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=cache_read_tokens
        )
        if provider_id is None:
            price = genai_prices.calc_price(usage, model_ref=model_name)
        else:
            price = genai_prices.calc_price(usage, model_ref=model_name, provider_id=provider_id)
        return float(price.total_price)
    except (LookupError, ValueError, TypeError):
        return None


def execution_context() -> ExecutionContext | None:
    """The runtime's context of the execution running here, or `None` outside any execution.

    Users get a frozen view (`kitaru_core.current_execution()`); an adapter that needs more (the
    store, the settings the execution runs with) reads the runtime's context. It is internal and
    mutable: read it, do not change it.

    Returns:
        The context (`execution_id`, `flow_name`, `run_number`, `served_completed`, `settings`,
        `store`...), or `None`.
    """
    return _context.current_execution()


def approval_timeout_s(approval_timeout: timedelta | float | None) -> float | None:
    """`durable(..., approval_timeout=...)` in seconds: how long an approval wait polls before the run stops.

    Args:
        approval_timeout: A `timedelta`, seconds as a number, or `None` (poll as the core's
            `wait()` does by default).

    Returns:
        Seconds as a `float`, or `None`.

    Raises:
        ConfigurationError: A negative or non-finite duration, or a value of another type.
    """
    import math

    from kitaru_core.errors import ConfigurationError

    if approval_timeout is None:
        return None
    given = cast(object, approval_timeout)  # checked at run time: callers are not always type-checked
    if isinstance(given, timedelta):
        seconds = given.total_seconds()
    elif isinstance(given, int | float) and not isinstance(given, bool):
        seconds = float(given)
    else:
        raise ConfigurationError(
            f"approval_timeout must be a timedelta or seconds as a number, got {type(approval_timeout).__qualname__}."
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigurationError(
            f"approval_timeout must be zero or more seconds, got {approval_timeout!r}: "
            "pass e.g. timedelta(minutes=5), 300, or None to poll as wait() does."
        )
    return seconds
