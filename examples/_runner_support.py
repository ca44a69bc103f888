"""What the example runners share: the command line, the one wrapping line, running a module durably.

`run_pydantic_ai_example.py` and `run_openai_agents_example.py` each run an unchanged example
module of a framework as `__main__`, inside `kitaru_core.execution(--execution-id)`, with every
agent the module constructs made durable. This module holds the parts that do not depend on the
framework. It is imported by the runners as a sibling module (`examples/` is on `sys.path` when a
runner runs as a script).
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import wrapt

import kitaru_core
from kitaru_core.cli import print_timeline

EXIT_WAITING = 3
"""Exit code of a runner whose execution stopped at a wait (as `kitaru-adapters executions resume`)."""


@contextmanager
def after_construction(cls: type[Any], hook: Callable[[Any], Any]) -> Iterator[None]:
    """Call `hook(instance)` right after each `cls(...)` inside the block returns from `__init__`.

    This is how a runner applies the one wrapping line (`durable(agent)`) to the agents an
    unchanged example module constructs.

    Args:
        cls: The class whose instances are handed to `hook` (subclasses included).
        hook: Called with each new instance once its `__init__` finished.

    Yields:
        Nothing; `cls.__init__` is restored when the block ends.
    """
    original_init = cls.__init__

    @wrapt.decorator
    def after_init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        hook(instance)
        return result

    cls.__init__ = after_init(original_init)  # type: ignore[method-assign]
    try:
        yield
    finally:
        cls.__init__ = original_init  # type: ignore[method-assign]


def crash_after(calls: int) -> None:
    """SIGKILL this process right after the `calls`-th checkpoint call is committed.

    Args:
        calls: How many checkpoint calls to let commit (served calls do not count).
    """
    from kitaru_core import _store

    committed = 0

    @wrapt.decorator
    def count(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
        nonlocal committed
        result = wrapped(*args, **kwargs)
        if result >= 0:
            committed += 1
            if committed == calls:
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        return result

    _store.Store.record_call = count(_store.Store.record_call)  # type: ignore[method-assign]


def run_module_durably(module: str, execution_id: str) -> str:
    """Run `module` as `__main__` inside `execution(execution_id)`; return the execution id.

    Args:
        module: An importable module name, e.g. `examples.customer_service.main`.
        execution_id: The execution id; running again with the same id resumes the execution.

    Returns:
        The execution id.

    Raises:
        ExecutionWaitingError: The module stopped at a wait (answer it, then run again).
    """
    with kitaru_core.execution(execution_id, name=module) as context:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    return context.execution_id


def argument_parser(description: str | None, module_help: str) -> argparse.ArgumentParser:
    """The options every runner takes: module, server, execution id, model name, crash, timeline.

    Args:
        description: The runner's description (its module docstring).
        module_help: Help text of the positional `module` argument.

    Returns:
        A parser the runner may extend with its own options.
    """
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("module", help=module_help)
    parser.add_argument("--base-url", required=True, help="OpenAI-compatible base URL (ends in /v1)")
    parser.add_argument("--execution-id", required=True, help="execution id; the same id resumes")
    parser.add_argument("--model-name", default="gpt-4o-mini", help="model name sent to the server")
    parser.add_argument("--crash-after", type=int, default=0, help="SIGKILL after this many committed calls")
    parser.add_argument("--timeline", action="store_true", help="print the execution's timeline at the end")
    return parser


def run_main(options: argparse.Namespace, run: Callable[[], object]) -> int:
    """Run a runner's work with the common options applied; return the process exit code.

    Args:
        options: Parsed options from `argument_parser` (`crash_after`, `timeline`, `execution_id`).
        run: Runs the example durably.

    Returns:
        0 when the execution completed, `EXIT_WAITING` (3) when it stopped at a wait (the
        message, with the wait's name, goes to stderr).
    """
    if options.crash_after:
        crash_after(options.crash_after)
    try:
        run()
    except kitaru_core.errors.ExecutionWaitingError as waiting:
        print(waiting, file=sys.stderr)
        return EXIT_WAITING
    if options.timeline:
        print_timeline(kitaru_core.Client().get_execution(options.execution_id))
    return 0
