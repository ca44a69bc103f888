"""Durable PydanticAI agents: `agent = durable(Agent(...))`.

Every model request (streamed or not) and every tool call of the agent's runs becomes a
`kitaru_core` checkpoint call; tools that need approval become durable waits. Needs the
`pydantic-ai` extra: `pip install "kitaru-adapters[pydantic-ai]"`.
"""

try:
    import pydantic_ai  # noqa: F401  # pyright: ignore[reportUnusedImport]
except ImportError as error:  # pragma: no cover - exercised only without the extra
    from kitaru_core.errors import MissingDependencyError

    raise MissingDependencyError("pydantic-ai-slim", "pydantic-ai") from error

from kitaru_adapters.pydantic_ai._agent import durable, is_durable, undurable
from kitaru_adapters.pydantic_ai._capability import DurableCapability, model_request_identity

__all__ = ["DurableCapability", "durable", "is_durable", "model_request_identity", "undurable"]
