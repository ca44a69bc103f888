"""A durable run that waits for a tool-call approval; another process answers it over HTTP.

    pip install "kitaru-adapters[server]"
    kitaru-adapters serve                      # terminal 1: prints the API token once
    python examples/webhook_approval.py        # terminal 2: drafts a refund, then waits
    curl ...                                   # terminal 3 (or a webhook): the line it prints

The run asks for approval of the `send_refund` tool call as a durable wait and polls the store
for an answer for up to ten minutes. The answer can come from the dashboard
(http://127.0.0.1:8765/waiting), from `kitaru-adapters executions answer`, or from any system
that can send one HTTP request. If this process is gone by then (closed, crashed, timed out),
the same request with `"resume": true` restarts the run in the background from the store: the
draft is not made again.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

from kitaru_core import checkpoint, flow, request_approval
from kitaru_core.errors import ExecutionWaitingError


@checkpoint
def draft_refund(order: str, amount: int) -> dict[str, object]:
    """Stands in for a model call that drafts the refund (runs once, then served from the store)."""
    return {"order": order, "amount": amount, "reason": "parcel arrived damaged"}


@checkpoint(kind="tool")
def send_refund(order: str, amount: int) -> str:
    """Stands in for the payment API call the approver must allow."""
    return f"refunded ${amount} on order {order}"


@flow
def refund(order: str, amount: int) -> str:
    """Draft a refund, wait for a person or a webhook to approve sending it, then send it."""
    draft = draft_refund(order, amount)
    decision = request_approval(
        "send_refund",
        {"order": order, "amount": amount, "reason": draft["reason"]},
        call_id=f"refund-{order}",
        timeout=timedelta(seconds=float(os.environ.get("APPROVAL_TIMEOUT_S", "600"))),
    )
    if not decision.approved:
        return f"refund of {order} denied: {decision.message}"
    return send_refund(order, amount)


def main() -> int:
    order = sys.argv[1] if len(sys.argv) > 1 else "A-1001"
    port = os.environ.get("KITARU_SERVER_PORT", "8765")
    execution_id = f"refund-{order}"
    wait_name = f"approve:send_refund:refund-{order}"
    token = "$(cat .kitaru/server-token)" if Path(".kitaru/server-token").exists() else "$TOKEN"
    print(f"Execution {execution_id} waits for approval. Approve it from another terminal with:\n")
    print(
        f"curl -X POST -H \"Authorization: Bearer {token}\" -H 'Content-Type: application/json' "
        f'-d \'{{"value": {{"approved": true}}, "resume": true}}\' '
        f"http://127.0.0.1:{port}/api/executions/{execution_id}/waits/{wait_name}/answer\n",
        flush=True,
    )
    try:
        print(refund.run(order, 25, execution_id=execution_id))
    except ExecutionWaitingError as waiting:
        print(waiting)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
