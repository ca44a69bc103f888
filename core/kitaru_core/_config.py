"""Configuration: keyword arguments to `configure`, then environment variables, then a config file."""

from __future__ import annotations

import os
import threading
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from kitaru_core.errors import ConfigurationError

DEFAULT_DIRECTORY = ".kitaru"

_ENVIRONMENT = {
    "store_url": "KITARU_STORE_URL",
    "artifacts_url": "KITARU_ARTIFACTS_URL",
    "allow_pickle": "KITARU_ALLOW_PICKLE",
    "inline_limit_bytes": "KITARU_INLINE_LIMIT_BYTES",
    "lease_duration_s": "KITARU_LEASE_DURATION_S",
    "wait_poll_interval_s": "KITARU_WAIT_POLL_INTERVAL_S",
    "interactive": "KITARU_INTERACTIVE",
    "on_interrupted": "KITARU_ON_INTERRUPTED",
    "store_retry_budget_s": "KITARU_STORE_RETRY_BUDGET_S",
    "sqlite_busy_timeout_s": "KITARU_SQLITE_BUSY_TIMEOUT_S",
    "sqlite_synchronous": "KITARU_SQLITE_SYNCHRONOUS",
    "decode_modules": "KITARU_DECODE_MODULES",
}


@dataclass(frozen=True)
class Settings:
    """Resolved settings of the durable core.

    Attributes:
        store_url: SQLAlchemy URL of the metadata store. Default: SQLite (WAL) file
            `./.kitaru/kitaru.db` relative to the working directory at first use.
        artifacts_url: fsspec URL of the artifact store for large values. Default: the folder
            `./.kitaru/artifacts`.
        inline_limit_bytes: Serialized values up to this size are stored in the database; larger
            ones go to the artifact store.
        allow_pickle: Store values the default codec cannot store with pickle. Off by default: a shared
            artifact store must not become a code-execution path.
        lease_duration_s: Seconds a runner's lease lasts without renewal. The heartbeat renews it
            every third of that.
        wait_poll_interval_s: Seconds between polls of the store while `wait()` waits for an answer.
        interactive: Ask waits at the terminal. `None` means: when stdin and stdout are terminals.
        on_interrupted: What a later run does with a checkpoint call whose runner stopped inside its
            body, for calls that do not choose: `"retry"` (run it again), `"ask"` (a durable wait)
            or `"fail"` (an error until somebody answers). See `run_checkpoint`.
        store_retry_budget_s: Seconds a store operation keeps retrying a lost connection or a
            serialization failure (exponential backoff) before it fails with `StoreError`.
        sqlite_busy_timeout_s: Seconds a SQLite write waits for another process's write lock before
            it fails with `StoreError` (reads never wait: they take no write lock).
        sqlite_synchronous: How a SQLite file store commits: `"full"` (the default: a commit is on
            disk when it returns, so a recorded call survives a power loss or an operating system
            crash) or `"normal"` (SQLite's `synchronous=NORMAL` in WAL mode: a commit survives the
            process crashing or being killed, but the last commits before a power loss or an
            operating system crash can be lost; those calls run again on resume). See
            docs/storage.md for the measured cost of each. Environment:
            `KITARU_SQLITE_SYNCHRONOUS=normal`; config file: `sqlite_synchronous = "normal"`.
        decode_modules: Modules (and their submodules) that loading a stored value may import to
            find the class it names (a pydantic model, dataclass, Enum or named tuple). Loading
            otherwise uses only modules already imported: a stored value never decides what code
            is loaded. Environment: `KITARU_DECODE_MODULES=myapp.models,billing` (comma-separated);
            config file: `decode_modules = ["myapp.models"]`.
    """

    store_url: str | None = None
    artifacts_url: str | None = None
    inline_limit_bytes: int = 64 * 1024
    allow_pickle: bool = False
    lease_duration_s: float = 30.0
    wait_poll_interval_s: float = 1.0
    interactive: bool | None = None
    on_interrupted: str = "retry"
    store_retry_budget_s: float = 30.0
    sqlite_busy_timeout_s: float = 30.0
    decode_modules: tuple[str, ...] = ()
    sqlite_synchronous: str = "full"

    def resolved_store_url(self) -> str:
        """The store URL, defaulting to the SQLite file under `./.kitaru/`."""
        if self.store_url:
            return self.store_url
        return "sqlite:///" + str(Path(DEFAULT_DIRECTORY, "kitaru.db").resolve())

    def resolved_artifacts_url(self) -> str:
        """The artifact store URL, defaulting to `./.kitaru/artifacts`."""
        if self.artifacts_url:
            return self.artifacts_url
        return str(Path(DEFAULT_DIRECTORY, "artifacts").resolve())


