"""The server hands resumes to workers: with a live worker on the execution's queue, it runs no flow code."""

from __future__ import annotations

from kitaru_core import Client
from kitaru_core._workers import execution_queue, hand_to_worker, live_workers_for


def hand_to_live_worker(client: Client, execution_id: str, who: tuple[str, str]) -> bool:
    """Make an execution `queued` for a worker when a live worker serves its queue.

    Args:
        client: The server's client.
        execution_id: The execution to resume.
        who: `(name, kind)` of who asked, for the audit trail.

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
    hand_to_worker(client.store, execution_id)
    client.store.record_audit(
        execution_id, "resume", who, details={"queued_for_worker": True, "workers": len(workers)}
    )
    return True
