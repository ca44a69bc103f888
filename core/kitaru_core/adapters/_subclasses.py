"""Durable subclasses of a framework's classes, shared by the adapters that swap an object's class."""

from __future__ import annotations

from typing import Any


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
