"""Retries of failed executions by workers: `@flow(retry=ExecutionRetryPolicy(...))`.

A checkpoint's `retry=` runs one failing call again inside a run. A flow's `retry=` runs the whole
execution again, later, in a worker: when an execution a worker runs fails, the worker's process
asks the flow's policy whether and when to try again, records the attempt and the time it is due,
and a worker serving the execution's queue takes it at that time. The retry is a resume: completed
checkpoint calls are served from the store, so only the work from the failed call on runs again.
"""

from __future__ import annotations

from dataclasses import dataclass

from kitaru_core._model_retries import ModelRetryPolicy


@dataclass(frozen=True)
class ExecutionRetryPolicy(ModelRetryPolicy):
    """Retry a failed execution in a worker after a backoff, when the class of its error is transient.

    The error's class is found as for model calls (`classify_model_error`, through the chain of
    causes): a rate limit (HTTP 429; waiting what the provider's `Retry-After` asks when it says),
    a timeout, a connection error or a server error (5xx) is retried after `initial_delay_s`,
    doubling up to `max_delay_s`, half of each delay random. An authentication error (401, 403),
    any other 4xx error and an error no class fits (a bug: `KeyError`, `ValueError`...) fail for
    good, unless the policy says so: add classes to `retry_classes`, or exception types to
    `also_retry`. A plain `RetryPolicy(max_attempts=3, retry_on=(Exception,))` retries every error.

    Attributes:
        max_attempts: Attempts of the execution including the first (1 = no retry). Default 3.
        initial_delay_s: Seconds before the second attempt. Default 5.0.
        backoff_factor: Each further delay is the previous one times this. Default 2.0.
        max_delay_s: Upper bound of one delay, and of a `Retry-After` that is honoured. Default 300.0.
        jitter: Fraction of each backoff delay that is random. Default 0.5.
        max_elapsed_s: Give up when the next retry would start later than this many seconds after
            the execution was created; `None` (the default): no time budget.
        retry_classes: The error classes that are retried. Default: `rate_limit`, `timeout`,
            `connection` and `server`.
        also_retry: Exception types retried whatever their class (e.g. your own `FlakyError`).

    Example:
        ```python
        from kitaru_core import ExecutionRetryPolicy, flow


        @flow(retry=ExecutionRetryPolicy(max_attempts=4, initial_delay_s=30.0))
        def nightly_report(day: str) -> str:
            return f"report of {day}"
        ```
    """

    max_attempts: int = 3
    initial_delay_s: float = 5.0
    max_delay_s: float = 300.0
    jitter: float = 0.5
    max_elapsed_s: float | None = None
    also_retry: tuple[type[BaseException], ...] = ()

    def should_retry(self, error: BaseException, failed_attempt: int) -> bool:
        """Whether attempt `failed_attempt + 1` should run after `error` (by its class, or `also_retry`)."""
        if failed_attempt >= self.max_attempts:
            return False
        if self.also_retry and isinstance(error, self.also_retry):
            return True
        return super().should_retry(error, failed_attempt)
