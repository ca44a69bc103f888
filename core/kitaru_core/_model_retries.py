"""Retries of model calls by error class: one policy the adapters share.

A model call that fails is retried inside its checkpoint call (the call's `attempts` and its
`retries` details record each one) when its error is transient: a rate limit (HTTP 429, waiting as
long as the provider's `Retry-After` asks), a timeout, a connection error or a server error (5xx).
An authentication error (401, 403) and any other 4xx error fail at once: sending the same request
again cannot succeed.

Errors are recognised by duck typing, so no provider SDK or framework is imported: the `openai`
SDK's exceptions (`RateLimitError`, `APITimeoutError`, `APIConnectionError`, `InternalServerError`,
`AuthenticationError`, any `APIStatusError` by its `status_code`), `httpx` errors (`status_code` or
`response.status_code`, `response.headers`), and anything that wraps one of them as its cause
(PydanticAI's `ModelHTTPError`, LiteLLM's and CrewAI's errors, LangChain's wrappers).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from kitaru_core._checkpoint_calls import RetryPolicy

ModelErrorClass = Literal["rate_limit", "timeout", "connection", "server", "authentication", "client"]
"""The class of a failed model call: `rate_limit` (429), `timeout` (408 or a client-side timeout),
`connection` (the request did not get an answer), `server` (5xx), `authentication` (401, 403) and
`client` (any other 4xx: a bad request the provider refuses)."""

RETRIED_MODEL_ERRORS: frozenset[ModelErrorClass] = frozenset(
    {"rate_limit", "timeout", "connection", "server"}
)
"""The error classes `ModelRetryPolicy` retries by default."""

_TIMEOUT_NAMES = frozenset(
    {"APITimeoutError", "TimeoutException", "ReadTimeout", "WriteTimeout", "ConnectTimeout", "PoolTimeout"}
)
_CONNECTION_NAMES = frozenset(
    {"APIConnectionError", "ConnectError", "NetworkError", "RemoteProtocolError", "ReadError", "WriteError"}
)
_NAMED_CLASSES: dict[str, ModelErrorClass] = {
    "RateLimitError": "rate_limit",
    "AuthenticationError": "authentication",
    "PermissionDeniedError": "authentication",
    "InternalServerError": "server",
    "ServiceUnavailableError": "server",
}
_CHAIN_LIMIT = 8


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error, then what it was raised from or during, a few links deep."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(seen) < _CHAIN_LIMIT:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _status_code(error: BaseException) -> int | None:
    for candidate in (
        getattr(error, "status_code", None),
        getattr(getattr(error, "response", None), "status_code", None),
    ):
        if isinstance(candidate, int) and not isinstance(candidate, bool) and 100 <= candidate <= 599:
            return candidate
    return None


def _class_of_status(status_code: int) -> ModelErrorClass | None:
    if status_code == 429:
        return "rate_limit"
    if status_code == 408:
        return "timeout"
    if status_code in (401, 403):
        return "authentication"
    if status_code >= 500:
        return "server"
    if status_code >= 400:
        return "client"
    return None


def _class_of_type(error: BaseException) -> ModelErrorClass | None:
    names = [cls.__name__ for cls in type(error).__mro__]
    for name in names:  # most specific first: openai's APITimeoutError subclasses APIConnectionError
        if name in _NAMED_CLASSES:
            return _NAMED_CLASSES[name]
        if name in _TIMEOUT_NAMES or name == "TimeoutError":
            return "timeout"
        if name in _CONNECTION_NAMES or name == "ConnectionError":
            return "connection"
    return None


def classify_model_error(error: BaseException) -> ModelErrorClass | None:
    """The class of a failed model call's error, or `None` when it is not a provider error.

    An HTTP status found on the error or on an error it was raised from decides first (429
    `rate_limit`, 408 `timeout`, 401/403 `authentication`, 5xx `server`, other 4xx `client`); then
    the exception's type names (`openai`, `httpx`, LiteLLM and the builtins `TimeoutError` and
    `ConnectionError`).

    Args:
        error: What the model call raised.

    Returns:
        The error class, or `None` (such errors are not retried by `ModelRetryPolicy`).
    """
    for link in _causes(error):
        status_code = _status_code(link)
        if status_code is not None:
            found = _class_of_status(status_code)
            if found is not None:
                return found
        found = _class_of_type(link)
        if found is not None:
            return found
    return None


def _headers(error: BaseException) -> Any:
    headers = getattr(getattr(error, "response", None), "headers", None)
    return headers if headers is not None else getattr(error, "headers", None)


def _header(headers: Any, name: str) -> str | None:
    getter = getattr(headers, "get", None)
    if getter is None:
        return None
    for spelling in (name, name.title(), name.upper()):  # plain dicts are case-sensitive
        value = getter(spelling)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def parse_retry_after_s(value: str, *, now_epoch_s: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header value: delta-seconds or an HTTP date.

    Args:
        value: The header's value, e.g. `"2"`, `"1.5"` or `"Wed, 21 Oct 2026 07:28:00 GMT"`.
        now_epoch_s: The current time for an HTTP date (default: now).

    Returns:
        Seconds (>= 0; a date in the past gives 0), or `None` when the value is neither.
    """
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds == seconds and seconds != float("inf") else None
    import email.utils

    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    now = time.time() if now_epoch_s is None else now_epoch_s
    return max(0.0, moment.timestamp() - now)


def server_forbids_retry(error: BaseException) -> bool:
    """Whether the response behind a failed model call says `x-should-retry: false` (OpenAI's header)."""
    for link in _causes(error):
        headers = _headers(link)
        if headers is not None:
            value = _header(headers, "x-should-retry")
            if value is not None:
                return value.lower() == "false"
    return False


