"""Durable subclasses of a framework's classes, shared by the adapters that swap an object's class."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def register_durable_subclass(
    base: type[Any], subclass: type[Any], registry: dict[type[Any], type[Any]]
) -> type[Any]:
    """Make `subclass` look like `base` (name, qualified name, module, docstring) and remember it.

    Adapters change an object's class to a subclass that adds durability (`obj.__class__ = ...`);
    dressed like the original, it shows the same in reprs, tracebacks and type names.

    Args:
        base: The framework's class.
        subclass: The durable subclass of `base`.
        registry: The adapter's cache of durable subclasses by base class.

    Returns:
        `subclass`.
    """
    subclass.__name__ = base.__name__
    subclass.__qualname__ = base.__qualname__
    subclass.__module__ = base.__module__
    subclass.__doc__ = base.__doc__
    registry[base] = subclass
    return subclass


class DurableSubclasses:
    """An adapter's durable subclasses of framework classes, each made once, under one lock.

    Adapters that make an object durable by changing its class (`obj.__class__ = subclass`) keep one
    of these: two threads calling `durable()` at once never make two subclasses of one class nor
    swap an object's class twice, and `undurable()` finds the original class again.

    Attributes:
        lock: Held (re-entrant) while a subclass is made or an object's class is swapped; an adapter
            holds it too for its other installs so they never interleave with a swap.

    Example:
        ```python
        from kitaru_core.adapters import DurableSubclasses


        class Agent:
            def run(self) -> str:
                return "plain"


        def make(base: type) -> type:
            class DurableAgent(base):
                def run(self) -> str:
                    return "durable " + super().run()

            return DurableAgent


        subclasses = DurableSubclasses()
        agent = subclasses.make_durable(Agent(), make)
        assert agent.run() == "durable plain" and type(agent).__name__ == "Agent"
        assert subclasses.make_plain(agent).run() == "plain"
        ```
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._by_base: dict[type[Any], type[Any]] = {}

    def subclass(self, base: type[Any], make: Callable[[type[Any]], type[Any]]) -> type[Any]:
        """The durable subclass of `base`, made by `make(base)` the first time (`base` if it is one)."""
        with self.lock:
            if self.is_durable(base):
                return base
            cached = self._by_base.get(base)
            if cached is None:
                cached = register_durable_subclass(base, make(base), self._by_base)
            return cached

    def __len__(self) -> int:
        """How many durable subclasses were made here."""
        return len(self._by_base)

    def is_durable(self, cls: type[Any]) -> bool:
        """Whether `cls` is one of the durable subclasses made here."""
        return cls in self._by_base.values()

    def make_durable(self, obj: T, make: Callable[[type[Any]], type[Any]]) -> T:
        """Give `obj` the durable subclass of its class (once); returns `obj`."""
        with self.lock:
            obj.__class__ = self.subclass(type(obj), make)
        return obj

    def make_plain(self, obj: T) -> T:
        """Give `obj` its original class back if it has a durable one; returns `obj`."""
        with self.lock:
            if self.is_durable(type(obj)):
                obj.__class__ = type(obj).__bases__[0]
        return obj
