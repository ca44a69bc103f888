"""`kitaru_core.adapters`: the shared helpers (JSON forms, cost, subclasses) and the users' frozen view."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import kitaru_core
from kitaru_core import CurrentExecution, checkpoint, current_execution, execution, flow
from kitaru_core._serialization import canonical_json
from kitaru_core.adapters import (
    UNCONVERTED,
    cost_usd,
    execution_context,
    fingerprint,
    jsonable,
    register_durable_subclass,
)

ROOT = Path(__file__).resolve().parents[2]
MEMORY_ADDRESS = re.compile(r"0x[0-9a-fA-F]{4,}")


class ToolCall(BaseModel):
    name: str
    arguments: str
    id: str | None = None


@dataclasses.dataclass
class Settings:
    temperature: float
    stop: list[str] | None = None


class Opaque:
    """An object with the default `repr` (it names a memory address)."""


class Named:
    def __repr__(self) -> str:
        return "Named()"


SAMPLES: dict[str, Any] = {
    "text": "hello",
    "messages": [{"role": "user", "content": "hi", "name": None}, {"role": "assistant", "content": "yo"}],
    "model": ToolCall(name="lookup", arguments='{"q": 1}'),
    "dataclass": Settings(0.5),
    "schema_class": ToolCall,
    "tuple": ("a", 1, 2.5, True, None),
    "custom_repr": Named(),
    "nested": {"calls": [ToolCall(name="a", arguments="{}", id="c1")], "settings": Settings(0.0, ["x"])},
}

GOLDEN_FINGERPRINTS = {
    # What the CrewAI adapter's own `jsonable` gave in 0.1 (the OpenAI Agents adapter's too, but for
    # `schema_class`: its hook keeps a class as its `repr`): the shared one must give the same, or
    # every in-flight call recorded by 0.1 is superseded.
    "text": "5aa762ae383fbb727af3c7a36d4940a5b8c40a989452d2304fc958ff3f354e7a",
    "messages": "c250886073cb6456f10150766a9fab9bb8b5b77db57103943a440c3d3c42794f",
    "model": "f8edd688e037984c2a9a8c3ffafc2e67295a9bf4e5c84d6c549c67bc17630b86",
    "dataclass": "a6eb9a6d683748313a6b80a15d791914f6c135333e1923086a06e247857f5202",
    "schema_class": "e00fc63b6f919816f494d42dedb45a93f4d38b1f1c76cfcfac171a4b4f5b02e7",
    "tuple": "6889695537d7549ee9f226850c4063d849c980c067d95947a1b240009f1ff7cf",
    "custom_repr": "93c0c8dc417bd962c92c58e218ef2061d35054dae2f1ae5e372d7bab753fc2d1",
    "nested": "97a7fa321e245524c4217ee53c294847d1dc656b7801881ec68bb35d68f36b54",
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_jsonable_fingerprints_are_those_the_adapters_recorded_in_0_1(name: str) -> None:
    assert fingerprint(jsonable(SAMPLES[name])) == GOLDEN_FINGERPRINTS[name]


ADDRESS_SAMPLES: list[Any] = [
    Opaque(),
    [Opaque(), {"inner": Opaque()}],
    {Opaque(): 1},
    Settings(temperature=0.1, stop=[Opaque()]),  # pyright: ignore[reportArgumentType]
    lambda: None,
    threading.Lock(),
    object(),
]


@pytest.mark.parametrize("value", ADDRESS_SAMPLES, ids=lambda value: type(value).__name__)
def test_fingerprint_json_never_contains_a_memory_address(value: Any) -> None:
    form = jsonable(value)
    text = canonical_json(form)
    assert text is not None
    assert not MEMORY_ADDRESS.search(text), text
    # And the same value built again (another address) gives the same fingerprint.
    assert canonical_json(jsonable(value)) == text
    # The core's own fingerprint gives no JSON for such values rather than one naming an address.
    own = canonical_json(value)
    assert own is None or not MEMORY_ADDRESS.search(own), own


def test_jsonable_keeps_the_type_of_an_object_whose_repr_names_an_address() -> None:
    assert jsonable(Opaque()) == "<Opaque>"
    assert jsonable(Opaque()) == jsonable(Opaque())
    assert jsonable(Named()) == "Named()"


def test_jsonable_convert_hook_comes_first_and_applies_at_every_depth() -> None:
    def hook(value: Any) -> Any:
        return {"tool": value.name} if isinstance(value, ToolCall) else UNCONVERTED

    value = {"calls": [ToolCall(name="a", arguments="{}")], "other": Settings(1.0)}
    assert jsonable(value, convert=hook) == {
        "calls": [{"tool": "a"}],
        "other": {"temperature": 1.0, "stop": None},
    }


def test_jsonable_leaves_out_none_items_and_dumps_models_without_none_fields() -> None:
    assert jsonable({"a": None, "b": ToolCall(name="x", arguments="{}")}) == {
        "b": {"name": "x", "arguments": "{}"}
    }


def test_cost_usd_is_none_without_a_model_name_and_for_an_unknown_model() -> None:
    assert cost_usd(None, 100, 10) is None
    assert cost_usd("", 100, 10) is None
    assert cost_usd("no-such-model-kitaru-test", 100, 10) is None


def test_cost_usd_prices_a_known_model() -> None:
    pytest.importorskip("genai_prices")
    cost = cost_usd("gpt-4o-mini", 1_000_000, 1_000_000)
    assert cost is not None
    assert cost > 0
    cached = cost_usd("gpt-4o-mini", 1_000_000, 1_000_000, cache_read_tokens=1_000_000)
    assert cached is not None
    assert cached < cost


def test_cost_usd_without_genai_prices_is_none() -> None:
    probe = (
        "import sys\n"
        "sys.modules['genai_prices'] = None\n"  # an import of it raises ImportError
        "from kitaru_core.adapters import cost_usd\n"
        "print(cost_usd('gpt-4o-mini', 10, 10))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"


def test_register_durable_subclass_dresses_it_as_the_base() -> None:
    class Base:
        """The framework's class."""

    class Durable(Base):
        pass

    registry: dict[type[Any], type[Any]] = {}
    assert register_durable_subclass(Base, Durable, registry) is Durable
    assert (Durable.__name__, Durable.__qualname__, Durable.__module__, Durable.__doc__) == (
        Base.__name__,
        Base.__qualname__,
        Base.__module__,
        Base.__doc__,
    )
    assert registry == {Base: Durable}


