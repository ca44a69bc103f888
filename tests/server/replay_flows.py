"""Flows the dashboard's replay test runs, importable as `tests.server.replay_flows` so the server can replay them."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel

from kitaru_core import CallUsage, adapters, checkpoint, flow, run_checkpoint, wait

HOSTILE_KEY_NAME = '<script>window.hacked=1</script>"q\''
"""A checkpoint name (part of its call key) that is markup and quotes."""

HOSTILE_OUTPUT = '<img src=x onerror="window.hacked=2">'

HOSTILE_MODEL_OUTPUT = '</pre><img src=x onerror="window.hacked=5">'
"""A model response stored in an adapter's format (not JSON): shown for reference in the editor."""


class AdapterCodec:
    """Stores a value in an adapter's own format (`json:<framework>.<Type>`), as the adapters' codecs do."""

    def encode(self, value: str) -> tuple[str, bytes]:
        return "json:demo.ModelResponse", value.encode()

    def decode(self, format: str, payload: bytes) -> str:
        return payload.decode()


class DemoOutcomeCodec:
    """Stores outputs as JSON in an adapter's own format and serves replay overrides as adapters do.

    `decode` asks `read_override` first and converts what it gets into what the "agent" sees (plain
    strings here), as `tests/core/test_replay_and_terminal.py`'s `_DemoToolOutcomeCodec` does.
    """

    def encode(self, value: str) -> tuple[str, bytes]:
        return "json:demo.Outcome", json.dumps(value).encode()

    def decode(self, format: str, payload: bytes) -> str:
        override = adapters.read_override(format, payload)
        if isinstance(override, adapters.ToolResultOverride):
            return f"given {json.dumps(override.value)}"
        if isinstance(override, adapters.ModelResponseOverride):
            calls = ", ".join(f"{call.name}({json.dumps(call.arguments)})" for call in override.tool_calls)
            return f"said {json.dumps(override.text)} calling [{calls}]"
        return str(json.loads(payload))


class Plan(BaseModel):
    """The answer of `approved_pipeline`'s wait."""

    tier: Literal["basic", "gold"]
    note: str = ""


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
    """A call whose key and output are markup, then a model call, a tool call and a handoff stored in an
    adapter's format (not JSON)."""
    first = run_checkpoint(HOSTILE_KEY_NAME, lambda: HOSTILE_OUTPUT)
    answer = run_checkpoint(
        "model_request",
        lambda: HOSTILE_MODEL_OUTPUT,
        kind="model",
        codec=AdapterCodec(),
        usage=lambda _: CallUsage(model_name="demo-model", input_tokens=10, output_tokens=5, cost_usd=0.25),
    )
    found = run_checkpoint("tool:lookup", lambda: "found <u>it</u>", kind="tool", codec=AdapterCodec())
    desk = run_checkpoint("handoff:desk", lambda: "desk", kind="handoff", codec=AdapterCodec())  # pyright: ignore[reportArgumentType]
    return publish(f"{topic}: {first} {answer} {found} {desk}")


@flow
def agent_desk(question: str) -> str:
    """An agent's run as an adapter records it: a model request, the tool call it asks for, the answer."""
    codec = DemoOutcomeCodec()
    asked = adapters.run_checkpoint("model_request", lambda: f"look up {question}", kind="model", codec=codec)
    found = adapters.run_checkpoint("tool:lookup", lambda: f"rows for ({asked})", kind="tool", codec=codec)
    return adapters.run_checkpoint(
        "model_request", lambda: f"answer from ({found})", kind="model", codec=codec
    )


@flow
def approved_pipeline(topic: str) -> str:
    """A call, a wait for a plan, then a call that uses the answer."""
    found = fetch(topic)
    plan: Plan = wait("plan", question="Which <i>plan</i>?", schema=Plan)
    return publish(f"{plan.tier} plan for {found['topic']} {plan.note}".strip())
