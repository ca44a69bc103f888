"""Framework seams: what an adapter relies on in its framework, checked once before it records anything.

An adapter hooks a framework at named places (a method it wraps, a class it subclasses, a private
attribute it reads, a config key the framework puts in a running node's config, a marker the
framework reads off a function). The day a release renames one of them, model or tool calls would
silently stop being checkpoints. Each adapter lists its seams (`kitaru_adapters/<adapter>/_seams.py`)
and its `durable()` calls `check_seams` first: a missing or changed seam raises `AdapterError` naming the
installed release, the supported range and every seam that broke.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import inspect
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

from kitaru_core.errors import AdapterError

OUR_DISTRIBUTION = "kitaru-adapters"


@dataclass(frozen=True)
class Seam:
    """One place in a framework an adapter relies on.

    An attribute seam names a module and a dotted attribute path in it
    (`Seam("crewai.crew", "Crew._prepare_tools", parameters=("agent", "task", "tools"))`); it is
    missing when the module or any attribute on the path is, and changed when it is not callable or
    does not accept every name in `parameters`. A seam that is not an attribute (a config key a
    framework puts in a running node's config, a marker attribute it reads) has a `check` instead:
    a function returning `None` when the seam holds, else what is wrong.

    Attributes:
        module: The module to import (`"langchain_core.tools"`).
        attribute: Dotted attribute path inside `module` (`"BaseTool.run"`); empty for a check seam.
        parameters: Parameter names the callable must accept (by name, in any position).
        check: For a seam that is not an attribute: `() -> problem or None`. Runs after the
            attribute (when one is named) is found.
        label: How the seam is named in errors and docs; default `module:attribute`.
        private: Whether the framework documents it (`False`) or it is internal (`True`); default:
            any name on the path starts with `_`.
        purpose: What the adapter uses it for (one line, shown in the docs).
    """

    module: str
    attribute: str = ""
    parameters: tuple[str, ...] = ()
    check: Callable[[], str | None] | None = None
    label: str = ""
    private: bool | None = None
    purpose: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        """The seam's name in errors and docs."""
        if self.label:
            return self.label
        return f"{self.module}:{self.attribute}" if self.attribute else self.module

    @property
    def is_private(self) -> bool:
        """Whether the seam is internal to the framework (not part of its documented API)."""
        if self.private is not None:
            return self.private
        return any(part.startswith("_") for part in [*self.module.split("."), *self.attribute.split(".")])

    def problem(self) -> str | None:
        """What is wrong with the seam in the installed framework, or `None` when it holds."""
        try:
            target: Any = importlib.import_module(self.module)
        except ImportError as error:
            return f"module {self.module} cannot be imported ({error})"
        path: list[str] = []
        for part in filter(None, self.attribute.split(".")):
            path.append(part)
            try:
                target = getattr(target, part)
            except AttributeError:
                return f"{'.'.join(path)} is missing"
            except Exception as error:  # a lazy attribute that fails to load is as good as missing
                return f"{'.'.join(path)} cannot be read ({type(error).__name__}: {error})"
        if self.parameters:
            problem = _parameters_problem(target, self.parameters)
            if problem is not None:
                return problem
        if self.check is not None:
            try:
                return self.check()
            except Exception as error:  # a seam check that cannot run is a broken seam
                return f"its check failed with {type(error).__name__}: {error}"
        return None


def field_names(owner: Any) -> set[str]:
    """The field names of a dataclass or a pydantic model class."""
    if dataclasses.is_dataclass(owner):
        return {field.name for field in dataclasses.fields(owner)}
    model_fields = getattr(owner, "model_fields", None)
    return set(model_fields) if isinstance(model_fields, dict) else set()


def fields_seam(module: str, owner: str, names: Sequence[str], *, purpose: str = "") -> Seam:
    """A seam: the dataclass or pydantic model `module:owner` has the fields `names`.

    Args:
        module: The module defining the class.
        owner: The class's name in `module`.
        names: The fields the adapter reads or sets.
        purpose: What the adapter uses them for.

    Returns:
        The seam, named `module:owner fields a, b, ...`.
    """

    def check() -> str | None:
        missing = [
            name for name in names if name not in field_names(getattr(importlib.import_module(module), owner))
        ]
        return f"{owner} has no field {', '.join(missing)}" if missing else None

    return Seam(
        module,
        owner,
        check=check,
        label=f"{module}:{owner} fields {', '.join(names)}",
        private=any(name.startswith("_") for name in names),
        purpose=purpose,
    )


def _parameters_problem(target: Any, parameters: Sequence[str]) -> str | None:
    if not callable(target):
        return f"is no longer callable (found {type(target).__qualname__})"
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return None  # a builtin without a signature: nothing to compare
    missing = [name for name in parameters if name not in signature.parameters]
    if missing:
        return f"signature changed to {signature}: no parameter {', '.join(missing)}"
    return None


_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*\(?([^;()]*)\)?\s*(;.*)?$")


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def declared_range(extra: str, distribution: str) -> str:
    """The range of `distribution` our `extra` declares (`">=1.15.15,<1.16"`), from our package metadata.

    Args:
        extra: The kitaru-adapters extra (`"crewai"`).
        distribution: The framework's distribution name (`"crewai"`).

    Returns:
        The version specifiers, or `"unknown"` when kitaru-adapters is not installed as a package.
    """
    try:
        requirements = importlib.metadata.requires(OUR_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
    wanted_extra = re.compile(rf"""extra\s*==\s*["']{re.escape(extra)}["']""")
    for line in requirements:
        match = _REQUIREMENT.match(line)
        if match is None or _normalized(match.group(1)) != _normalized(distribution):
            continue
        if match.group(4) and wanted_extra.search(match.group(4)):
            specifiers = sorted(
                (part.strip() for part in match.group(3).split(",") if part.strip()),
                key=lambda specifier: (not specifier.startswith(">"), specifier),  # lower bound first
            )
            return ",".join(specifiers)
    return "unknown"


def installed_version(distribution: str) -> str:
    """The installed version of `distribution`, or `"not installed"`."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


_checked: set[str] = set()
_checking: set[str] = set()
# Reentrant: a check that builds a framework object (a probe agent) can reach `durable()` again in
# the same thread (a hook that makes every constructed agent durable); that call must not wait for
# the check it is part of.
_lock = threading.RLock()
_generation: list[int] = [0]

ResultT = TypeVar("ResultT")


def per_check(function: Callable[[], ResultT]) -> Callable[[], ResultT]:
    """`function` run at most once per round of seam checks (for a probe that several seams read).

    Args:
        function: A probe: runs something tiny in the framework and returns what it saw.

    Returns:
        A function returning the probe's result, computed again when `check_seams` next checks.
    """
    cached: dict[int, ResultT] = {}

    def probed() -> ResultT:
        generation = _generation[0]
        if generation not in cached:
            cached.clear()
            cached[generation] = function()
        return cached[generation]

    return probed


def check_seams(
    framework_distribution: str,
    supported_range: str | Callable[[], str],
    seams: Sequence[Seam],
    *,
    adapter: str = "",
    related: Mapping[str, str | Callable[[], str]] | None = None,
) -> None:
    """Check every seam an adapter relies on, once per process (thread-safe; a success is cached).

    Args:
        framework_distribution: The framework's distribution name (`"crewai"`).
        supported_range: The range our extra declares (`">=1.15.15,<1.16"`), or a function giving it
            (see `declared_range`; called only when a seam is broken).
        seams: Every seam the adapter relies on.
        adapter: The adapter's module, for the message (`"kitaru_adapters.crewai"`).
        related: Other distributions the seams live in, with their supported ranges
            (`{"langchain-core": ">=1.2.10,<1.9"}`), named in the message too.

    Raises:
        AdapterError: A seam is missing or changed; the message names the framework, the version
            found, the supported range and each broken seam.
    """
    key = framework_distribution
    if key in _checked:
        return
    with _lock:
        if key in _checked or key in _checking:  # done, or this thread is checking it right now
            return
        _checking.add(key)
        try:
            _generation[0] += 1
            broken = [(seam, problem) for seam in seams if (problem := seam.problem()) is not None]
        finally:
            _checking.discard(key)
        if broken:
            raise AdapterError(_message(framework_distribution, supported_range, broken, adapter, related))
        _checked.add(key)


def seam_check(
    extra: str, distribution: str, seams: Sequence[Seam], *, adapter: str, related: Sequence[str] = ()
) -> Callable[[], None]:
    """The `check()` an adapter's `durable()` calls first: `check_seams` with the ranges our extra declares.

    Args:
        extra: The kitaru-adapters extra (`"pydantic-ai"`).
        distribution: The framework's distribution name (`"pydantic-ai-slim"`).
        seams: Every seam the adapter relies on.
        adapter: The adapter's module, for the message (`"kitaru_adapters.pydantic_ai"`).
        related: Other distributions the seams live in, whose ranges `extra` declares too
            (`["langchain-core"]`).

    Returns:
        A function without arguments that checks every seam once per process and raises
        `AdapterError` (naming the versions found and the supported ranges) when one is missing or
        changed.
    """

    def check() -> None:
        check_seams(
            distribution,
            functools.partial(declared_range, extra, distribution),
            seams,
            adapter=adapter,
            related={name: functools.partial(declared_range, extra, name) for name in related} or None,
        )

    check.__doc__ = f"Check every seam {adapter} relies on, once per process (see `seam_check`)."
    return check


def _supported(name: str, span: str) -> str:
    """`crewai>=1.15.15,<1.16`; a range we cannot read is said in words, not run into the name."""
    return f"{name}{span}" if span and span[0] in "<>=!~" else f"{name} {span or 'unknown'}"


def _message(
    distribution: str,
    supported_range: str | Callable[[], str],
    broken: Sequence[tuple[Seam, str]],
    adapter: str,
    related: Mapping[str, str | Callable[[], str]] | None,
) -> str:
    found = [
        f"{name} {installed_version(name)} (supported: {_supported(name, _text(span))})"
        for name, span in {distribution: supported_range, **(related or {})}.items()
    ]
    lines = [
        f"  - {seam.name} ({'private' if seam.is_private else 'public'}): {problem}"
        for seam, problem in broken
    ]
    who = adapter or f"The {distribution} adapter"
    return (
        f"{who} cannot record this release: found {', '.join(found)}. "
        f"{len(broken)} framework seam(s) it relies on are missing or changed, so model or tool calls "
        "would not be checkpoints:\n"
        + "\n".join(lines)
        + f"\nInstall a supported release (pip install 'kitaru-adapters[{_extra_hint(adapter, distribution)}]') "
        "or pin the framework to the supported range."
    )


def _text(value: str | Callable[[], str]) -> str:
    return value if isinstance(value, str) else value()


def _extra_hint(adapter: str, distribution: str) -> str:
    if adapter.startswith("kitaru_adapters."):
        return adapter.removeprefix("kitaru_adapters.").replace("_", "-")
    return distribution


def reset_seam_checks() -> None:
    """Forget which frameworks passed their seam checks (tests break a seam, then check again)."""
    with _lock:
        _checked.clear()
