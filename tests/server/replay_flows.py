"""Flows the dashboard's replay test runs, importable as `tests.server.replay_flows` so the server can replay them."""

from __future__ import annotations

from kitaru_core import CallUsage, checkpoint, flow, run_checkpoint

HOSTILE_KEY_NAME = '<script>window.hacked=1</script>"q\''
"""A checkpoint name (part of its call key) that is markup and quotes."""

HOSTILE_OUTPUT = '<img src=x onerror="window.hacked=2">'


class AdapterCodec:
    """Stores a value in an adapter's own format (`json:<framework>.<Type>`), as the adapters' codecs do."""

    def encode(self, value: str) -> tuple[str, bytes]:
        return "json:demo.ModelResponse", value.encode()

    def decode(self, format: str, payload: bytes) -> str:
        return payload.decode()


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
    """A call whose key and output are markup, then a model call stored in an adapter's format."""
    first = run_checkpoint(HOSTILE_KEY_NAME, lambda: HOSTILE_OUTPUT)
    answer = run_checkpoint(
        "model_request",
        lambda: "an answer",
        kind="model",
        codec=AdapterCodec(),
        usage=lambda _: CallUsage(model_name="demo-model", input_tokens=10, output_tokens=5, cost_usd=0.25),
    )
    return publish(f"{topic}: {first} {answer}")
