"""The server hands resumes to workers: with a live worker on the execution's queue, it runs no flow code."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel

from kitaru_core import Client
from kitaru_core._workers import execution_queue, hand_to_worker, list_workers, live_workers_for
from kitaru_core.errors import ExecutionLockedError


def hand_to_live_worker(
    client: Client, execution_id: str, who: tuple[str, str], *, after_answer: bool = False
) -> bool:
    """Make an execution `queued` for a worker when a live worker serves its queue.

    Args:
        client: The server's client.
        execution_id: The execution to resume.
        who: `(name, kind)` of who asked, for the audit trail.
        after_answer: Its last pending wait was just answered: a worker takes such an execution on
            its own, so one that a live runner holds already (that worker, usually) counts as handed.

    Returns:
        Whether it was handed to the workers (`False`: no live worker serves its queue; the
        caller resumes it in a background process as before).

    Raises:
        ExecutionNotFoundError, ExecutionError, ExecutionCancelledError, ExecutionLockedError,
        ConfigurationError: As `Client.resume_in_background` (see `hand_to_worker`).
    """
    workers = live_workers_for(client.store, execution_queue(client.store, execution_id))
    if not workers:
        return False
    try:
        hand_to_worker(client.store, execution_id)
    except ExecutionLockedError:
        if not after_answer:
            raise
    client.store.record_audit(
        execution_id, "resume", who, details={"queued_for_worker": True, "workers": len(workers)}
    )
    return True


class WorkerView(BaseModel):
    """One worker process, as `kitaru-adapters workers list` shows it.

    Attributes:
        id: The worker's id.
        state: `alive`, `stopped` (shut down in order) or `gone` (silent for three heartbeats, or
            its process ended).
        host: The host name it runs on.
        pid: Its process id.
        queues: The queues it takes from, `NAME` or `NAME:LIMIT`.
        concurrency: Executions it runs at once.
        running: The executions it runs now.
        heartbeat_at: Its last heartbeat.
        heartbeat_age_s: Seconds since its last heartbeat.
        started_at: When it started.
        stopped_at: When it shut down, if it did.
    """

    id: str
    state: Literal["alive", "stopped", "gone"]
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    running: list[str]
    heartbeat_at: datetime
    heartbeat_age_s: float
    started_at: datetime
    stopped_at: datetime | None


def worker_views(client: Client) -> list[WorkerView]:
    """Every worker the store has seen, the most recently started first."""
    now = time.time()
    return [
        WorkerView(
            id=record.id,
            state=record.state(now),
            host=record.host,
            pid=record.pid,
            queues=record.queues,
            concurrency=record.concurrency,
            running=record.running,
            heartbeat_at=datetime.fromtimestamp(record.heartbeat_at_epoch_s, UTC),
            heartbeat_age_s=max(0.0, now - record.heartbeat_at_epoch_s),
            started_at=datetime.fromtimestamp(record.started_at_epoch_s, UTC),
            stopped_at=None
            if record.stopped_at_epoch_s is None
            else datetime.fromtimestamp(record.stopped_at_epoch_s, UTC),
        )
        for record in list_workers(client.store)
    ]