def test_durable_subclasses_are_made_once_across_threads_and_swapped_back() -> None:
    import re
    import textwrap
    import threading

    from kitaru_core.adapters import DurableSubclasses

    [example] = re.findall(r"```python\n(.*?)```", DurableSubclasses.__doc__ or "", flags=re.DOTALL)
    exec(compile(textwrap.dedent(example), "DurableSubclasses example", "exec"), {})  # the docstring runs

    class Agent:
        pass

    made: list[type[Any]] = []

    def make(base: type[Any]) -> type[Any]:
        made.append(type("Durable", (base,), {}))
        return made[-1]

    subclasses = DurableSubclasses()
    agents = [Agent() for _ in range(16)]
    start = threading.Barrier(len(agents))

    def swap(agent: Agent) -> None:
        start.wait()
        subclasses.make_durable(agent, make)
        subclasses.make_durable(agent, make)  # durable already: unchanged

    threads = [threading.Thread(target=swap, args=(agent,)) for agent in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == len(subclasses) == 1
    assert {type(agent) for agent in agents} == {made[0]}
    assert subclasses.is_durable(made[0])
    assert not subclasses.is_durable(Agent)
    assert subclasses.subclass(made[0], make) is made[0]
    assert type(subclasses.make_plain(agents[0])) is Agent
    assert type(subclasses.make_plain(agents[0])) is Agent  # plain already: unchanged


# -- the users' frozen view -----------------------------------------------------------------------


@checkpoint
def seen() -> tuple[CurrentExecution | None, str | None]:
    context = execution_context()  # the runtime's mutable context: adapters only
    return current_execution(), None if context is None else context.execution_id


def test_current_execution_is_a_frozen_view_and_adapters_get_the_context(sqlite_file_store: str) -> None:
    assert current_execution() is None
    assert execution_context() is None
    with execution("view-1", name="viewing") as run:
        assert isinstance(run, CurrentExecution)
        assert (run.execution_id, run.flow_name, run.run_number, run.served_completed) == (
            "view-1",
            "viewing",
            1,
            False,
        )
        view, context_id = seen()
        assert view == run
        assert context_id == "view-1"
        context = execution_context()
        assert context is not None
        assert not isinstance(view, type(context))
        with pytest.raises(dataclasses.FrozenInstanceError):
            run.execution_id = "other"  # type: ignore[misc]
    assert run.execution_id == "view-1"  # still readable after the block
    with execution("view-1", name="viewing") as again:
        assert (again.run_number, again.served_completed) == (2, True)


@flow(name="viewed-flow")
def viewed() -> str:
    view = current_execution()
    assert view is not None
    return f"{view.flow_name}:{view.execution_id}"


def test_current_execution_inside_a_flow(sqlite_file_store: str) -> None:
    assert viewed.run(execution_id="view-flow") == "viewed-flow:view-flow"


def test_execution_joined_inside_another_yields_the_view_of_the_outer(sqlite_file_store: str) -> None:
    with execution("outer-1", name="outer") as outer, execution() as inner:
        assert inner == outer
        assert isinstance(inner, CurrentExecution)


def test_the_adapters_import_shared_helpers_only_from_the_adapter_api() -> None:
    """No adapter imports a helper from a private core module or from another adapter."""
    allowed = re.compile(
        r"^from kitaru_core(\.adapters|\.errors|\.migrations)? import|^import kitaru_core$"
        r"|^from kitaru_adapters\.(\w+)\.|^from kitaru_adapters\.(\w+) import"
    )
    for path in sorted((ROOT / "kitaru_adapters").glob("*/*.py")):
        adapter = path.parent.name
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if not re.match(r"^(from|import) kitaru_", stripped):
                continue
            assert allowed.match(stripped), f"{path.relative_to(ROOT)}: {stripped}"
            other = re.match(r"^from kitaru_adapters\.(\w+)", stripped)
            assert other is None or other.group(1) == adapter, f"{path.relative_to(ROOT)}: {stripped}"
    assert not (ROOT / "kitaru_adapters" / "_seams.py").exists()
    assert kitaru_core.adapters.__name__ == "kitaru_core.adapters"


def test_the_writing_an_adapter_example_runs_as_written(tmp_path: Path) -> None:
    markdown = (ROOT / "docs" / "reference" / "adapters.md").read_text(encoding="utf-8")
    [block] = [
        block
        for block in re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)
        if "# toy_adapter.py" in block
    ]
    (tmp_path / "toy_adapter.py").write_text(block, encoding="utf-8")
    environment = {
        **os.environ,
        "KITARU_INTERACTIVE": "false",
        "KITARU_CONFIG_FILE": str(tmp_path / "none.toml"),
        "KITARU_STORE_URL": f"sqlite:///{tmp_path / 'kitaru.db'}",
        "KITARU_ARTIFACTS_URL": str(tmp_path / "artifacts"),
    }
    result = subprocess.run(
        [sys.executable, "toy_adapter.py"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_approval_timeout_s_reads_timedeltas_and_numbers_and_refuses_the_rest() -> None:
    from datetime import timedelta

    from kitaru_core.adapters import approval_timeout_s
    from kitaru_core.errors import ConfigurationError

    assert approval_timeout_s(None) is None
    assert approval_timeout_s(timedelta(minutes=5)) == 300.0
    assert approval_timeout_s(2) == 2.0
    assert approval_timeout_s(0.5) == 0.5
    for bad in (-1, float("nan"), float("inf"), timedelta(seconds=-3), True, "300"):
        with pytest.raises(ConfigurationError, match="approval_timeout"):
            approval_timeout_s(bad)  # type: ignore[arg-type]
