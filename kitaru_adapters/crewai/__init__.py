"""Durable CrewAI crews and flows: `crew = durable(crew)`, or `@durable` on a `@CrewBase` project.

Every LLM call (each agent's `llm` and `function_calling_llm`, the crew's `manager_llm` and
`planning_llm`) and every tool call of a kickoff becomes a `kitaru_core` checkpoint call; tools
that need approval and `Task(human_input=True)` become durable waits. Needs the `crewai` extra:
`pip install "kitaru-adapters[crewai]"`.
"""

try:
    import crewai  # noqa: F401  # pyright: ignore[reportUnusedImport]
    import genai_prices  # noqa: F401  # pyright: ignore[reportUnusedImport]
except ImportError as error:  # pragma: no cover - exercised only without the extra
    from kitaru_core.errors import MissingDependencyError

    raise MissingDependencyError("crewai", "crewai") from error

from kitaru_adapters.crewai._crew import durable, is_durable, prepare_crew, undurable
from kitaru_adapters.crewai._llm import DurableLLM, llm_request_identity
from kitaru_adapters.crewai._tools import (
    DurableHumanInputProvider,
    DurableOptions,
    DurableTool,
    tool_call_discriminator,
)

__all__ = [
    "DurableHumanInputProvider",
    "DurableLLM",
    "DurableOptions",
    "DurableTool",
    "durable",
    "is_durable",
    "llm_request_identity",
    "prepare_crew",
    "tool_call_discriminator",
    "undurable",
]
