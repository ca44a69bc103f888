"""Values in and out of the store: lossless, self-describing JSON by default, pickle only on opt-in.

The default codec writes the format `json+typed/1`: plain JSON for JSON values, and a tagged
object `{"$kitaru": <kind>, ...}` for everything JSON cannot carry exactly (bytes, NaN, Decimal,
datetimes, tuples, sets, enums, pydantic models, dataclasses...). Loading it gives back a value
equal to the one stored, of the same type, with the same canonical JSON, so every fingerprint
computed from a served value matches the one computed on the first run.

Values written by 0.1 (formats `json` and `json:<module>:<class>`) still load as before: validated
into the return annotation, or into the recorded class.

Loading never imports a module that is not already imported, unless it is allowed with
`configure(decode_modules=[...])`, and rebuilds only classes (pydantic models, dataclasses, enums,
named tuples), never other callables.
"""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import datetime as dt
import enum
import functools
import hashlib
import importlib
import json
import math
import pathlib
import pickle
import sys
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, is_dataclass
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from kitaru_core.errors import SerializationError

__all__ = ["Codec", "JsonCodec", "fingerprint"]

JSON_FORMAT = "json"
"""Format of values written by 0.1: plain JSON (optionally `json:<module>:<class>`)."""
TYPED_FORMAT = "json+typed/1"
"""Format of values written by the default codec since 0.2: lossless tagged JSON."""
PICKLE_FORMAT = "pickle"
TAG = "$kitaru"
"""Key of a tagged object in `json+typed/1` payloads and in canonical JSON."""


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


# -- class references -------------------------------------------------------------------------------


def _reference(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _walk_qualname(module: Any, qualname: str) -> Any:
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            return None
    return target


@functools.lru_cache(maxsize=1024)
def _importable(cls: type) -> bool:
    """Whether `module:qualname` of `cls` finds `cls` again (no `<locals>`, not renamed)."""
    module = sys.modules.get(cls.__module__)
    return module is not None and "<locals>" not in cls.__qualname__ and (
        _walk_qualname(module, cls.__qualname__) is cls
    )


def _collect_classes(hint: Any, found: dict[str, type], depth: int = 0) -> None:
    """Classes named by a type annotation (and by the fields of models and dataclasses in it)."""
    if depth > 12:
        return
    if isinstance(hint, type):
        reference = _reference(hint)
        if reference in found:
            return
        found[reference] = hint
        field_types: list[Any] = []
        model_fields = getattr(hint, "model_fields", None)
        if isinstance(model_fields, dict):
            field_types = [getattr(info, "annotation", None) for info in model_fields.values()]  # pyright: ignore[reportUnknownVariableType, reportUnknownMemberType, reportUnknownArgumentType]
        elif is_dataclass(hint):
            try:
                field_types = list(typing.get_type_hints(hint).values())
            except Exception:  # unresolvable forward references: the fields' classes are not collected
                field_types = [field.type for field in dataclasses.fields(hint)]
        for field_type in field_types:
            _collect_classes(field_type, found, depth + 1)
        return
    for argument in typing.get_args(hint):
        _collect_classes(argument, found, depth + 1)
    origin = typing.get_origin(hint)
    if origin is not None:
        _collect_classes(origin, found, depth + 1)


@functools.lru_cache(maxsize=256)
def _hint_classes_cached(hint: Any) -> dict[str, type]:
    found: dict[str, type] = {}
    _collect_classes(hint, found)
    return found


def _hint_classes(hint: Any) -> dict[str, type]:
    if hint is None:
        return {}
    try:
        return _hint_classes_cached(hint)
    except TypeError:  # unhashable annotation
        found: dict[str, type] = {}
        _collect_classes(hint, found)
        return found


def _module_allowed(module_name: str) -> bool:
    from kitaru_core import _config

    allowed = _config.current_settings().decode_modules
    return any(module_name == entry or module_name.startswith(entry + ".") for entry in allowed)


def _is_model_class(target: type) -> bool:
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and issubclass(target, pydantic.BaseModel)


_KIND_CHECKS: dict[str, tuple[str, Callable[[type], bool]]] = {
    "model": ("a pydantic model", _is_model_class),
    "dataclass": ("a dataclass", is_dataclass),
    "enum": ("an Enum", lambda target: issubclass(target, enum.Enum)),
    "namedtuple": ("a named tuple", lambda target: issubclass(target, tuple) and hasattr(target, "_fields")),
    "model-or-dataclass": (
        "a pydantic model or a dataclass",
        lambda target: _is_model_class(target) or is_dataclass(target),
    ),
}


def resolve_class(reference: str, kind: str, known: Mapping[str, type] | None = None) -> type:
    """Find the class a stored value names, importing nothing that is not allowed.

    Args:
        reference: `module:qualname` as recorded at encode time.
        kind: What the class must be: `model`, `dataclass`, `enum`, `namedtuple` or
            `model-or-dataclass`.
        known: Classes named by the return annotation, by reference (finds classes defined
            inside functions).

    Returns:
        The class.

    Raises:
        SerializationError: The module is neither imported nor allowed by `decode_modules`, the
            name does not exist, or it is not a class of the expected kind.
    """
    description, check = _KIND_CHECKS[kind]
    target: Any = (known or {}).get(reference)
    if target is None:
        module_name, _, qualname = reference.partition(":")
        if not module_name or not qualname or "<locals>" in qualname:
            raise SerializationError(
                f"A stored value names the class {reference!r}, which cannot be found: classes defined "
                "inside functions are found only through the checkpoint's return annotation. Define the "
                "class at module level, or annotate the checkpoint's return type with it."
            )
        module = sys.modules.get(module_name)
        if module is None:
            if not _module_allowed(module_name):
                raise SerializationError(
                    f"A stored value names the class {reference!r}, but the module {module_name!r} is not "
                    "imported, and loading never imports a module on a stored value's say-so. Import it "
                    f"before loading, or allow it with configure(decode_modules=[{module_name!r}]) or "
                    f"KITARU_DECODE_MODULES={module_name}."
                )
            try:
                module = importlib.import_module(module_name)
            except ImportError as error:
                raise SerializationError(
                    f"A stored value names the class {reference!r}, whose module cannot be imported: {error}"
                ) from error
        target = _walk_qualname(module, qualname)
    if not isinstance(target, type) or not check(target):
        raise SerializationError(
            f"A stored value names {reference!r} as {description}, but it is not one "
            f"({type(target).__name__} found). The store may have been tampered with; nothing was loaded."
        )
    return target


# -- the lossless encoding (json+typed/1) -----------------------------------------------------------

_PATH_CLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        pathlib.Path,
        pathlib.PurePath,
        pathlib.PosixPath,
        pathlib.PurePosixPath,
        pathlib.WindowsPath,
        pathlib.PureWindowsPath,
    )
}


