"""Where a model or tool call happens in a graph run: its logical position, never task or checkpoint ids."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from langgraph.config import get_config

from kitaru_core import Budget, RetryPolicy, current_execution
from kitaru_core.adapters import ApprovalPolicy, approval_timeout_s

NS_SEPARATOR = "|"
TASK_ID_SEPARATOR = ":"
_PATH_NAMES = {"__pregel_pull": "pull", "__pregel_push": "push"}


@dataclass(frozen=True)
class DurableOptions:
    """How `durable(graph)` treats a graph's runs.

    Attributes:
        name: Execution name, `langgraph:<name>` (default: the graph's `name`).
        policy: Which tool calls need approval.
        approval_timeout_s: Seconds an approval wait polls the store before the execution suspends
            (used when the graph has no checkpointer).
        model_retries: How a failed chat model call is retried inside its checkpoint call; `None`:
            `kitaru_core.model_retries(...)` around the run, else `ModelRetryPolicy()`.
        budget: Limits on what the execution's chat model calls may spend; `None`: the enclosing
            execution's (a `@flow(budget=...)`), else none.
    """

    name: str
    policy: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    approval_timeout_s: float | None = None
    model_retries: RetryPolicy | None = None
    budget: Budget | None = None

    @classmethod
    def build(
        cls,
        name: str,
        approve: Any,
        approval_timeout: timedelta | float | None,
        model_retries: RetryPolicy | None = None,
        budget: Budget | None = None,
    ) -> DurableOptions:
        """Options from `durable()`'s keyword arguments."""
        timeout_s = approval_timeout_s(approval_timeout)
        return cls(
            name=name,
            policy=ApprovalPolicy(approve),
            approval_timeout_s=timeout_s,
            model_retries=model_retries,
            budget=Budget.checked(budget, "durable()"),
        )


class GraphRun:
    """One top-level call (`invoke`, `stream`...) of a durable graph: its options and occurrence counters.

    Args:
        options: The graph's options.
        has_checkpointer: Whether the graph persists its state (approval gates then use `interrupt()`).
    """

    def __init__(self, options: DurableOptions, *, has_checkpointer: bool) -> None:
        self.options = options
        self.has_checkpointer = has_checkpointer
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str], int] = {}

    def occurrence(self, task: str, base: str) -> int:
        """How many calls with the discriminator `base` this task made before (0 for the first)."""
        with self._lock:
            count = self._counters.get((task, base), 0)
            self._counters[(task, base)] = count + 1
        return count


_active_run: contextvars.ContextVar[GraphRun | None] = contextvars.ContextVar(
    "kitaru_langgraph_run", default=None
)


def active_run() -> GraphRun | None:
    """The durable graph run of this context, or `None`."""
    return _active_run.get()


def enter_run(run: GraphRun) -> contextvars.Token[GraphRun | None]:
    """Make `run` the active graph run of this context."""
    return _active_run.set(run)


def leave_run(token: contextvars.Token[GraphRun | None]) -> None:
    """Restore the graph run active before `enter_run`."""
    _active_run.reset(token)


def strip_task_ids(namespace: str) -> str:
    """`parent:<task id>|child:<task id>` becomes `parent|child`: stable across runs and lost writes."""
    if not namespace:
        return ""
    return NS_SEPARATOR.join(part.split(TASK_ID_SEPARATOR, 1)[0] for part in namespace.split(NS_SEPARATOR))


def _path_text(path: Any) -> str:
    if not isinstance(path, list | tuple):
        return ""
    parts: list[str] = []
    for item in path:  # pyright: ignore[reportUnknownVariableType]
        if isinstance(item, list | tuple):
            parts.append("(" + _path_text(item) + ")")  # pyright: ignore[reportUnknownArgumentType]
        else:
            parts.append(_PATH_NAMES.get(str(item), str(item)))  # pyright: ignore[reportUnknownArgumentType]
    return ".".join(parts)


@dataclass(frozen=True)
class Position:
    """The logical position of a call inside a graph run.

    Attributes:
        run: The durable graph run.
        namespace: Graph namespace without task ids (`""` for the root graph, `node|subnode`...).
        step: The superstep number in that namespace.
        path: The task's path (node name, or `push.<index>` for `Send` tasks).
        task: The task's identity within this process (namespace with task ids): counts occurrences.
        node: The node's name.
    """

    run: GraphRun
    namespace: str
    step: int | None
    path: str
    task: str
    node: str | None

    @property
    def where(self) -> str:
        """`<namespace>@<step>`: the namespace (`root` for the top graph) and the superstep."""
        return f"{self.namespace or 'root'}@{self.step if self.step is not None else '-'}"

    def discriminator(self, request_digest: str | None) -> str:
        """`<namespace>@<step>/<path>/<digest prefix>.<occurrence>` for a request with this digest."""
        base = f"{self.where}/{self.path or '-'}/{request_digest[:16] if request_digest else 'nofp'}"
        return f"{base}.{self.run.occurrence(self.task, base)}"


def current_position() -> Position | None:
    """The position of the call being made now, or `None` outside a durable graph run's execution."""
    run = _active_run.get()
    if run is None or current_execution() is None:
        return None
    try:
        config = get_config()
    except RuntimeError:  # not inside a runnable: a model called directly in the durable run's thread
        return Position(run, "", None, "", "", None)
    metadata: Mapping[str, Any] = config.get("metadata") or {}
    configurable: Mapping[str, Any] = config.get("configurable") or {}
    namespace = str(configurable.get("checkpoint_ns") or metadata.get("langgraph_checkpoint_ns") or "")
    step = metadata.get("langgraph_step")
    node = metadata.get("langgraph_node")
    return Position(
        run=run,
        namespace=strip_task_ids(namespace),
        step=step if isinstance(step, int) else None,
        path=_path_text(metadata.get("langgraph_path")),
        task=namespace + "/" + str(configurable.get("__pregel_task_id") or ""),
        node=node if isinstance(node, str) else None,
    )