_lock = threading.Lock()
_overrides: dict[str, Any] = {}


def _module_names(raw: Any) -> tuple[str, ...]:
    names: list[Any] = raw.split(",") if isinstance(raw, str) else list(raw)
    if not all(isinstance(name, str) for name in names):
        raise ConfigurationError(f"decode_modules must be module names (strings), got {raw!r}.")
    cleaned = tuple(str(name).strip() for name in names if str(name).strip())
    for name in cleaned:
        if not all(part.isidentifier() for part in name.split(".")):
            raise ConfigurationError(
                f"decode_modules entry {name!r} is not a module name like 'myapp.models'."
            )
    return cleaned


SQLITE_SYNCHRONOUS_MODES = ("full", "normal")


def _sqlite_synchronous(raw: Any) -> str:
    mode = raw.strip().lower() if isinstance(raw, str) else raw
    if mode not in SQLITE_SYNCHRONOUS_MODES:
        raise ConfigurationError(
            f'sqlite_synchronous must be "full" (durable through a power loss, the default) or "normal" '
            f"(durable through a process crash only), got {raw!r}."
        )
    return mode


def _coerce(name: str, raw: Any) -> Any:
    kind = {field.name: field.type for field in fields(Settings)}[name]
    if name == "decode_modules":
        return _module_names(raw)
    if name == "sqlite_synchronous":
        return _sqlite_synchronous(raw)
    if not isinstance(raw, str):
        return raw
    try:
        if "bool" in str(kind):
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if "int" in str(kind):
            return int(raw)
        if "float" in str(kind):
            return float(raw)
    except ValueError:
        raise ConfigurationError(f"Setting {name} got {raw!r}, which is not a valid {kind}.") from None
    return raw


def _from_file() -> dict[str, Any]:
    path = Path(os.environ.get("KITARU_CONFIG_FILE", Path(DEFAULT_DIRECTORY, "config.toml")))
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigurationError(f"Cannot read the config file {path}: {error}") from error
    section = data.get("kitaru", data)
    known = {field.name for field in fields(Settings)}
    unknown = set(section) - known
    if unknown:
        raise ConfigurationError(
            f"Config file {path} has unknown settings {sorted(unknown)}; known: {sorted(known)}."
        )
    return {name: _coerce(name, value) for name, value in section.items()}


def current_settings() -> Settings:
    """Resolve the settings now in force (keywords > environment > config file > defaults)."""
    values: dict[str, Any] = _from_file()
    for name, variable in _ENVIRONMENT.items():
        if variable in os.environ:
            values[name] = _coerce(name, os.environ[variable])
    with _lock:
        values.update(_overrides)
    return replace(Settings(), **values)


