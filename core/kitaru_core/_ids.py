"""One grammar for the names that identify things: execution ids and wait names.

Execution ids and wait names end up in database keys, URLs, file names and shell commands, and
many of them come from somewhere we do not control (a user's ticket number, a model's
`tool_call_id`). One rule holds for both, on every backend and at every entry point:

- a `str` of 1 to 200 characters (`MAX_ID_CHARACTERS`);
- no control, format, surrogate, private-use or unassigned characters (Unicode category `C*`:
  NUL, newlines, tabs, escape sequences, bidirectional overrides, zero-width characters);
- no leading or trailing white space.

Anything else is allowed, `/`, `%`, `..`, quotes, `<>` and inner spaces included: the surfaces
that print or route these names encode them for their context (URL path segments, shell words),
and `idempotency_key()` encodes the execution id so that keys never collide.
"""

from __future__ import annotations

import hashlib
import unicodedata

from kitaru_core.errors import InvalidIdError

__all__ = [
    "MAX_ID_CHARACTERS",
    "check_artifact_name",
    "check_execution_id",
    "check_queue_name",
    "check_wait_name",
    "fit_name",
]

MAX_ID_CHARACTERS = 200


def _problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f"it is a {type(value).__name__}, not a str"
    if not value:
        return "it is empty"
    if len(value) > MAX_ID_CHARACTERS:
        return f"it has {len(value)} characters, more than {MAX_ID_CHARACTERS}"
    if value != value.strip():
        return "it starts or ends with white space"
    for position, character in enumerate(value):
        if unicodedata.category(character).startswith("C"):
            return (
                f"character {position} is U+{ord(character):04X} "
                f"{unicodedata.name(character, 'unnamed')}, a control or invisible character"
            )
    return None


def _check(value: object, what: str, example: str) -> str:
    problem = _problem(value)
    if problem is not None:
        raise InvalidIdError(
            f"{value!r:.80} is not a valid {what}: {problem}. A {what} is 1 to {MAX_ID_CHARACTERS} "
            f"characters with no control or invisible characters and no white space at either end, "
            f"e.g. {example!r}."
        )
    assert isinstance(value, str)
    return value


def check_execution_id(value: object) -> str:
    """Return `value` if it is a valid execution id.

    Args:
        value: The id to check, e.g. `"ticket-42"`.

    Returns:
        `value`, unchanged.

    Raises:
        InvalidIdError: It is not a `str` of 1 to 200 characters without control characters and
            without white space at either end.
    """
    return _check(value, "execution id", "ticket-42")


def check_wait_name(value: object) -> str:
    """Return `value` if it is a valid wait name (same rule as execution ids).

    Raises:
        InvalidIdError: It is not a valid wait name.
    """
    return _check(value, "wait name", "manager-approval")


def check_artifact_name(value: object) -> str:
    """Return `value` if it is a valid artifact name (same rule as execution ids).

    Artifact names come from flow code and, through it, from models and tools: they are stored as
    database values only, and every surface that shows or routes them encodes them (URL path
    segments, `Content-Disposition` file names, HTML, Rich markup). Their values live in the
    content-addressed artifact store, so a name never becomes a file path.

    Raises:
        InvalidIdError: It is not a valid artifact name.
    """
    name = _check(value, "artifact name", "report.md")
    if name in {".", ".."}:
        raise InvalidIdError(
            f"{name!r} is not a valid artifact name: URLs resolve `.` and `..` away, so the dashboard "
            "could not address it. Use another name, e.g. 'report.md'."
        )
    return name


def fit_name(name: str) -> str:
    """Make a name built from untrusted parts (a model's tool-call id) a valid id or wait name.

    A name that is already valid is returned unchanged, so names stored by earlier versions keep
    matching. Otherwise control characters become `?`, white space at the ends is dropped, the
    name is cut to fit, and `~` plus 12 hex characters of the SHA-256 of the original name are
    appended, so two different originals never share a result.

    Args:
        name: The name as built, e.g. `approve:refund:<tool_call_id>`.

    Returns:
        A valid name of at most 200 characters.
    """
    if _problem(name) is None:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    cleaned = "".join("?" if unicodedata.category(c).startswith("C") else c for c in name).strip()
    return f"{cleaned[: MAX_ID_CHARACTERS - 13].rstrip()}~{digest}"


def check_queue_name(value: object) -> str:
    """Return `value` if it is a valid queue name (same rule as execution ids).

    Raises:
        InvalidIdError: It is not a valid queue name.
    """
    return _check(value, "queue name", "default")
