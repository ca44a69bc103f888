"""Helpers for the adapters' seam tests: break a listed framework seam, read a range from pyproject.toml."""

from __future__ import annotations

import dataclasses
import importlib
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from kitaru_core.adapters import Seam
from kitaru_core.errors import AdapterError


def _owner_and_name(seam: Seam) -> tuple[Any, str]:
    owner: Any = importlib.import_module(seam.module)
    *path, name = seam.attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, name


def break_attribute(seam: Seam, monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove the seam's attribute: from the module, or from every class in the owner's MRO defining it."""
    owner, name = _owner_and_name(seam)
    if isinstance(owner, type):
        defining = [cls for cls in owner.__mro__ if name in vars(cls)]
        assert defining, f"{seam.name}: no class in {owner.__mro__} defines {name}"
        for cls in defining:
            monkeypatch.delattr(cls, name)
    else:
        monkeypatch.delattr(owner, name, raising=False)
        lazy = getattr(owner, "__getattr__", None)  # a module that imports its names on first use
        if lazy is not None:

            def without(attribute: str) -> Any:
                if attribute == name:
                    raise AttributeError(attribute)
                return lazy(attribute)

            monkeypatch.setattr(owner, "__getattr__", without)
    assert not hasattr(owner, name), f"{seam.name} is still reachable after removing it"


def change_signature(seam: Seam, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace the seam's callable with one whose parameters are all renamed."""

    def renamed(*arguments: Any, **options: Any) -> Any:
        raise AssertionError("a seam with a changed signature must be refused before it is called")

    owner, name = _owner_and_name(seam)
    monkeypatch.setattr(owner, name, renamed)


def declared_in_pyproject(root: Path, extra: str, distribution: str) -> str:
    """The version range of `distribution` in our `extra`, as pyproject.toml writes it (`>=1.1.5,<1.3`)."""
    with open(root / "pyproject.toml", "rb") as handle:
        extras: list[str] = tomllib.load(handle)["project"]["optional-dependencies"][extra]
    for line in extras:
        match = re.match(r"^([A-Za-z0-9._-]+)(\[[^\]]*\])?(.*)$", line)
        if match is not None and match.group(1) == distribution:
            return match.group(3).strip()
    raise AssertionError(f"pyproject.toml's {extra} extra does not name {distribution}")


def break_fields(seam: Seam, monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove the first field a `fields_seam` names from its dataclass or pydantic model."""
    owner: Any = getattr(importlib.import_module(seam.module), seam.attribute)
    name = seam.name.split(" fields ", 1)[1].split(", ")[0]
    if dataclasses.is_dataclass(owner):
        kept = {key: value for key, value in owner.__dataclass_fields__.items() if key != name}
        monkeypatch.setattr(owner, "__dataclass_fields__", kept)
    else:
        kept = {key: value for key, value in owner.__pydantic_fields__.items() if key != name}
        monkeypatch.setattr(owner, "__pydantic_fields__", kept)


def break_check_seam(
    seam: Seam, monkeypatch: pytest.MonkeyPatch, breakers: Mapping[str, Callable[[pytest.MonkeyPatch], None]]
) -> None:
    """Break a seam that has a check: a `fields_seam` loses a field, any other through its breaker."""
    if " fields " in seam.name:
        break_fields(seam, monkeypatch)
    else:
        breakers[seam.name](monkeypatch)


def expect_refusal(make_durable: Callable[[], Any], seam: Seam, *distributions: str) -> str:
    """Call `make_durable`; it must raise `AdapterError` naming each distribution's version and the seam."""
    with pytest.raises(AdapterError) as raised:
        make_durable()
    message = str(raised.value)
    for distribution in distributions:
        assert f"{distribution} {version(distribution)}" in message
    assert f"  - {seam.name} (" in message
    return message


def seam_tests(
    seams: Sequence[Seam],
    prepare: Callable[[], Callable[[], Any]],
    distributions: Sequence[str],
    breakers: Mapping[str, Callable[[pytest.MonkeyPatch], None]],
) -> tuple[Callable[..., None], Callable[..., None], Callable[..., None]]:
    """The three parametrized tests every adapter's seam list gets; assign them to `test_*` names.

    Args:
        seams: The adapter's `SEAMS`.
        prepare: Builds a real agent, crew or graph (before a seam is broken) and returns the call
            `lambda: durable(target)`.
        distributions: The distributions whose installed versions the error must name.
        breakers: How the framework would break each check seam that is not a `fields_seam`.

    Returns:
        Tests: a removed attribute, a changed signature, a broken check seam; each is refused.
    """
    attribute_seams = [seam for seam in seams if seam.check is None]
    signature_seams = [seam for seam in attribute_seams if seam.parameters]
    check_seams = [seam for seam in seams if seam.check is not None]

    def name(seam: Seam) -> str:
        return seam.name

    @pytest.mark.parametrize("seam", attribute_seams, ids=name)
    def removed(seam: Seam, monkeypatch: pytest.MonkeyPatch) -> None:
        call = prepare()
        break_attribute(seam, monkeypatch)
        assert "is missing" in expect_refusal(call, seam, *distributions)

    @pytest.mark.parametrize("seam", signature_seams, ids=name)
    def changed_signature(seam: Seam, monkeypatch: pytest.MonkeyPatch) -> None:
        call = prepare()
        change_signature(seam, monkeypatch)
        assert "signature changed" in expect_refusal(call, seam, *distributions)

    @pytest.mark.parametrize("seam", check_seams, ids=name)
    def broken_check(seam: Seam, monkeypatch: pytest.MonkeyPatch) -> None:
        call = prepare()
        break_check_seam(seam, monkeypatch, breakers)
        expect_refusal(call, seam, *distributions)

    return removed, changed_signature, broken_check
