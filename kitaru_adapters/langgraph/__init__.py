"""Durable LangGraph graphs: `graph = durable(builder.compile(...))`.

Every chat model call and every tool call made while the graph runs becomes a `kitaru_core`
checkpoint call, committed before it returns to graph code; tool calls can be gated for approval
(LangGraph `interrupt()` with a checkpointer, a durable wait without). `KitaruSaver` keeps the
graph's own checkpoints in a SQLAlchemy database (the same one as the durable store by default).
Needs the `langgraph` extra: `pip install "kitaru-adapters[langgraph]"`.
"""

try:
    import genai_prices  # noqa: F401  # pyright: ignore[reportUnusedImport]
    import langchain_core  # noqa: F401  # pyright: ignore[reportUnusedImport]
    import langgraph  # noqa: F401  # pyright: ignore[reportUnusedImport]
except ImportError as error:  # pragma: no cover - exercised only without the extra
    from kitaru_core.errors import MissingDependencyError

    raise MissingDependencyError("langgraph", "langgraph") from error

from kitaru_adapters.langgraph._graph import durable, is_durable, undurable
from kitaru_adapters.langgraph._position import DurableOptions
from kitaru_adapters.langgraph._saver import KitaruSaver
from kitaru_adapters.langgraph._tools import parse_decision

__all__ = [
    "DurableOptions",
    "KitaruSaver",
    "durable",
    "is_durable",
    "parse_decision",
    "undurable",
]
