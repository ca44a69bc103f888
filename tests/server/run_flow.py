"""Run one of `tests.server.flows` in this process (the tests start it as another process).

Usage: python -m tests.server.run_flow FLOW EXECUTION_ID ARG...   (store from KITARU_STORE_URL)
Exits 0 when the flow completes, 3 when it stops at a wait.
"""

from __future__ import annotations

import sys

from kitaru_core.errors import ExecutionWaitingError
from tests.server import flows


def main() -> int:
    name, execution_id, *arguments = sys.argv[1:]
    flow_object = getattr(flows, name)
    typed = [int(argument) if argument.isdigit() else argument for argument in arguments]
    try:
        print(flow_object.run(*typed, execution_id=execution_id), flush=True)
    except ExecutionWaitingError as waiting:
        print(waiting, flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
