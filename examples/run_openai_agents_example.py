"""Run an unchanged OpenAI Agents SDK example module durably, against an OpenAI-compatible server.

    EXAMPLES_INTERACTIVE_MODE=auto PYTHONPATH=path/to/openai_agents-0.24.0 \
    python examples/run_openai_agents_example.py examples.customer_service.main \
        --base-url http://127.0.0.1:8000/v1 --execution-id customer-service-demo

The modules are the ones in the `examples/` folder of the openai-agents sdist (the wheel does not
ship them); put the folder holding `examples/` on `PYTHONPATH`, since the examples import
`examples.auto_mode`. The module runs as `__main__`, exactly as its author wrote it, in the
examples' own auto mode (`EXAMPLES_INTERACTIVE_MODE=auto`, set unless already set), so it does not
read stdin. Two things are injected from outside, through the SDK's public settings:
- the model: `agents.set_default_openai_client(AsyncOpenAI(base_url=--base-url, ...))`,
  `agents.set_default_openai_api(--openai-api)` (`chat_completions` by default; `responses`, the
  SDK's own default, also works with the scripted server) and `OPENAI_DEFAULT_MODEL=--model-name`
  (the examples name no model, so their agents use the SDK's default model);
- the one wrapping line: each `Agent` the module constructs is passed to
  `kitaru_adapters.openai_agents.durable(agent, approval_mode=--approval-mode)` right after
  construction.
The whole module runs inside `execution(--execution-id)`, so running the same command again
after a crash resumes it: completed model calls, tool calls and handoffs are served from the
store (a handoff's `on_handoff` callback is not called again; the run context it left is restored).

With `--approval-mode wait` (default) a tool that needs approval stops the run `waiting`: this
runner exits with code 3 and prints the wait's name on stderr; answer it with
`kitaru-adapters executions answer EXECUTION WAIT --approve` (or `--deny --message ...`) and run
the same command again. With `--approval-mode interrupt` the example's own `RunState` flow runs.

`--crash-after K` kills this process with SIGKILL right after the K-th checkpoint call has
been committed (for crash tests).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from _runner_support import after_construction, argument_parser, run_main, run_module_durably


def inject_model(
    base_url: str, model_name: str, openai_api: Literal["chat_completions", "responses"] = "chat_completions"
) -> None:
    """Make the SDK's default model a model named `model_name` at `base_url`, on `openai_api`.

    Only the SDK's public settings are used; they last for this (one-shot) process.
    """
    import agents
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="scripted", max_retries=0)
    agents.set_default_openai_client(client, use_for_tracing=False)
    agents.set_default_openai_api(openai_api)
    os.environ["OPENAI_DEFAULT_MODEL"] = model_name


@contextmanager
def agents_made_durable(approval_mode: Literal["wait", "interrupt"]) -> Iterator[None]:
    """Apply `durable(agent, approval_mode=...)` to every Agent constructed inside the block."""
    from agents import Agent

    from kitaru_adapters.openai_agents import durable

    def make_durable(agent: Any) -> None:
        durable(agent, approval_mode=approval_mode)

    with after_construction(Agent, make_durable):
        yield


def run_example(
    module: str,
    *,
    base_url: str,
    execution_id: str,
    model_name: str = "gpt-4o-mini",
    approval_mode: Literal["wait", "interrupt"] = "wait",
    openai_api: Literal["chat_completions", "responses"] = "chat_completions",
) -> str:
    """Run `module` as `__main__` durably, in the examples' auto mode; return the execution id."""
    os.environ.setdefault("EXAMPLES_INTERACTIVE_MODE", "auto")
    inject_model(base_url, model_name, openai_api)
    with agents_made_durable(approval_mode):
        return run_module_durably(module, execution_id)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argument_parser(__doc__, "e.g. examples.customer_service.main")
    parser.add_argument(
        "--approval-mode",
        choices=["wait", "interrupt"],
        default="wait",
        help="wait: approvals are durable waits; interrupt: the SDK's own RunState flow",
    )
    parser.add_argument(
        "--openai-api",
        choices=["chat_completions", "responses"],
        default="chat_completions",
        help="the API of the SDK's default model (the SDK's own default is responses)",
    )
    options = parser.parse_args(argv)
    return run_main(
        options,
        lambda: run_example(
            options.module,
            base_url=options.base_url,
            execution_id=options.execution_id,
            model_name=options.model_name,
            approval_mode=options.approval_mode,
            openai_api=options.openai_api,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
