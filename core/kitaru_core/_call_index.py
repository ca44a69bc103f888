"""The checkpoint calls a run of an execution can serve: a small index in memory, records paged in.

A resume used to hold every stored call's full record (about 750 B per call beyond its value:
38 MB for 50,000 calls). `StoredCalls` keeps, per live call, only its key and its position in an
array of record ids (about 150 B per call); the full records are read from the store in pages of
`PAGE_SIZE` ids, starting at the call asked for, and the cache of records is kept to about two
pages. Calls are served in the order they were recorded, so a resume of N calls reads
`N / PAGE_SIZE` pages: one query per page, by primary key.
"""

from __future__ import annotations

import threading
from array import array
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kitaru_core._records import CallRecord
    from kitaru_core._store import Store

PAGE_SIZE = 500
"""Records read from the store at once when a call not in the cache is asked for."""


class StoredCalls:
    """The live (not superseded) checkpoint call records of one execution, by call key.

    Args:
        store: The store to read records from.
        execution_id: The execution.
        page_size: Records read at once (and about half of what the cache keeps); default `PAGE_SIZE`.

    Thread-safe: a run's calls may be asked for and recorded from several threads.
    """

    def __init__(self, store: Store, execution_id: str, *, page_size: int | None = None) -> None:
        self._store = store
        self._page_size = PAGE_SIZE if page_size is None else page_size
        self._lock = threading.Lock()
        self._ids = array("q")  # record ids in recording order; positions index into it
        self._positions: dict[str, int] = {}  # call key -> position of its live record in `_ids`
        self._cache: OrderedDict[int, CallRecord] = OrderedDict()  # record id -> record, oldest first
        self.max_sequence = 0
        """The highest sequence among the execution's records, superseded ones included."""
        for row_id, call_key, sequence, live in store.load_call_index(execution_id):
            self.max_sequence = max(self.max_sequence, sequence)
            if live:
                self._positions[call_key] = len(self._ids)
                self._ids.append(row_id)

    def __len__(self) -> int:
        return len(self._positions)

    def get(self, call_key: str) -> CallRecord | None:
        """The live record of `call_key`, or `None` (reads a page from the store when not cached)."""
        with self._lock:
            position = self._positions.get(call_key)
            if position is None:
                return None
            row_id = self._ids[position]
            record = self._cache.get(row_id)
            if record is not None:
                return record
            self._trim(self._page_size)
            wanted = list(dict.fromkeys(self._ids[position : position + self._page_size]))
            for loaded in self._store.load_calls_by_id(wanted):
                self._cache[loaded.id] = loaded
            return self._cache.get(row_id)

    def put(self, call_key: str, row_id: int, sequence: int) -> None:
        """Make record `row_id` (just committed by this run, at `sequence`) the live record of `call_key`.

        Only its id is kept: a run seldom asks again for a call it recorded itself (a repeated key),
        and then reads it back from the store like any other. A cached copy of the row is dropped:
        a `started` record that became its outcome in place keeps its id.
        """
        with self._lock:
            self._positions[call_key] = len(self._ids)
            self._ids.append(row_id)
            self._cache.pop(row_id, None)
            if sequence > self.max_sequence:
                self.max_sequence = sequence

    def discard(self, call_key: str, row_id: int) -> None:
        """Forget record `row_id` (deleted from the store) if it is still the live record of `call_key`."""
        with self._lock:
            position = self._positions.get(call_key)
            if position is not None and self._ids[position] == row_id:
                del self._positions[call_key]
                self._cache.pop(row_id, None)

    def _trim(self, room: int) -> None:
        """Drop the oldest cached records until at most `2 * page_size - room` remain (lock held)."""
        cache = self._cache
        for _ in range(len(cache) - max(0, 2 * self._page_size - room)):
            cache.popitem(last=False)
