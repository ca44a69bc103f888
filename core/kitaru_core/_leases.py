"""Leases: this host's identity, the lease clock, whether a holder is alive, and taking the lease."""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import TYPE_CHECKING

from kitaru_core import _config
from kitaru_core._records import ExecutionRecord
from kitaru_core.errors import ExecutionCancelledError, ExecutionLockedError

if TYPE_CHECKING:
    from kitaru_core._store import Store


def _read_first_line(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.readline().strip() or None
    except OSError:
        return None


def _host_id() -> str:
    """This host's identity for leases: Linux boot id + pid namespace, else `host:<host name>`.

    The boot id changes at every boot and differs between machines; the pid namespace tells apart
    containers that share a kernel (and perhaps a host name). Pids are only comparable within one
    host id.
    """
    boot_id = _read_first_line("/proc/sys/kernel/random/boot_id")
    if boot_id is None:
        return f"host:{socket.gethostname()}"
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # e.g. "pid:[4026531836]"
    except OSError:
        namespace = "pid:?"
    return f"boot:{boot_id}/{namespace}"


def process_start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (`/proc/<pid>/stat` field 22), or `None`.

    Together with the pid it names one process for the life of a boot: a reused pid has another
    start time. `None` where `/proc` is unavailable (macOS) or the process is gone.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return int(fields[19])  # fields[0] is field 3 (state), so field 22 is fields[19]
    except (OSError, IndexError, ValueError):
        return None


_HOST = socket.gethostname()
HOST_ID = _host_id()
# Lease bookkeeping uses a clock that never jumps and keeps counting while the process is stopped
# (SIGSTOP) or the machine sleeps: CLOCK_BOOTTIME on Linux, the monotonic clock elsewhere.
_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def lease_clock_s() -> float:
    """Seconds on the clock used for local lease bookkeeping (CLOCK_BOOTTIME, else monotonic)."""
    if _BOOTTIME is not None:
        return time.clock_gettime(_BOOTTIME)
    return time.monotonic()


_active_owners: set[str] = set()
lease_handoff: str | None = None
"""The lease owner token a worker claimed an execution with; its child process takes that lease over."""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in {"Z", "X"}


def holder_is_gone(record: ExecutionRecord) -> bool:
    """Whether the lease holder is known to be gone: same host id, and its process ended or was replaced.

    Only a lease written with a host id equal to this host's can be judged here (pids mean nothing
    across hosts or pid namespaces). The holder is gone if no process has its pid, if the process
    with that pid started at another time (pid reused), or if it is this very process and the run
    that took the lease has ended. This only makes a takeover faster: a lease whose holder is alive
    still expires after its duration.
    """
    pid = record.lease_pid
    if pid is None or record.lease_host_id is None or record.lease_host_id != HOST_ID:
        return False
    expected_start = record.lease_process_start_ticks
    if pid == os.getpid() and expected_start in (None, process_start_ticks(pid)):
        return record.lease_owner not in _active_owners
    if not _process_alive(pid):
        return True
    actual_start = process_start_ticks(pid)
    return expected_start is not None and actual_start is not None and actual_start != expected_start


def lease_is_live(record: ExecutionRecord, now: float | None = None) -> bool:
    """Whether a runner still holds the execution.

    A lease is live while it has not expired (`lease_expires_at_epoch_s` in the future, by this
    host's clock) and its holder is not known to be gone (`holder_is_gone`). Every lease expires
    after its duration, whatever process holds it: a hung or paused runner, or a reused pid, cannot
    block a takeover for longer than one lease duration.
    """
    if record.lease_owner is None or record.status != "running":
        return False
    if holder_is_gone(record):
        return False
    return (record.lease_expires_at_epoch_s or 0) > (time.time() if now is None else now)


def acquire(store: Store, execution_id: str, settings: _config.Settings) -> tuple[ExecutionRecord, str]:
    """Take the execution's lease, or raise if a live runner holds it.

    The lease records who holds it: host name (for people), host id (`HOST_ID`), pid and the
    process's start time, so a holder on this host that is gone (`holder_is_gone`) is taken over at
    once; any other lease only once it has expired.
    """
    owner = uuid.uuid4().hex
    for _ in range(5):
        record = store.get_execution(execution_id)
        if record.status == "cancelled" or record.cancel_requested:
            raise ExecutionCancelledError(execution_id)
        if lease_is_live(record) and (lease_handoff is None or record.lease_owner != lease_handoff):
            holder = f"{record.lease_host}:{record.lease_pid}"
            expires_in = (record.lease_expires_at_epoch_s or 0) - time.time()
            raise ExecutionLockedError(execution_id, holder, max(0.0, expires_in))
        if store.try_acquire_lease(
            execution_id,
            expected_owner=record.lease_owner,
            owner=owner,
            host=_HOST,
            pid=os.getpid(),
            lease_duration_s=settings.lease_duration_s,
            host_id=HOST_ID,
            process_start_ticks=process_start_ticks(os.getpid()),
        ):
            return store.get_execution(execution_id), owner
    record = store.get_execution(execution_id)
    raise ExecutionLockedError(
        execution_id, f"{record.lease_host}:{record.lease_pid}", settings.lease_duration_s
    )


# -- names the workers use (kitaru_core._workers) ------------------------------------------------

HOST = _HOST
"""This host's name, as leases record it."""
active_owners = _active_owners
"""Lease owner tokens this process holds now (a worker adds its claims: `holder_is_gone` reads it)."""
process_alive = _process_alive