def model_retry_after_s(error: BaseException) -> float | None:
    """The delay a provider asked for in a failed model call's response, in seconds, or `None`.

    Reads `retry-after-ms` (OpenAI) and `Retry-After` (seconds or an HTTP date) from the response
    headers of the error or of an error it was raised from, and a numeric `retry_after_s` or
    `retry_after` attribute.
    """
    for link in _causes(error):
        for attribute in ("retry_after_s", "retry_after"):
            value = getattr(link, attribute, None)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                return float(value)
        headers = _headers(link)
        if headers is None:
            continue
        milliseconds = _header(headers, "retry-after-ms")
        if milliseconds is not None:
            try:
                value = float(milliseconds)
            except ValueError:
                value = -1.0
            if 0 <= value < float("inf"):
                return value / 1000.0
        seconds = _header(headers, "retry-after")
        if seconds is not None:
            parsed = parse_retry_after_s(seconds)
            if parsed is not None:
                return parsed
    return None


@dataclass(frozen=True)
class ModelRetryPolicy(RetryPolicy):
    """Retry a model call by the class of its error (see `classify_model_error`).

    The defaults: up to 5 attempts within 300 seconds; backoff 1, 2, 4, 8 seconds (capped at 60)
    with half of each delay random (`jitter=0.5`); a rate limit waits what the provider's
    `Retry-After` (or `retry-after-ms`) asks instead, and is not retried when it asks for longer than
    `max_delay_s`. Errors of a class not in `retry_classes`, errors no class fits (a bug in a
    tool-call parser, a validation error), and responses that say `x-should-retry: false` (as OpenAI
    may) fail at once, recorded with 1 attempt.

    Attributes:
        max_attempts: Total attempts including the first (1 = no retry). Default 5.
        initial_delay_s: Seconds before the second attempt. Default 1.0.
        backoff_factor: Each further delay is the previous one times this. Default 2.0.
        max_delay_s: Upper bound of one delay, and of a `Retry-After` that is honoured. Default 60.0.
        jitter: Fraction of each backoff delay that is random. Default 0.5.
        max_elapsed_s: Time budget of all attempts and delays of one call. Default 300.0.
        retry_classes: The error classes that are retried. Default: `rate_limit`, `timeout`,
            `connection` and `server`.
        classify: Maps an error to its class; default `classify_model_error`. Wrap it to teach the
            policy a provider's own exceptions.

    Example:
        ```python
        from kitaru_core import ModelRetryPolicy

        patient = ModelRetryPolicy(max_attempts=8, max_elapsed_s=600.0)
        no_retries = ModelRetryPolicy(max_attempts=1)
        ```
    """

    max_attempts: int = 5
    jitter: float = 0.5
    max_elapsed_s: float | None = 300.0
    retry_classes: frozenset[ModelErrorClass] = RETRIED_MODEL_ERRORS
    classify: Callable[[BaseException], ModelErrorClass | None] = field(default=classify_model_error)

    def should_retry(self, error: BaseException, failed_attempt: int) -> bool:
        """Whether attempt `failed_attempt + 1` should run after `error` (by its class)."""
        return (
            failed_attempt < self.max_attempts
            and self.classify(error) in self.retry_classes
            and not server_forbids_retry(error)
        )

    def server_delay_s(self, error: BaseException) -> float | None:
        """The delay the provider asked for (`Retry-After`), in seconds, or `None`."""
        if self.retry_after_s is not None:
            return self.retry_after_s(error)
        return model_retry_after_s(error)

    def describe(self, error: BaseException) -> str | None:
        """The error's class and type, e.g. `rate_limit (RateLimitError)`."""
        return f"{self.classify(error) or 'unclassified'} ({type(error).__name__})"

    def not_retried_note(self, error: BaseException) -> str | None:
        """Say that an authentication or other 4xx error is not retried, and what to check."""
        error_class = self.classify(error)
        if error_class == "authentication":
            return (
                "was not retried: an authentication error (HTTP 401/403) fails the same way again; "
                "check the API key and the model's access."
            )
        if error_class == "client":
            return (
                "was not retried: the provider refused the request (HTTP 4xx); sending it again cannot help."
            )
        return None


DEFAULT_MODEL_RETRIES = ModelRetryPolicy()
"""The policy adapters apply to model calls when neither `durable(...)` nor `model_retries(...)` sets one."""

_current_policy: contextvars.ContextVar[RetryPolicy | None] = contextvars.ContextVar(
    "kitaru_model_retries", default=None
)


@contextmanager
def model_retries(policy: RetryPolicy) -> Generator[RetryPolicy]:
    """Use `policy` for the model calls of every durable agent run inside the block.

    A `durable(..., model_retries=...)` given to an adapter takes precedence. Wrap a flow's body (or
    the call of a flow) in it to configure the flow's model calls in one place.

    Args:
        policy: A `ModelRetryPolicy` (or any `RetryPolicy`).

    Yields:
        The policy.

    Example:
        ```python
        from kitaru_core import ModelRetryPolicy, model_retries

        with model_retries(ModelRetryPolicy(max_attempts=3)):
            pass  # run durable agents here
        ```
    """
    token = _current_policy.set(policy)
    try:
        yield policy
    finally:
        _current_policy.reset(token)


def model_retry_policy(explicit: RetryPolicy | None = None) -> RetryPolicy:
    """The policy for a model call: `explicit` (from `durable(...)`), else `model_retries(...)`, else the default.

    Adapters pass the result as `retry=` of the model call's checkpoint.
    """
    if explicit is not None:
        return explicit
    return _current_policy.get() or DEFAULT_MODEL_RETRIES
