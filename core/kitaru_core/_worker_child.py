"""The child process of a worker: runs one claimed execution, then exits.

`python -m kitaru_core._worker_child EXECUTION_ID CLAIM_OWNER [MODULE ...]` imports the modules,
takes the execution's lease over from the worker's claim (`_leases.lease_handoff`) and resumes it
like `kitaru-adapters executions resume` does (`Client.resume`). SIGTERM or SIGINT make the run stop
before its next checkpoint body and release its lease with the execution `queued`.

`python -m kitaru_core._worker_child --warm [MODULE ...]` is a prestarted child: it imports the
modules, opens the store and then waits for one line on its standard input, a JSON array
`[EXECUTION_ID, CLAIM_OWNER]`, and runs that execution as above (end of input: it exits, code 4).
A worker keeps one such child ready, so taking work costs no interpreter start; each execution
still runs in a process of its own.

A run that fails is retried later by a worker when its flow asks for it (`@flow(retry=...)`,
`_workers.schedule_retry`).

Exit codes: 0 the run ended (completed, stopped at a wait, or stopped and released); 1 the flow
failed (recorded in the store) or the execution could not be run; 4 stopped before it started;
5 the store could not be reached before the run started (the worker queues the execution again).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import signal
import sys
from typing import Any

EXIT_FAILED = 1
EXIT_NOT_STARTED = 4
EXIT_STORE_UNAVAILABLE = 5

logger = logging.getLogger(__name__)


def main(argv: list[str]) -> int:
    """Run the claimed execution named by `argv` (`EXECUTION_ID CLAIM_OWNER [MODULE ...]`); return the exit code."""
    warm = argv[:1] == ["--warm"]
    if len(argv) < 2 and not warm:
        print(
            "usage: python -m kitaru_core._worker_child EXECUTION_ID CLAIM_OWNER [MODULE ...]\n"
            "       python -m kitaru_core._worker_child --warm [MODULE ...]   (then [ID, OWNER] on stdin)",
            file=sys.stderr,
        )
        return 2
    if warm:
        execution_id, owner, modules = "", "", argv[1:]
    else:
        execution_id, owner, *modules = argv
    from kitaru_core import _leases, _signals

    def stop(_signal_number: int, _frame: Any) -> None:
        _signals.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for module in modules:
            importlib.import_module(module)
        from kitaru_core._client import Client
        from kitaru_core.errors import StoreError

        client: Client | None = None
        if warm:
            try:
                client = Client()  # opened before the work comes: the import and first connection are paid
            except StoreError:
                client = None  # the store is down now: try again once there is work
            line = sys.stdin.readline()
            if not line.strip():
                return EXIT_NOT_STARTED  # the worker closed our input: it stops, or it died
            execution_id, owner = (str(part) for part in json.loads(line))
        if _signals.stop_requested():
            return EXIT_NOT_STARTED
        _leases.lease_handoff = owner
        if client is None:
            try:
                client = Client()
            except StoreError:
                logger.exception("kitaru worker: the store could not be reached to run execution %s", execution_id)
                return EXIT_STORE_UNAVAILABLE
        try:
            client.resume(execution_id, audit=False)
        except Exception as error:
            from kitaru_core.errors import ExecutionWaitingError

            if not isinstance(error, ExecutionWaitingError) and _signals.find_signal(error) is None:
                _schedule_retry(client, execution_id, error)
            raise
    except BaseException as error:
        from kitaru_core.errors import ExecutionWaitingError

        if isinstance(error, ExecutionWaitingError) or isinstance(
            _signals.find_signal(error), _signals.StopRun
        ):
            return 0
        logger.exception("kitaru worker: execution %s failed", execution_id)
        return EXIT_FAILED
    return 0


def _schedule_retry(client: Any, execution_id: str, error: Exception) -> None:
    """Ask the flow's `retry` policy whether a worker retries the failed execution, and when."""
    from kitaru_core._workers import schedule_retry
    from kitaru_core.errors import KitaruError

    try:
        policy = getattr(client.load_flow(execution_id), "retry", None)
        schedule_retry(client.store, execution_id, error, policy)
    except (KitaruError, OSError):  # the failure stays recorded; only its retry is lost
        logger.exception("kitaru worker: could not schedule a retry of the failed execution %s", execution_id)


def _exit_quickly(code: int) -> None:
    """Exit without the interpreter's teardown, which can take a second on a busy machine.

    The run's outcome is committed by now, and the worker's slot frees when this process ends. The
    exit handlers still run (logging, tracing exporters); with other threads alive it exits normally,
    so they are joined as usual.
    """
    import atexit
    import os
    import threading

    if threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()  # pyright: ignore[reportPrivateUsage]
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # as the worker's own log
    _exit_quickly(main(sys.argv[1:]))
