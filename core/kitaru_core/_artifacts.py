"""Metadata and artifacts: `log(**metadata)`, `save(name, value)` and `load(execution_id, name, version)`.

Crash semantics (what a resume does, see docs/concepts.md "Metadata and artifacts"):

- `log` inside a checkpoint call keeps the metadata in memory and writes it with the call's record,
  in the same row and transaction. A call that completed has its metadata exactly once; a call
  served on resume does not run, so it logs nothing again; a call cut off by a crash wrote none, and
  its re-run writes its own. `log` outside any call merges into the execution's metadata by key at
  once (later keys win), so flow code that runs again on every resume leaves one value per key.
- `save` is keyed by where it happens: the scope (the call key inside a call, `""` at the top of
  the flow), the name and the occurrence of that name there in this run (or attempt). The first
  save at a place adds the next version of the name; a save that runs again at the same place (a
  call re-run after a crash or retried after an error, flow code on resume) writes its value into
  the version that place already has (an unchanged value leaves it untouched). A resume therefore
  never adds versions, and a version holds the value of the latest attempt that reached it.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

from kitaru_core import _boundary, _config, _signals
from kitaru_core._async_io import off_loop
from kitaru_core._context import ExecutionContext, current_call_key, current_execution, current_scope
from kitaru_core._ids import check_artifact_name, check_execution_id
from kitaru_core._serialization import JsonCodec
from kitaru_core.errors import ArtifactNotFoundError, ConfigurationError, InvalidIdError, SerializationError

if TYPE_CHECKING:
    from kitaru_core._records import ArtifactRecord
    from kitaru_core._store import Store

__all__ = ["MAX_METADATA_BYTES", "load", "log", "save"]

MAX_METADATA_BYTES = 64 * 1024
"""Largest JSON text of one call's (or one execution's) metadata; larger things belong in `save`."""

MAX_VERSION = 2**31 - 1
"""The highest version a store can hold (a 32-bit integer column)."""

IMAGE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")
_MARKDOWN_SUFFIXES = (".md", ".markdown")


def sniff_image(data: bytes) -> str | None:
    """The media type of a PNG, JPEG, GIF or WebP image judged by its first bytes, else `None`.

    Only these raster formats are ever shown as images: an SVG can carry scripts.
    """
    for signature, media_type in IMAGE_SIGNATURES:
        if data.startswith(signature):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def guess_media_type(name: str, value: Any) -> str:
    """What an artifact is, for previews: from its value and the suffix of its name.

    `bytes` are an image when their first bytes say so, else what the name's suffix says (or
    `application/octet-stream`); a `str` is Markdown for `.md`/`.markdown`, another `text/*` type
    its suffix names, else `text/plain`; anything else is `application/json`.
    """
    import mimetypes  # here, not at import: `import kitaru_core` stays fast

    lowered = name.lower()
    guessed = mimetypes.guess_type(lowered, strict=False)[0] if "." in lowered else None
    if isinstance(value, bytes | bytearray):
        image = sniff_image(bytes(value[:16]))
        if image is not None:
            return image
        return guessed if guessed and not guessed.startswith("image/") else "application/octet-stream"
    if isinstance(value, str):
        if lowered.endswith(_MARKDOWN_SUFFIXES):
            return "text/markdown"
        return guessed if guessed and guessed.startswith("text/") else "text/plain"
    return "application/json"


def _check_media_type(media_type: str) -> str:
    if not isinstance(media_type, str) or not _MEDIA_TYPE.match(media_type):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise ConfigurationError(
            f"media_type={media_type!r:.80} is not a media type: give `type/subtype` in lower case, "
            "e.g. 'text/markdown', 'image/png' or 'application/json'."
        )
    return media_type


def _jsonable(key: str, value: Any) -> Any:
    import pydantic_core

    try:
        return json.loads(pydantic_core.to_json(value))
    except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as error:
        raise SerializationError(
            f"log(): the value of {key!r} ({type(value).__name__}) is not JSON-able: {error}. Log JSON data "
            "(str, numbers, bools, None, lists, dicts, pydantic models, dataclasses, dates), or store the "
            f"value with save({key!r}, value)."
        ) from None


def _context(what: str) -> ExecutionContext:
    context = current_execution()
    if context is None:
        raise ConfigurationError(
            f"{what} needs an execution: call it inside a @flow, a `with execution(...)` block, a "
            "checkpoint call of one, or a run of an agent made durable with an adapter."
        )
    return context


def log(**metadata: Any) -> None:
    """Attach JSON metadata to the checkpoint call running now, or to the execution outside any call.

    Repeated calls merge (a later value of a key wins). Metadata logged inside a call is written
    with the call's record when the call completes (or fails), so a call cut off by a crash leaves
    none and its re-run writes its own once; a call served on resume does not run and logs nothing
    again. Outside a call the metadata is merged into the execution's at once, by key, so flow
    code that runs again on resume leaves one value per key. It is shown in the timeline
    (`kitaru-adapters executions show ID`, the dashboard, `CallView.metadata` and
    `ExecutionDetail.metadata`).

    Args:
        **metadata: Keys (1 to 200 characters, no control characters) and JSON-able values
            (pydantic's JSON: models, dataclasses, dates and UUIDs become JSON).

    Raises:
        ConfigurationError: Called outside any execution.
        InvalidIdError: A key breaks the name rule.
        SerializationError: A value is not JSON-able (the message names its key), or the metadata
            of the call grows past 64 KiB (store large things with `save`).
    """
    context = _context("log()")
    context.check_alive()
    converted: dict[str, Any] = {}
    for key, value in metadata.items():
        try:
            check_artifact_name(key)
        except InvalidIdError as error:
            raise InvalidIdError(f"log(): the key {key!r:.80} is not valid: {error}") from None
        converted[key] = _jsonable(key, value)
    if not converted:
        return
    call_key = current_call_key()
    if call_key is None:
        text = json.dumps(converted)
        _check_size(text, "the execution")
        if not context.store.merge_execution_metadata(context.execution_id, context.owner, converted):
            context.lease_lost = True
            raise _signals.LeaseLost(context.execution_id)
        return
    context.merge_call_metadata(call_key, converted, lambda text: _check_size(text, f"call {call_key!r}"))


async def log_async(**metadata: Any) -> None:
    """Attach JSON metadata like `log`, in async code: the store write runs off the event loop.

    `await log_async(...)` runs `log` on the execution's I/O lane, in the order reached; arguments
    and errors as `log`.

    Args:
        **metadata: Keys (1 to 200 characters, no control characters) and JSON-able values.

    Raises:
        ConfigurationError: Called outside any execution.
        InvalidIdError: A key breaks the name rule.
        SerializationError: A value is not JSON-able, or the metadata of the call grows past 64 KiB.
    """
    await off_loop(current_execution(), log, **metadata)


def _check_size(text: str, owner: str) -> None:
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise SerializationError(
            f"log(): the metadata of {owner} would be {len(text.encode())} bytes of JSON, more than "
            f"{MAX_METADATA_BYTES}. Keep metadata small and store large values with save(name, value)."
        )


def _save_key(scope: str, name: str, occurrence: int) -> str:
    """SHA-256 of where a save happened: JSON of `[scope, name, occurrence]`, unambiguous for any names."""
    return hashlib.sha256(json.dumps([scope, name, occurrence]).encode("utf-8", "surrogatepass")).hexdigest()


def save(name: str, value: Any, *, media_type: str | None = None) -> int:
    """Store `value` as the next version of the execution's artifact `name`; return the version.

    The value is encoded like a checkpoint call's output (`JsonCodec`: JSON, bytes, str, pydantic
    models, dataclasses... pickle only where `configure(allow_pickle=True)`), kept inline when
    small and in the artifact store when large, and read back with `load`. The first save of a
    name is version 1, the next 2, and so on. A save that runs again at the same place after a
    crash (inside a call that is re-run, or in flow code on resume) or in a retried attempt writes
    into the version that place already has instead of adding one.

    Args:
        name: The artifact's name, 1 to 200 characters without control characters (any other
            character is allowed; surfaces encode it), e.g. `report.md`.
        value: What to store; files as `bytes`.
        media_type: What it is, for previews (`text/markdown`, `image/png`...). Default: guessed
            from the value and the name's suffix (`.md` text is Markdown; PNG, JPEG, GIF and WebP
            bytes are images by their first bytes).

    Returns:
        The version number (1, 2, ...).

    Raises:
        ConfigurationError: Called outside any execution, or `media_type` is not `type/subtype`.
        InvalidIdError: `name` breaks the name rule.
        SerializationError: The value cannot be stored.
    """
    check_artifact_name(name)
    context = _context("save()")
    context.check_alive()
    chosen_type = _check_media_type(media_type) if media_type is not None else guess_media_type(name, value)
    format_, payload = JsonCodec(allow_pickle=context.settings.allow_pickle).encode(value)
    stored = context.store.prepare_value(format_, payload)
    scope = current_scope()
    occurrence = context.next_save(scope, name)
    version = context.store.save_artifact(
        context.execution_id,
        context.owner,
        name=name,
        save_key=_save_key(scope, name, occurrence),
        call_key=scope or None,
        media_type=chosen_type,
        value=stored,
        run_number=context.run_number,
    )
    if version < 0:
        context.lease_lost = True
        raise _signals.LeaseLost(context.execution_id)
    return version


async def save_async(name: str, value: Any, *, media_type: str | None = None) -> int:
    """Store `value` like `save`, in async code: its encoding and store I/O run off the event loop.

    `version = await save_async(...)` runs `save` on the execution's I/O lane, in the order
    reached, so versions are numbered as `save` numbers them; arguments, result and errors as `save`.

    Args:
        name: The artifact's name, 1 to 200 characters without control characters.
        value: What to store; files as `bytes`.
        media_type: What it is (`text/markdown`, `image/png`...); default: guessed.

    Returns:
        The version `save` gives.

    Raises:
        ConfigurationError: No execution runs here, or `media_type` is not `type/subtype`.
        InvalidIdError: `name` is not a valid artifact name.
        SerializationError: `value` cannot be encoded or stored.
    """
    return await off_loop(current_execution(), save, name, value, media_type=media_type)


def load(execution_id: str, name: str, version: int | None = None) -> Any:
    """Read an artifact back: the latest version of `name`, or the given one.

    Works from any process, inside or outside an execution. The value is equal to the one saved
    and of the same type (classes are rebuilt only from modules already imported or allowed with
    `configure(decode_modules=[...])`).

    Args:
        execution_id: The execution that saved it.
        name: The artifact's name.
        version: The version (1, 2, ...); default: the latest.

    Returns:
        The stored value.

    Raises:
        InvalidIdError: The execution id or the name breaks the id rule.
        ConfigurationError: `version` is not a positive int.
        ExecutionNotFoundError: No such execution.
        ArtifactNotFoundError: The execution has no artifact of that name, or not that version.
        SerializationError: The value cannot be loaded (pickle not allowed, an unknown class...).
    """
    return load_from(_boundary.get_store(), execution_id, name, version)


def find(store: Store, execution_id: str, name: str, version: int | None = None) -> ArtifactRecord:
    """The record of one version of an artifact (default: the latest), its id and name checked.

    Raises:
        InvalidIdError: The execution id or the name breaks the id rule.
        ConfigurationError: `version` is not a positive int.
        ExecutionNotFoundError: No such execution.
        ArtifactNotFoundError: No artifact of that name, or not that version.
    """
    check_execution_id(execution_id)
    check_artifact_name(name)
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise ConfigurationError(f"version={version!r} is not a version: give 1, 2, ... or None for the latest.")
    beyond = version is not None and version > MAX_VERSION  # no such version: the column is 32-bit
    record = None if beyond else store.find_artifact(execution_id, name, version)
    if record is None:
        store.get_execution(execution_id)  # ExecutionNotFoundError first
        known = sorted({artifact.name for artifact in store.list_artifacts(execution_id)})
        raise ArtifactNotFoundError(execution_id, name, version, known)
    return record


def load_from(store: Store, execution_id: str, name: str, version: int | None = None) -> Any:
    """`load` from a given store (the `Client`'s)."""
    record = find(store, execution_id, name, version)
    settings = _config.current_settings()
    return JsonCodec(allow_pickle=settings.allow_pickle).decode(record.value.format, store.load_value(record.value))