def configure(
    *,
    store_url: str | None = None,
    artifacts_url: str | None = None,
    inline_limit_bytes: int | None = None,
    allow_pickle: bool | None = None,
    lease_duration_s: float | None = None,
    wait_poll_interval_s: float | None = None,
    interactive: bool | None = None,
    on_interrupted: str | None = None,
    store_retry_budget_s: float | None = None,
    sqlite_busy_timeout_s: float | None = None,
    decode_modules: Iterable[str] | None = None,
    sqlite_synchronous: str | None = None,
    reset: bool = False,
) -> Settings:
    """Set where and how executions are stored, for this process.

    Keywords given here win over the environment (`KITARU_STORE_URL`, `KITARU_ARTIFACTS_URL`, ...),
    which wins over the config file (`./.kitaru/config.toml` or `$KITARU_CONFIG_FILE`, with the
    settings under a `[kitaru]` table).

    Args:
        store_url: SQLAlchemy URL of the metadata store, e.g. `sqlite:///path/kitaru.db` or
            `postgresql+psycopg://user@host/db`. `sqlite://` is an in-memory store for tests.
        artifacts_url: fsspec URL for large values: a folder path, `memory://name`, `s3://bucket/prefix`.
        inline_limit_bytes: Largest serialized value (bytes) stored inline in the database.
        allow_pickle: Allow pickle for values the default codec cannot store, for every checkpoint.
        lease_duration_s: Seconds a runner's lease lasts without a heartbeat.
        wait_poll_interval_s: Seconds between store polls while a wait waits for its answer.
        interactive: Ask waits at the terminal (`None`: only when stdin and stdout are terminals).
        on_interrupted: Default for checkpoint calls that do not choose: `"retry"` (the default:
            a call cut off inside its body runs again), `"ask"` or `"fail"` (see `run_checkpoint`).
        store_retry_budget_s: Seconds a store operation retries a lost database connection or a
            serialization failure before failing with `StoreError` (0: no retry).
        sqlite_busy_timeout_s: Seconds a SQLite write waits for another process's write lock.
        decode_modules: Module names (a name covers its submodules) that loading a stored value may
            import to find the class it names; by default only modules already imported are used.
            Replaces the earlier list.
        sqlite_synchronous: `"full"` (default; a commit survives a power loss) or `"normal"`
            (SQLite WAL `synchronous=NORMAL`: survives a process crash, not a power loss; a commit
            costs a fraction of a full one). See docs/storage.md.
        reset: Forget every earlier `configure` keyword first.

    Returns:
        The settings now in force.

    Raises:
        ConfigurationError: A value is out of range.
    """
    given = {
        "store_url": store_url,
        "artifacts_url": artifacts_url,
        "inline_limit_bytes": inline_limit_bytes,
        "allow_pickle": allow_pickle,
        "lease_duration_s": lease_duration_s,
        "wait_poll_interval_s": wait_poll_interval_s,
        "interactive": interactive,
        "on_interrupted": on_interrupted,
        "store_retry_budget_s": store_retry_budget_s,
        "sqlite_busy_timeout_s": sqlite_busy_timeout_s,
        "decode_modules": None if decode_modules is None else _module_names(decode_modules),
        "sqlite_synchronous": None if sqlite_synchronous is None else _sqlite_synchronous(sqlite_synchronous),
    }
    if store_retry_budget_s is not None and store_retry_budget_s < 0:
        raise ConfigurationError(f"store_retry_budget_s must be >= 0 seconds, got {store_retry_budget_s}.")
    if sqlite_busy_timeout_s is not None and sqlite_busy_timeout_s <= 0:
        raise ConfigurationError(
            f"sqlite_busy_timeout_s must be positive seconds, got {sqlite_busy_timeout_s}."
        )
    if lease_duration_s is not None and lease_duration_s <= 0:
        raise ConfigurationError(f"lease_duration_s must be positive seconds, got {lease_duration_s}.")
    if wait_poll_interval_s is not None and wait_poll_interval_s <= 0:
        raise ConfigurationError(
            f"wait_poll_interval_s must be positive seconds, got {wait_poll_interval_s}."
        )
    if on_interrupted is not None and on_interrupted not in ("retry", "ask", "fail"):
        raise ConfigurationError(f'on_interrupted must be "retry", "ask" or "fail", got {on_interrupted!r}.')
    if inline_limit_bytes is not None and inline_limit_bytes < 0:
        raise ConfigurationError(f"inline_limit_bytes must be >= 0, got {inline_limit_bytes}.")
    with _lock:
        if reset:
            _overrides.clear()
        _overrides.update({name: value for name, value in given.items() if value is not None})
    return current_settings()
