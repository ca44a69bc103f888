"""Server settings, the API token, and running the server with uvicorn."""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from kitaru_core.errors import ConfigurationError

DEFAULT_TOKEN_FILE = Path(".kitaru", "server-token")
DEFAULT_PORT = 8765
DEFAULT_ALLOWED_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    """How the dashboard and API behave.

    Attributes:
        token: The bearer token every request that changes something must carry
            (`Authorization: Bearer TOKEN`). The dashboard keeps it in a cookie after sign-in.
        open_reads: Serve reads (pages, `GET /api/...`, the event stream) without the token.
            `serve` turns it on only when listening on a loopback address.
        store_url: SQLAlchemy URL of the store; default: the configured one.
        artifacts_url: fsspec URL of the artifact store; default: the configured one.
        poll_interval_s: Seconds between checks of the store for changes made by other processes,
            for each open event stream.
        resume_log_dir: Folder for the output of executions resumed in the background.
        allowed_hosts: Host names (without port) that requests may carry in their `Host` header;
            any other gets 400, reads included (stops DNS rebinding). `*` allows any host.
            `serve` adds the address it listens on.
        max_request_bytes: The largest request body (an answer) the server reads; a larger one gets
            413 before it is read.
        token_name: The name the audit trail gives the token above (named tokens made with
            `kitaru-adapters tokens create` keep theirs).
    """

    token: str
    open_reads: bool = True
    store_url: str | None = None
    artifacts_url: str | None = None
    poll_interval_s: float = 0.25
    resume_log_dir: Path = Path(".kitaru", "logs")
    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    token_name: str = "default"

    def __post_init__(self) -> None:
        if len(self.token) < 16:
            raise ConfigurationError("The server token must be at least 16 characters long.")
        if self.poll_interval_s <= 0:
            raise ConfigurationError(f"poll_interval_s must be positive, got {self.poll_interval_s}.")
        if self.max_request_bytes < 1024:
            raise ConfigurationError(
                f"max_request_bytes must be at least 1024, got {self.max_request_bytes}."
            )
        if not self.allowed_hosts:
            raise ConfigurationError("allowed_hosts is empty: no request could reach the server.")


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or `localhost`) is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_or_create_token(path: Path = DEFAULT_TOKEN_FILE) -> tuple[str, bool]:
    """The token saved in `path`, or a new random one saved there (readable by its owner only).

    Args:
        path: The token file.

    Returns:
        `(token, created)`: `created` is true when the token was generated now.

    Raises:
        ConfigurationError: The file exists but is empty, or cannot be read or written.
    """
    try:
        if path.exists():
            token = path.read_text(encoding="utf-8").strip()
            if not token:
                raise ConfigurationError(f"The token file {path} is empty: delete it to get a new token.")
            return token, False
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")
        return token, True
    except OSError as error:
        raise ConfigurationError(f"Cannot read or create the server token file {path}: {error}") from error


def serve(settings: ServerSettings, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Run the dashboard and API with uvicorn until interrupted.

    Args:
        settings: What to serve and how.
        host: Address to listen on.
        port: TCP port.
    """
    import uvicorn

    from kitaru_core.server._app import create_app

    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        # open event streams never end by themselves: do not let them hold a shutdown (Ctrl+C) for long
        timeout_graceful_shutdown=1,
    )
