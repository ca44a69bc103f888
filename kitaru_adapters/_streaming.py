"""Streamed model calls: pass live items on while the checkpoint call that records them runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, TypeVar

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
