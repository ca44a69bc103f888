"""Values in and out of the store: JSON through pydantic by default, pickle only on opt-in."""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, is_dataclass
from typing import Any, Protocol, runtime_checkable

from kitaru_core.errors import SerializationError

__all__ = ["Codec", "JsonCodec", "fingerprint"]

JSON_FORMAT = "json"
PICKLE_FORMAT = "pickle"


@runtime_checkable
class Codec(Protocol):
    """Turns a checkpoint call's output into bytes and back.

    Adapters pass a codec for their framework's own types (a PydanticAI `ModelResponse`, an
    OpenAI Agents `ModelResponse`, ...). `format` is stored beside the bytes and given back to
    `decode`, so a codec can tell its own encodings apart.
    """

    def encode(self, value: Any) -> tuple[str, bytes]:
        """Return `(format, payload)` for `value`; raise `SerializationError` if it cannot."""
        ...

    def decode(self, format: str, payload: bytes) -> Any:
        """Rebuild the value from what `encode` returned."""
        ...


@functools.lru_cache(maxsize=512)
def _adapter_for(type_hint: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(type_hint)


def _type_adapter(type_hint: Any) -> Any | None:
    """A cached `TypeAdapter`, or `None` when pydantic has no schema for the type (a plain class)."""
    from pydantic import TypeAdapter
    from pydantic.errors import PydanticUserError

    try:
        try:
            return _adapter_for(type_hint)
        except TypeError:  # unhashable annotation
            return TypeAdapter(type_hint)
    except PydanticUserError:
        return None


def _type_reference(value: Any) -> str | None:
    cls = type(value)
    from pydantic import BaseModel

    if isinstance(value, BaseModel) or (is_dataclass(value) and not isinstance(value, type)):
        if "<locals>" in cls.__qualname__:
            return None
        return f"{cls.__module__}:{cls.__qualname__}"
    return None


def _import_reference(reference: str) -> Any:
    module_name, _, qualname = reference.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


@dataclass(frozen=True)
class JsonCodec:
    """The default codec: JSON through pydantic, with an optional pickle fallback.

    Decoding uses, in order: the declared `type_hint` (a checkpoint's return annotation), the
    class recorded at encode time for pydantic models and dataclasses, or plain JSON values.

    Attributes:
        type_hint: Type to validate stored JSON into; `None` to infer as described.
        allow_pickle: Pickle values that JSON cannot represent instead of raising.
    """

    type_hint: Any = None
    allow_pickle: bool = False

    def encode(self, value: Any) -> tuple[str, bytes]:
        """Serialize `value`; see `Codec.encode`.

        Raises:
            SerializationError: The value is not JSON-serializable and pickle is not allowed.
        """
        from pydantic_core import PydanticSerializationError, to_json

        adapter = _type_adapter(self.type_hint) if self.type_hint is not None else None
        try:
            if adapter is not None:
                return JSON_FORMAT, adapter.dump_json(value)
            payload = to_json(value)
        except (PydanticSerializationError, TypeError, ValueError) as error:
            if self.allow_pickle:
                return PICKLE_FORMAT, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            raise SerializationError(
                f"Cannot store a value of type {type(value).__qualname__} as JSON ({error}). Return "
                "pydantic models, dataclasses or builtins, pass a codec, or opt in to pickle with "
                "@checkpoint(allow_pickle=True) or configure(allow_pickle=True)."
            ) from error
        reference = _type_reference(value)
        return (f"{JSON_FORMAT}:{reference}" if reference else JSON_FORMAT), payload

    def decode(self, format: str, payload: bytes) -> Any:
        """Rebuild a value; see `Codec.decode`.

        Raises:
            SerializationError: The payload is pickle but pickle is not allowed, or it is corrupt.
        """
        if format == PICKLE_FORMAT:
            if not self.allow_pickle:
                raise SerializationError(
                    "This stored value was written with pickle, and loading pickle is not allowed here. "
                    "Opt in with allow_pickle=True only if you trust everyone who can write the store."
                )
            return pickle.loads(payload)
        if not format.startswith(JSON_FORMAT):
            raise SerializationError(f"Unknown stored value format {format!r}.")
        try:
            adapter = _type_adapter(self.type_hint) if self.type_hint is not None else None
            if adapter is not None:
                return adapter.validate_json(payload)
            _, _, reference = format.partition(":")
            if reference:
                try:
                    adapter = _type_adapter(_import_reference(reference))
                except (ImportError, AttributeError):
                    adapter = None
                if adapter is not None:
                    return adapter.validate_json(payload)
            return json.loads(payload)
        except ValueError as error:
            raise SerializationError(f"A stored value could not be loaded: {error}") from error


def _strip(value: Any, exclude_keys: frozenset[str]) -> Any:
    if isinstance(value, Mapping):
        return {
            str(key): _strip(item, exclude_keys)
            for key, item in value.items()  # pyright: ignore[reportUnknownVariableType]
            if key not in exclude_keys
        }
    if isinstance(value, list | tuple):
        return [_strip(item, exclude_keys) for item in value]  # pyright: ignore[reportUnknownVariableType]
    return value


def canonical_json(value: Any, *, exclude_keys: Iterable[str] = ()) -> str | None:
    """Canonical JSON text of `value` (sorted keys, no spaces), or `None` if it has no JSON form.

    Args:
        value: Anything pydantic can turn into JSON values (models, dataclasses, builtins...).
        exclude_keys: Mapping keys removed at every depth before encoding (per-run ids, timestamps).
    """
    from pydantic_core import PydanticSerializationError, to_jsonable_python

    try:
        plain = to_jsonable_python(value, round_trip=False)
    except (PydanticSerializationError, TypeError, ValueError):
        return None
    excluded = frozenset(exclude_keys)
    if excluded:
        plain = _strip(plain, excluded)
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def fingerprint(value: Any, *, exclude_keys: Iterable[str] = ()) -> str | None:
    """SHA-256 (hex) of the canonical JSON of `value`, or `None` when it cannot be fingerprinted.

    A checkpoint call whose inputs cannot be fingerprinted is matched on resume by its key alone.

    Args:
        value: The inputs to fingerprint.
        exclude_keys: Mapping keys to leave out at every depth, e.g. `{"timestamp", "run_id"}`.

    Returns:
        64 hex characters, or `None`.
    """
    text = canonical_json(value, exclude_keys=exclude_keys)
    if text is None:
        return None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def import_callable(reference: str) -> Any:
    """Import `module:qualname` (a flow's recorded entry point).

    Raises:
        ImportError: The module or attribute does not exist.
    """
    try:
        return _import_reference(reference)
    except AttributeError as error:
        raise ImportError(f"Cannot import {reference}: {error}") from error
