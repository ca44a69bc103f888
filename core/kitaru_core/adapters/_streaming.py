"""Streamed model calls: pass live items on while the checkpoint call that records them runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Generator, Sized
from typing import Any, TypeVar

from kitaru_core._checkpoint_calls import stop_retries_in_call

T = TypeVar("T")


async def relay_while_running(call: asyncio.Future[Any], live: asyncio.Queue[T]) -> AsyncGenerator[T]:
    """Yield what `live` receives until `call` is done and `live` is empty.

    `call` is the checkpoint call that consumes the model's stream, puts each item it may show
    at once on `live`, and commits the whole response; a call served from the store puts
    nothing. Closing this generator early (the consumer stopped listening) cancels `call`, so
    iterate it under `contextlib.aclosing`. The caller takes the outcome from `call.result()`.

    Args:
        call: The running checkpoint call.
        live: Items to pass on while it runs.

    Yields:
        Each item of `live`, in order.
    """
    try:
        while not call.done() or not live.empty():
            next_item = asyncio.ensure_future(live.get())
            await asyncio.wait({next_item, call}, return_when=asyncio.FIRST_COMPLETED)
            if next_item.done():
                yield next_item.result()
            else:
                next_item.cancel()
    finally:
        if not call.done():
            call.cancel()


@contextlib.contextmanager
def final_once_relayed(relayed: Sized) -> Generator[None]:
    """Make a failure of the streamed call final once something of it was passed on.

    Wrap the loop that consumes the model's stream: when it fails after `relayed` got an item
    (the caller already saw part of the reply), the checkpoint call is not retried, since another
    attempt would pass those items on again. A failure before the first item is retried as usual.
    """
    try:
        yield
    except Exception:
        if len(relayed):
            stop_retries_in_call()
        raise
