"""Named API tokens of the HTTP server, kept in the store as SHA-256 digests of their secrets."""

from __future__ import annotations

import hashlib
import re
import secrets

from kitaru_core._records import TokenRecord
from kitaru_core._store import Store
from kitaru_core.errors import ConfigurationError

DEFAULT_TOKEN_NAME = "default"
"""The name the audit trail gives the server's own token (`--token`, or the token file)."""
TOKEN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")


def secret_digest(secret: str) -> str:
    """The SHA-256 hex digest a token's secret is stored and looked up as."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_token(store: Store, name: str, *, created_by: str | None) -> str:
    """Make a named token and return its secret (stored only as a digest: show it once).

    Args:
        store: The store the server reads its tokens from.
        name: A name for the audit trail: letters, digits, `.`, `_`, `@`, `-`; at most 100.
        created_by: Who made it.

    Returns:
        The secret, to send as `Authorization: Bearer SECRET` or to sign in to the dashboard.

    Raises:
        ConfigurationError: The name is not allowed.
        StoreError: A token of that name exists.
    """
    if not TOKEN_NAME_PATTERN.match(name):
        raise ConfigurationError(
            f"Token name {name!r} is not allowed: use 1-100 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit."
        )
    if name == DEFAULT_TOKEN_NAME:
        raise ConfigurationError(
            f"{DEFAULT_TOKEN_NAME!r} is the name of the server's own token (--token or the token file): "
            "choose another name."
        )
    secret = "kt_" + secrets.token_urlsafe(32)
    store.create_token(name, secret_digest(secret), created_by=created_by)
    return secret


def list_tokens(store: Store) -> list[TokenRecord]:
    """Every named token, revoked ones included."""
    return store.list_tokens()


def revoke_token(store: Store, name: str) -> None:
    """Revoke a named token; requests carrying it are refused from then on.

    Raises:
        ConfigurationError: No unrevoked token has that name.
    """
    if not store.revoke_token(name):
        raise ConfigurationError(f"No active token is named {name!r}: see `kitaru-adapters tokens list`.")