class _Unstorable(Exception):  # noqa: N818 - internal signal, turned into SerializationError
    """A part of a value cannot be stored; `path` grows as it propagates out of containers."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []

    def at(self, step: str) -> _Unstorable:
        self.path.append(step)
        return self

    def error(self) -> SerializationError:
        where = "the value" + "".join(reversed(self.path))
        return SerializationError(self.message.replace("{where}", where))


def _unsupported(value: Any) -> _Unstorable:
    return _Unstorable(
        f"Cannot store a value of type {type(value).__module__}.{type(value).__qualname__} at {{where}}: the "
        "default codec stores JSON values, bytes, Decimal, datetime/date/time/timedelta, UUID, Path, "
        "tuples, sets, Enums, pydantic models, dataclasses and named tuples (see 'What can be stored' in "
        "docs/concepts.md). Return one of those, pass a codec, or opt in to pickle with "
        "@checkpoint(allow_pickle=True) or configure(allow_pickle=True)."
    )


def _float_tag(value: float) -> dict[str, Any]:
    text = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return {TAG: "float", "value": text}


def _class_reference(value: Any, known: Mapping[str, type]) -> str:
    cls = type(value)
    reference = _reference(cls)
    if _importable(cls) or known.get(reference) is cls:
        return reference
    raise _Unstorable(
        f"Cannot store a {cls.__qualname__} at {{where}}: its class cannot be found again when the value "
        f"is loaded ({reference!r} is defined inside a function or is not importable under that name). "
        "Define the class at module level, or name it in the checkpoint's return annotation."
    )


class _Encoder:
    """Turns a value into JSON data with tagged objects; see the module docstring.

    Where a failing part sits is worked out only when it fails (`_Unstorable.path`).
    """

    def __init__(self, known: Mapping[str, type]) -> None:
        self.known = known

    def encode(self, value: Any) -> Any:
        cls = type(value)
        if value is None or cls is str or cls is bool or cls is int:
            return value
        if cls is float:
            return value if math.isfinite(value) else _float_tag(value)
        if cls is dict:
            return self._dict(value)  # pyright: ignore[reportUnknownArgumentType]
        if cls is list:
            return self._items(value)  # pyright: ignore[reportUnknownArgumentType]
        special = _EXACT.get(cls)
        if special is not None:
            return special(self, value)
        return self._other(value)

    def _dict(self, value: dict[Any, Any]) -> Any:
        key: Any = None
        try:
            if TAG not in value and all(type(key) is str for key in value):
                result: dict[str, Any] = {}
                for key, item in value.items():
                    result[key] = self.encode(item)
                return result
            pairs: list[list[Any]] = []
            for key, item in value.items():
                pairs.append([self.encode(key), self.encode(item)])
            return {TAG: "dict", "items": pairs}
        except _Unstorable as error:
            raise error.at(f"[{key!r}]") from None

    def _items(self, value: Iterable[Any]) -> list[Any]:
        result: list[Any] = []
        try:
            for item in value:
                result.append(self.encode(item))
        except _Unstorable as error:
            raise error.at(f"[{len(result)}]") from None
        return result

    def _set_items(self, value: Iterable[Any]) -> list[Any]:
        """A set's items in a stable order (by their JSON text), so equal sets give equal payloads."""
        return sorted(self._items(value), key=_dumps)

    def _fields(self, items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        name = ""
        try:
            for name, item in items:
                result[name] = self.encode(item)
        except _Unstorable as error:
            raise error.at(f".{name}") from None
        return result

    def _other(self, value: Any) -> Any:
        if isinstance(value, enum.Enum):
            reference = _class_reference(value, self.known)
            return {TAG: "enum", "class": reference, "value": self._fields([("value", value.value)])["value"]}
        pydantic = sys.modules.get("pydantic")
        if pydantic is not None and isinstance(value, pydantic.BaseModel):
            return self._model(value)
        if is_dataclass(value) and not isinstance(value, type):
            reference = _class_reference(value, self.known)
            fields = self._fields((field.name, getattr(value, field.name)) for field in dataclasses.fields(value))
            return {TAG: "dataclass", "class": reference, "value": fields}
        if isinstance(value, tuple) and hasattr(value, "_fields"):
            reference = _class_reference(value, self.known)
            return {TAG: "namedtuple", "class": reference, "value": self._items(value)}  # pyright: ignore[reportUnknownArgumentType]
        # subclasses of builtins (OrderedDict, numpy.float64...): stored as the base type
        for base in (int, float, str, dict, list, tuple, set, frozenset, bytes, bytearray):
            if isinstance(value, base):
                return self.encode(base(value))  # pyright: ignore[reportUnknownArgumentType, reportCallIssue, reportArgumentType]
        for base in (dt.datetime, dt.date, dt.time, dt.timedelta, Decimal, uuid.UUID, pathlib.PurePath):
            if isinstance(value, base):
                return _EXACT[base](self, value)
        raise _unsupported(value)

    def _model(self, value: Any) -> Any:
        cls = type(value)
        reference = _class_reference(value, self.known)
        fields: dict[str, Any] = {}
        data: dict[str, Any] = value.__dict__
        for name, item in data.items():
            try:
                fields[name] = self.encode(item)
            except _Unstorable as error:
                fields[name] = _model_field_fallback(cls, name, item, error)
        document: dict[str, Any] = {TAG: "model", "class": reference, "value": fields}
        unset = [name for name in data if name not in value.__pydantic_fields_set__]
        if unset:
            document["unset"] = unset
        extra = value.__pydantic_extra__
        if extra is not None:
            document["extra"] = self._fields([(" (extra fields)", dict(extra))])[" (extra fields)"]
        private = value.__pydantic_private__
        if private is not None:
            document["private"] = self._fields([(" (private attributes)", dict(private))])[" (private attributes)"]
        return document


def _field_adapter(cls: Any, name: str) -> Any:
    """A `TypeAdapter` for one field of a model class, with its constraints (`Any` if unknown)."""
    from pydantic import TypeAdapter

    info: Any = cls.model_fields.get(name)
    annotation: Any = Any if info is None else typing.Annotated[info.annotation, info]  # pyright: ignore[reportInvalidTypeForm]
    return TypeAdapter(annotation)


def _model_field_fallback(cls: Any, name: str, item: Any, error: _Unstorable) -> Any:
    """A model field of a type only pydantic knows (HttpUrl, IPv4Address...): its JSON form, checked."""
    from pydantic_core import to_jsonable_python

    info = cls.model_fields.get(name)
    if info is None:
        raise error.at(f".{name}")
    try:
        adapter = _field_adapter(cls, name)
        plain = adapter.dump_python(item, mode="json")
        back = adapter.validate_python(plain)
        exact = back == item and type(back) is type(item) and to_jsonable_python(back) == to_jsonable_python(item)
    except Exception:
        exact = False
    if not exact:
        raise error.at(f".{name}")
    return {TAG: "field", "value": plain}  # pyright: ignore[reportPossiblyUnboundVariable]


def _datetime_document(value: dt.datetime) -> dict[str, Any]:
    document: dict[str, Any] = {TAG: "datetime", "value": value.isoformat()}
    zone = getattr(value.tzinfo, "key", None)
    if isinstance(zone, str):
        document["zone"] = zone
    if value.fold:
        document["fold"] = 1
    return document


_EXACT: dict[type, Callable[[_Encoder, Any], Any]] = {
    tuple: lambda encoder, value: {TAG: "tuple", "value": encoder._items(value)},  # pyright: ignore[reportPrivateUsage]
    set: lambda encoder, value: {TAG: "set", "value": encoder._set_items(value)},  # pyright: ignore[reportPrivateUsage]
    frozenset: lambda encoder, value: {TAG: "frozenset", "value": encoder._set_items(value)},  # pyright: ignore[reportPrivateUsage]
    bytes: lambda encoder, value: {TAG: "bytes", "value": base64.b64encode(value).decode("ascii")},
    bytearray: lambda encoder, value: {TAG: "bytearray", "value": base64.b64encode(value).decode("ascii")},
    Decimal: lambda encoder, value: {TAG: "decimal", "value": str(value)},
    dt.datetime: lambda encoder, value: _datetime_document(value),
    dt.date: lambda encoder, value: {TAG: "date", "value": value.isoformat()},
    dt.time: lambda encoder, value: {TAG: "time", "value": value.isoformat(), "fold": value.fold},
    dt.timedelta: lambda encoder, value: {TAG: "timedelta", "value": [value.days, value.seconds, value.microseconds]},
    uuid.UUID: lambda encoder, value: {TAG: "uuid", "value": str(value)},
    **{
        cls: lambda encoder, value: {TAG: "path", "class": type(value).__name__, "value": str(value)}
        for cls in _PATH_CLASSES.values()
    },
}


class _Decoder:
    """Rebuilds values from `_Encoder`'s JSON data."""

    def __init__(self, type_hint: Any) -> None:
        self.type_hint = type_hint
        self._known: dict[str, type] | None = None

    @property
    def known(self) -> dict[str, type]:
        if self._known is None:
            self._known = _hint_classes(self.type_hint)
        return self._known

    def resolve(self, reference: Any, kind: str) -> Any:
        if not isinstance(reference, str):
            raise SerializationError(f"A stored {kind} names no class.")
        known = self.known if reference in self.known else None
        return resolve_class(reference, kind, known)

    def decode(self, node: Any) -> Any:
        cls = type(node)
        if cls is list:
            return [self.decode(item) for item in node]
        if cls is not dict:
            return node
        tag = node.get(TAG)
        if tag is None:
            return {key: self.decode(item) for key, item in node.items()}
        handler = _TAGS.get(tag) if isinstance(tag, str) else None
        if handler is None:
            raise SerializationError(f"A stored value has an unknown tag {tag!r}.")
        return handler(self, node)

    def items(self, node: dict[str, Any]) -> list[Any]:
        value = node.get("value")
        if not isinstance(value, list):
            raise SerializationError(f"A stored {node[TAG]} has no list of items.")
        return [self.decode(item) for item in value]  # pyright: ignore[reportUnknownVariableType]

    def model(self, node: dict[str, Any]) -> Any:
        cls: Any = self.resolve(node.get("class"), "model")
        stored: dict[str, Any] = node.get("value") or {}
        fields: dict[str, Any] = {}
        for name, item in stored.items():
            if isinstance(item, dict) and item.get(TAG) == "field":  # pyright: ignore[reportUnknownMemberType]
                fields[name] = _field_adapter(cls, name).validate_python(item["value"])
            else:
                fields[name] = self.decode(item)
        unset: set[str] = set(node.get("unset") or ())
        extra = node.get("extra")
        private = node.get("private")
        # built as pydantic's own __copy__ does: no validators, no model_post_init, no default factories
        instance = cls.__new__(cls)
        object.__setattr__(instance, "__dict__", fields)
        object.__setattr__(instance, "__pydantic_fields_set__", {name for name in fields if name not in unset})
        object.__setattr__(instance, "__pydantic_extra__", None if extra is None else self.decode(extra))
        object.__setattr__(instance, "__pydantic_private__", None if private is None else self.decode(private))
        return instance

    def dataclass(self, node: dict[str, Any]) -> Any:
        cls: Any = self.resolve(node.get("class"), "dataclass")
        instance = cls.__new__(cls)
        for name, item in (node.get("value") or {}).items():
            object.__setattr__(instance, name, self.decode(item))
        return instance


def _datetime_from(node: dict[str, Any]) -> dt.datetime:
    value = dt.datetime.fromisoformat(node["value"])
    zone = node.get("zone")
    if isinstance(zone, str):
        from zoneinfo import ZoneInfo

        value = value.replace(tzinfo=ZoneInfo(zone))  # the wall time, fold and zone: the same datetime
    return value.replace(fold=node.get("fold", 0))


def _dict_from(decoder: _Decoder, node: dict[str, Any]) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    for pair in node.get("items") or []:
        key, item = pair
        result[decoder.decode(key)] = decoder.decode(item)
    return result


_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

_TAGS: dict[str, Callable[[_Decoder, dict[str, Any]], Any]] = {
    "dict": _dict_from,
    "tuple": lambda decoder, node: tuple(decoder.items(node)),
    "set": lambda decoder, node: set(decoder.items(node)),
    "frozenset": lambda decoder, node: frozenset(decoder.items(node)),
    "float": lambda decoder, node: _FLOATS[node["value"]],
    "bytes": lambda decoder, node: base64.b64decode(node["value"], validate=True),
    "bytearray": lambda decoder, node: bytearray(base64.b64decode(node["value"], validate=True)),
    "decimal": lambda decoder, node: Decimal(node["value"]),
    "datetime": lambda decoder, node: _datetime_from(node),
    "date": lambda decoder, node: dt.date.fromisoformat(node["value"]),
    "time": lambda decoder, node: dt.time.fromisoformat(node["value"]).replace(fold=node.get("fold", 0)),
    "timedelta": lambda decoder, node: dt.timedelta(*node["value"]),
    "uuid": lambda decoder, node: uuid.UUID(node["value"]),
    "path": lambda decoder, node: _PATH_CLASSES[node["class"]](node["value"]),
    "enum": lambda decoder, node: decoder.resolve(node.get("class"), "enum")(decoder.decode(node["value"])),
    "namedtuple": lambda decoder, node: decoder.resolve(node.get("class"), "namedtuple")._make(
        decoder.items(node)
    ),
    "model": _Decoder.model,
    "dataclass": _Decoder.dataclass,
}


@functools.cache
def _pydantic_json() -> tuple[Callable[[Any], bytes], type[Exception]]:
    """pydantic_core's `to_json` and its error, imported at the first use (not at `import kitaru_core`)."""
    from pydantic_core import PydanticSerializationError, to_json

    return to_json, PydanticSerializationError


def _dumps(data: Any) -> bytes:
    to_json, serialization_error = _pydantic_json()  # not an import statement per call
    try:
        return to_json(data)  # the same compact JSON as json.dumps, several times faster
    except (serialization_error, UnicodeEncodeError, ValueError):  # lone surrogates: escape them
        return json.dumps(data, separators=(",", ":"), allow_nan=False).encode("utf-8")


_TAG_BYTES = json.dumps(TAG).encode("utf-8")


def encode_typed(value: Any, type_hint: Any = None) -> bytes:
    """The `json+typed/1` payload of `value` (see `JsonCodec`).

    Raises:
        SerializationError: A part of the value has a type the encoding does not cover.
    """
    cls = type(value)
    if value is None or cls is str or cls is int or cls is bool:  # its own JSON form (`_Encoder.encode`)
        return _dumps(value)
    try:
        data = _Encoder(_hint_classes(type_hint)).encode(value)
    except _Unstorable as error:
        raise error.error() from None
    return _dumps(data)


def decode_typed(payload: bytes, type_hint: Any = None) -> Any:
    """Rebuild a value from a `json+typed/1` payload.

    Raises:
        SerializationError: The payload is corrupt or names a class that may not be loaded.
    """
    try:
        data = json.loads(payload)
        if _TAG_BYTES not in payload:
            return data
        return _Decoder(type_hint).decode(data)
    except SerializationError:
        raise
    except (ValueError, TypeError, KeyError, LookupError, AttributeError) as error:
        raise SerializationError(f"A stored value could not be loaded: {type(error).__name__}: {error}") from error


# -- what an annotation allows ----------------------------------------------------------------------

_STORABLE_TYPES: frozenset[Any] = frozenset(
    {
        type(None),
        bool,
        int,
        float,
        str,
        bytes,
        bytearray,
        Decimal,
        dt.datetime,
        dt.date,
        dt.time,
        dt.timedelta,
        uuid.UUID,
        list,
        tuple,
        set,
        frozenset,
        dict,
        object,
        *_PATH_CLASSES.values(),
    }
)
_UNSTORABLE_ORIGINS: frozenset[Any] = frozenset(
    {
        collections.abc.Callable,
        collections.abc.Iterator,
        collections.abc.Generator,
        collections.abc.AsyncIterator,
        collections.abc.AsyncGenerator,
        type,
    }
)


def unstorable_type(hint: Any, _depth: int = 0) -> Any | None:
    """The part of a return annotation the default codec cannot store, or `None` when all of it can.

    Unknown typing constructs, `Any` and type variables count as storable (they are checked when a
    value is stored).
    """
    if _depth > 12 or hint is Any or hint is None or isinstance(hint, typing.TypeVar):
        return None
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return unstorable_type(typing.get_args(hint)[0], _depth + 1)
    if origin is typing.Literal:
        return None
    if origin in _UNSTORABLE_ORIGINS:
        return hint
    if origin is not None:
        for argument in typing.get_args(hint):
            if argument is Ellipsis or isinstance(argument, list):
                continue
            found = unstorable_type(argument, _depth + 1)
            if found is not None:
                return found
        return None
    supertype = getattr(hint, "__supertype__", None)  # typing.NewType
    if supertype is not None:
        return unstorable_type(supertype, _depth + 1)
    if not isinstance(hint, type):
        return None  # a string forward reference or another construct: checked when storing
    if hint in _STORABLE_TYPES or issubclass(hint, enum.Enum) or is_dataclass(hint) or _is_model_class(hint):
        return None
    if typing.is_typeddict(hint):
        try:
            hints = typing.get_type_hints(hint)
        except Exception:  # unresolvable forward references: checked when storing
            return None
        for field_type in hints.values():
            found = unstorable_type(field_type, _depth + 1)
            if found is not None:
                return found
        return None
    if issubclass(hint, tuple) and hasattr(hint, "_fields"):
        return None
    builtins_bases = (int, float, str, dict, list, tuple, set, frozenset, bytes, bytearray)
    if issubclass(hint, builtins_bases) or issubclass(hint, (dt.date, dt.time, dt.timedelta, Decimal)):
        return None
    if hint.__module__ == "collections.abc" or hint.__module__ == "typing":
        return None  # abstract containers (Sequence, Mapping...): their arguments were checked
    return hint


# -- the codec ---------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class JsonCodec:
    """The default codec: lossless, self-describing JSON (`json+typed/1`), pickle only on opt-in.

    A value loaded back is equal to the value stored, of the same type at every depth, with the
    same canonical JSON (`fingerprint`). What can be stored: `None`, `bool`, `int`, `float`
    (including NaN, ±inf and -0.0), `str`, `list`, `dict` (any hashable storable keys: int and
    tuple keys round-trip), `tuple`, `set`, `frozenset`, `bytes`, `bytearray`, `Decimal`,
    `datetime` (naive or aware; a `zoneinfo` zone is kept), `date`, `time`, `timedelta`, `UUID`,
    `pathlib` paths, `Enum` members, pydantic models, dataclasses and named tuples (by class
    reference, at any depth). TypedDict values are dicts. Subclasses of `int`, `float`, `str`,
    `dict`, `list` and the other builtins that are not one of the above are stored as their
    base type.

    Loading never imports a module that is not imported yet unless `configure(decode_modules=...)`
    allows it, and rebuilds only the classes listed above. Pydantic models and dataclasses are
    rebuilt without running `__init__` or validators: they hold exactly the stored field values.

    Values written by 0.1 (format `json` or `json:<module>:<class>`) load as they did then:
    validated into `type_hint`, or into the recorded class.

    Attributes:
        type_hint: The checkpoint's return annotation: used to find classes defined inside
            functions, and to validate values written by 0.1. It never converts a value.
        allow_pickle: Pickle values the encoding does not cover instead of raising.
    """

    type_hint: Any = None
    allow_pickle: bool = False

    def encode(self, value: Any) -> tuple[str, bytes]:
        """Serialize `value`; see `Codec.encode`.

        Raises:
            SerializationError: A part of the value cannot be stored and pickle is not allowed.
        """
        try:
            return TYPED_FORMAT, encode_typed(value, self.type_hint)
        except (SerializationError, RecursionError, ValueError) as error:
            if self.allow_pickle:
                return PICKLE_FORMAT, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            if isinstance(error, SerializationError):
                raise
            raise SerializationError(f"Cannot store a value of type {type(value).__qualname__}: {error}") from error

    def decode(self, format: str, payload: bytes) -> Any:
        """Rebuild a value; see `Codec.decode`.

        Raises:
            SerializationError: The payload is pickle but pickle is not allowed, it is corrupt, or it
                names a class whose module is not imported (and not allowed by `decode_modules`).
        """
        if format == TYPED_FORMAT:
            return decode_typed(payload, self.type_hint)
        if format == PICKLE_FORMAT:
            if not self.allow_pickle:
                raise SerializationError(
                    "This stored value was written with pickle, and loading pickle is not allowed here. "
                    "Opt in with allow_pickle=True only if you trust everyone who can write the store."
                )
            return pickle.loads(payload)
        if format != JSON_FORMAT and not format.startswith(JSON_FORMAT + ":"):
            raise SerializationError(f"Unknown stored value format {format!r}.")
        return self._decode_legacy(format, payload)

    def _decode_legacy(self, format: str, payload: bytes) -> Any:
        """Values written by 0.1: validated into the annotation, or into the recorded class."""
        try:
            adapter = _type_adapter(self.type_hint) if self.type_hint is not None else None
            if adapter is not None:
                return adapter.validate_json(payload)
            _, _, reference = format.partition(":")
            if reference:
                adapter = _type_adapter(resolve_class(reference, "model-or-dataclass"))
                if adapter is not None:
                    return adapter.validate_json(payload)
            return json.loads(payload)
        except ValueError as error:
            raise SerializationError(f"A stored value could not be loaded: {error}") from error


# -- canonical JSON and fingerprints ----------------------------------------------------------------


def _canonical_text(plain: Any) -> str:
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _prepare(value: Any) -> Any:
    """Give values pydantic would turn into JSON ambiguously or unstably a canonical form.

    Plain JSON values, models and dataclasses are left as they are (their canonical JSON is the
    one 0.1 wrote); sets become lists in sorted order, bytes a tagged base64 object.
    """
    cls = type(value)
    if value is None or cls is str or cls is int or cls is bool or cls is float:
        return value
    if cls is dict:
        return {key: _prepare(item) for key, item in value.items()}  # pyright: ignore[reportUnknownVariableType]
    if cls is list or cls is tuple:
        return [_prepare(item) for item in value]  # pyright: ignore[reportUnknownVariableType]
    if cls is set or cls is frozenset:
        return _sorted_items([_prepare(item) for item in value])  # pyright: ignore[reportUnknownVariableType]
    if cls is bytes or cls is bytearray:
        return {TAG: cls.__name__, "value": base64.b64encode(value).decode("ascii")}
    if isinstance(value, collections.abc.Iterator | collections.abc.AsyncIterator):
        # Reading it would consume it: the call's body would then get an empty iterator.
        raise TypeError("an iterator or generator has no fingerprint that leaves it unread")
    return _sets_sorted(value)


def _sorted_items(items: list[Any]) -> list[Any]:
    """Items of a set in canonical order: natural order when they compare, else by canonical JSON."""
    try:
        if any(type(item) is float and math.isnan(item) for item in items):
            raise TypeError("NaN does not sort")
        return sorted(items)
    except TypeError:
        from pydantic_core import to_jsonable_python

        return sorted(items, key=lambda item: _canonical_text(to_jsonable_python(item)))


def _sets_sorted(value: Any, depth: int = 0) -> Any:
    """`value` with sets inside models and dataclasses made sorted lists; the same object when it has none.

    Pydantic writes a set in iteration order, which differs between processes (string hashes) and
    between a set and the same set rebuilt from the store. Nothing else inside a model changes, so
    its canonical JSON stays the one 0.1 wrote.
    """
    cls: Any = type(value)
    if value is None or cls is str or cls is int or cls is float or cls is bool or depth > 64:
        return value
    if cls is set or cls is frozenset:
        return _sorted_items([_sets_sorted(item, depth + 1) for item in value])  # pyright: ignore[reportUnknownVariableType]
    if cls is dict:
        changed = {key: _sets_sorted(item, depth + 1) for key, item in value.items()}  # pyright: ignore[reportUnknownVariableType]
        same = all(changed[key] is item for key, item in value.items())  # pyright: ignore[reportUnknownVariableType]
        return value if same else changed  # pyright: ignore[reportUnknownVariableType]
    if cls is list or cls is tuple:
        items = [_sets_sorted(item, depth + 1) for item in value]  # pyright: ignore[reportUnknownVariableType]
        same = all(new is old for new, old in zip(items, value, strict=True))  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
        return value if same else cls(items)  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        data: dict[str, Any] = value.__dict__
        changed = {name: _sets_sorted(item, depth + 1) for name, item in data.items()}
        if all(changed[name] is item for name, item in data.items()):
            return value
        copy = cls.__new__(cls)
        object.__setattr__(copy, "__dict__", changed)
        for attribute in ("__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__"):
            object.__setattr__(copy, attribute, getattr(value, attribute))
        return _Resorted(copy)
    if is_dataclass(value) and not isinstance(value, type):
        fields = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
        changed = {name: _sets_sorted(item, depth + 1) for name, item in fields.items()}
        if all(changed[name] is item for name, item in fields.items()):
            return value
        import copy as copy_module

        duplicate = copy_module.copy(value)
        for name, item in changed.items():
            object.__setattr__(duplicate, name, item)
        return _Resorted(duplicate)
    return value


class _Resorted:
    """A model or dataclass copy whose set fields are lists now: serialized without type warnings."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _is_plain_json(value: Any) -> bool:
    """Whether `value` is made only of `dict` (with `str` keys), `list`, `str`, `int`, `float`, `bool`, `None`.

    Such a value is what `_jsonable` would return for it (pydantic leaves JSON builtins as they are).
    """
    cls = type(value)
    if value is None or cls is str or cls is int or cls is float or cls is bool:
        return True
    if cls is list:
        return all(_is_plain_json(item) for item in value)  # pyright: ignore[reportUnknownVariableType]
    if cls is dict:
        return all(
            type(key) is str and _is_plain_json(item)  # pyright: ignore[reportUnknownArgumentType]
            for key, item in value.items()  # pyright: ignore[reportUnknownVariableType]
        )
    return False


def _flat_scalars(value: dict[Any, Any]) -> bool:
    """Whether `value` maps `str` keys to `None`, `str`, `int`, `float` or `bool` only (nothing nested)."""
    for key, item in value.items():
        if type(key) is not str:
            return False
        cls = type(item)
        if not (item is None or cls is str or cls is int or cls is float or cls is bool):
            return False
    return True


def _jsonable(value: Any) -> Any:
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value, round_trip=False, fallback=_resorted_fallback)


def _resorted_fallback(value: Any) -> Any:
    if isinstance(value, _Resorted):
        import warnings

        with warnings.catch_warnings():  # "expected set, got list": the list is the set, sorted
            warnings.simplefilter("ignore")
            return _jsonable(value.value)
    raise TypeError(f"{type(value).__qualname__} has no JSON form")


def _finite(plain: Any) -> Any:
    """Replace NaN and ±inf (not JSON) by tagged objects, at every depth."""
    if isinstance(plain, float):
        return plain if math.isfinite(plain) else _float_tag(plain)
    if isinstance(plain, dict):
        return {key: _finite(item) for key, item in plain.items()}  # pyright: ignore[reportUnknownVariableType]
    if isinstance(plain, list):
        return [_finite(item) for item in plain]  # pyright: ignore[reportUnknownVariableType]
    return plain


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


_CANONICAL_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str, allow_nan=False
)
"""`json.dumps(plain, sort_keys=True, ...)` without building an encoder per call."""


def canonical_json(value: Any, *, exclude_keys: Iterable[str] = ()) -> str | None:
    """Canonical JSON text of `value` (sorted keys, no spaces), or `None` if it has no JSON form.

    Plain JSON values, pydantic models and dataclasses give the same text as in 0.1. Values JSON
    cannot carry get one canonical form: sets and frozensets are sorted lists, `bytes` a tagged
    base64 object, NaN and ±inf tagged objects (`{"$kitaru": "float", "value": "nan"}`), tuples
    lists, `Decimal` its string. A value and the same value served from the store give the same
    text.

    Args:
        value: Anything pydantic can turn into JSON values (models, dataclasses, builtins...). An
            iterator or generator in it (at the top or in dicts, lists, tuples and sets) gives
            `None`: reading it would consume it, and the caller still needs its items.
        exclude_keys: Mapping keys removed at every depth before encoding (per-run ids, timestamps).
    """
    if not exclude_keys and type(value) is dict and _flat_scalars(value):  # pyright: ignore[reportUnknownArgumentType]
        try:  # the usual checkpoint inputs (`{"invoice_id": "A-1", "attempt": 2}`): their own JSON form
            return _CANONICAL_ENCODER.encode(value)
        except ValueError:  # NaN or ±inf: tagged below
            pass
    try:
        prepared = _prepare(value)
        plain_already = _is_plain_json(prepared)
    except (TypeError, ValueError, RecursionError):
        return None
    if plain_already:  # a tree of JSON builtins (the usual inputs) is its own JSON form
        plain = prepared
    else:
        from pydantic_core import PydanticSerializationError

        try:
            plain = _jsonable(prepared)
        except (PydanticSerializationError, TypeError, ValueError, RecursionError):
            return None
    excluded = frozenset(exclude_keys)
    if excluded:
        plain = _strip(plain, excluded)
    try:
        return _CANONICAL_ENCODER.encode(plain)
    except ValueError:  # NaN or ±inf somewhere
        return _canonical_text(_finite(plain))


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
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def import_callable(reference: str) -> Any:
    """Import `module:qualname` (a flow's recorded entry point).

    Raises:
        ImportError: The module or attribute does not exist.
    """
    module_name, _, qualname = reference.partition(":")
    target: Any = importlib.import_module(module_name)
    try:
        for part in qualname.split("."):
            target = getattr(target, part)
    except AttributeError as error:
        raise ImportError(f"Cannot import {reference}: {error}") from error
    return target
