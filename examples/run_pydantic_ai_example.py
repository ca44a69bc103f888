"""Run an unchanged PydanticAI example module durably, against an OpenAI-compatible server.

    python examples/run_pydantic_ai_example.py pydantic_ai_examples.roulette_wheel \
        --base-url http://127.0.0.1:8000/v1 --execution-id roulette-demo

The example module runs as `__main__`, exactly as its author wrote it. Two things are injected
from outside, as a user would when trying someone else's example:
- the model: `pydantic_ai.models.infer_model` returns a chat-completions model pointed at
  `--base-url` (the examples name hosted models such as `openai:gpt-5.2`);
- the one wrapping line: each `Agent` the module constructs is passed to
  `kitaru_adapters.pydantic_ai.durable(agent)` right after construction.
The whole module runs inside `execution(--execution-id)`, so running the same command again
after a crash resumes it: completed model requests and tool calls are served from the store.

`--crash-after K` kills this process with SIGKILL right after the K-th checkpoint call has
been committed (for crash tests).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from _runner_support import after_construction, argument_parser, run_main, run_module_durably


@contextmanager
def injected_model(base_url: str, model_name: str) -> Iterator[None]:
    """Make every model named by a string resolve to a chat-completions model at `base_url`."""
    import openai
    import pydantic_ai.models
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    original = pydantic_ai.models.infer_model

    def infer_model(model: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(model, str) and model != "test":
            client = openai.AsyncOpenAI(base_url=base_url, api_key="scripted", max_retries=0)
            return OpenAIChatModel(model_name, provider=OpenAIProvider(openai_client=client))
        return original(model, *args, **kwargs)

    pydantic_ai.models.infer_model = infer_model
    try:
        yield
    finally:
        pydantic_ai.models.infer_model = original


@contextmanager
def agents_made_durable(approve: Sequence[str] | None) -> Iterator[None]:
    """Apply `durable(agent)` to every Agent constructed inside the block."""
    from pydantic_ai import Agent

    from kitaru_adapters.pydantic_ai import durable

    with after_construction(Agent, lambda agent: durable(agent, approve=list(approve or []))):
        yield


def run_example(
    module: str,
    *,
    base_url: str,
    execution_id: str,
    model_name: str = "gpt-4o-mini",
    approve: Sequence[str] | None = None,
) -> str:
    """Run `module` as `__main__` durably; return the execution id."""
    with injected_model(base_url, model_name), agents_made_durable(approve):
        return run_module_durably(module, execution_id)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argument_parser(__doc__, "e.g. pydantic_ai_examples.roulette_wheel")
    parser.add_argument("--approve", action="append", default=[], help="tool name that needs approval")
    options = parser.parse_args(argv)
    return run_main(
        options,
        lambda: run_example(
            options.module,
            base_url=options.base_url,
            execution_id=options.execution_id,
            model_name=options.model_name,
            approve=options.approve,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
