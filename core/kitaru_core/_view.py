"""What user code sees of the running execution: a small frozen view, not the runtime's context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kitaru_core import _context

if TYPE_CHECKING:
    from kitaru_core._context import ExecutionContext


@dataclass(frozen=True, slots=True)
class CurrentExecution:
    """The execution running here, as `current_execution()` and `with execution(...) as run:` give it.

    A snapshot taken when it was asked for: read-only, safe to keep after the execution ended.

    Attributes:
        execution_id: The execution's id (`"ticket-42"`, or a generated one).
        flow_name: What the execution runs (the flow's name, an `execution(name=...)`, an agent's name).
        entry_point: `module:function` of the `@flow` that resumes it from the CLI, or `None`.
        run_number: Which run of the execution this is: 1 for the first, 2 after the first resume, ...
        served_completed: Whether this run entered an execution that had already completed, so every
            checkpoint call is served from the store (an adapter then avoids side effects outside
            checkpoint calls, such as appending to a conversation session again).
    """

    execution_id: str
    flow_name: str
    entry_point: str | None
    run_number: int
    served_completed: bool

    @classmethod
    def of(cls, context: ExecutionContext) -> CurrentExecution:
        """The view of a runtime context (made once per run: nothing it shows changes during a run)."""
        attributes = vars(context)  # kept on the context: adapters ask for it on every call
        view = attributes.get(_VIEW_ATTRIBUTE)
        if not isinstance(view, CurrentExecution):
            view = cls(
                execution_id=context.execution_id,
                flow_name=context.flow_name,
                entry_point=context.entry_point,
                run_number=context.run_number,
                served_completed=context.served_completed,
            )
            attributes[_VIEW_ATTRIBUTE] = view
        return view


_VIEW_ATTRIBUTE = "_kitaru_user_view"


def current_execution() -> CurrentExecution | None:
    """The execution running in this context, or `None` outside any execution.

    Returns:
        A frozen view (its `execution_id` names the execution), or `None` outside a `@flow`, an
        `execution(...)` block, a checkpoint call of one, or a run of an agent made durable.
    """
    context = _context.current_execution()
    return None if context is None else CurrentExecution.of(context)
