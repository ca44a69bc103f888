"""Flows the dashboard's replay test runs, importable as `tests.server.replay_flows` so the server can replay them."""

from __future__ import annotations

from kitaru_core import checkpoint, flow, run_checkpoint

HOSTILE_KEY_NAME = '<script>window.hacked=1</script>"q\''
"""A checkpoint name (part of its call key) that is markup and quotes."""

HOSTILE_OUTPUT = '<img src=x onerror="window.hacked=2">'


@checkpoint
def fetch(topic: str) -> dict[str, object]:
    return {"topic": topic, "facts": 3}


@checkpoint
def summarize(found: dict[str, object]) -> str:
    return f"summary of {found['topic']} ({found['facts']} facts)"


@checkpoint
def publish(summary: str) -> str:
    return f"published: {summary}"


@flow
def pipeline(topic: str) -> str:
    """Three plain checkpoint calls, each fed by the one before."""
    return publish(summarize(fetch(topic)))


@flow
def hostile_pipeline(topic: str) -> str:
    """A call whose key and output are markup."""
    first = run_checkpoint(HOSTILE_KEY_NAME, lambda: HOSTILE_OUTPUT)
    return publish(f"{topic}: {first}")
