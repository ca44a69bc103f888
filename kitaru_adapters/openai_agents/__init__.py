"""Durable OpenAI Agents SDK runs: `agent = durable(Agent(...))`, or `DurableRunner().run(agent, ...)`.

Every model call (streamed or not) and every function tool, MCP tool and handoff of the agent's
runs becomes a `kitaru_core` checkpoint call; tools that need approval become durable waits.
Needs the `openai-agents` extra: `pip install "kitaru-adapters[openai-agents]"`.
"""

try:
    import agents  # noqa: F401  # pyright: ignore[reportUnusedImport]
    import genai_prices  # noqa: F401  # pyright: ignore[reportUnusedImport]
except ImportError as error:  # pragma: no cover - exercised only without the extra
    from kitaru_core.errors import MissingDependencyError

    raise MissingDependencyError("openai-agents", "openai-agents") from error

from kitaru_adapters.openai_agents._model import DurableModel, DurableModelProvider, model_request_identity
from kitaru_adapters.openai_agents._runner import (
    DurableAgentRunner,
    DurableRunner,
    durable,
    is_durable,
    undurable,
)
from kitaru_adapters.openai_agents._tools import DurableOptions, restore_context, snapshot_context

__all__ = [
    "DurableAgentRunner",
    "DurableModel",
    "DurableModelProvider",
    "DurableOptions",
    "DurableRunner",
    "durable",
    "is_durable",
    "model_request_identity",
    "restore_context",
    "snapshot_context",
    "undurable",
]
