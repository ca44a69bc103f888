"""Served values are exactly what the body returned: equal, of the same type, with the same canonical JSON.

Property tests (Hypothesis) generate values and return annotations (matching ones and ones pydantic
would coerce into, like `float` for an `int`), run them through a checkpoint in an execution that
fails after a downstream checkpoint consumed the value, resume it, and check that the served value
is the returned one and that the downstream call was served (same input fingerprint, body run once).

`KITARU_HYPOTHESIS_EXAMPLES` raises the number of examples (`nox -s values_long` sets it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import os
import pathlib
import re
import subprocess
import sys
import typing
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple, TypedDict
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, HttpUrl, PrivateAttr
from sqlalchemy import text

import kitaru_core
from kitaru_core import Client, JsonCodec, checkpoint, configure, execution, fingerprint, flow
from kitaru_core._runtime import get_store
from kitaru_core._serialization import TYPED_FORMAT, canonical_json
from kitaru_core.errors import ConfigurationError, SerializationError

EXAMPLES = int(os.environ.get("KITARU_HYPOTHESIS_EXAMPLES", "0"))
REPO = Path(__file__).resolve().parents[2]

# -- module-level classes (found again by class reference) -------------------------------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = 2


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 3


@dataclass(frozen=True)
class Point:
    x: int
    y: float


@dataclass
class Box:
    label: str
    content: Any
    tags: list[str] = dataclasses.field(default_factory=list)


class Item(BaseModel):
    name: str
    price: float
    quantity: int = 1


class Order(BaseModel):
    id: int
    items: list[Item]
    note: Any = None
    site: HttpUrl | None = None
    extras: dict[str, Any] = Field(default_factory=dict)
    _cache: int = PrivateAttr(default=0)


class Pair(NamedTuple):
    left: int
    right: str


class Row(TypedDict):
    id: int
    score: float


class Opaque:
    """A plain class the default codec cannot store."""

    def __init__(self, value: int) -> None:
        self.value = value


# -- exact comparison --------------------------------------------------------------------------------


def assert_same(returned: Any, served: Any, where: str = "value") -> None:
    """Equal, and of the same type at every depth (floats by repr: NaN, -0.0; dicts in order)."""
    assert type(served) is type(returned), f"{where}: {type(returned)} served as {type(served)}"
    if isinstance(returned, float | Decimal | dt.datetime | dt.time | dt.date | dt.timedelta | pathlib.PurePath):
        assert repr(served) == repr(returned), f"{where}: {returned!r} served as {served!r}"
    elif isinstance(returned, dict):
        assert len(served) == len(returned), where  # pyright: ignore[reportUnknownArgumentType]
        for (key, item), (served_key, served_item) in zip(returned.items(), served.items(), strict=True):  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
            assert_same(key, served_key, f"{where} key")
            assert_same(item, served_item, f"{where}[{key!r}]")
    elif isinstance(returned, list | tuple):
        assert len(served) == len(returned), where  # pyright: ignore[reportUnknownArgumentType]
        for index, (item, served_item) in enumerate(zip(returned, served, strict=True)):  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
            assert_same(item, served_item, f"{where}[{index}]")
    elif isinstance(returned, set | frozenset):
        assert served == returned, where
        by_repr = {repr(item): item for item in served}  # pyright: ignore[reportUnknownVariableType]
        for item in returned:  # pyright: ignore[reportUnknownVariableType]
            assert_same(item, by_repr[repr(item)], f"{where} item")
    elif isinstance(returned, BaseModel):
        assert_same(returned.__dict__, served.__dict__, f"{where} fields")
        assert served.model_fields_set == returned.model_fields_set, where
        assert served.__pydantic_private__ == returned.__pydantic_private__, where
    elif dataclasses.is_dataclass(returned):
        for field in dataclasses.fields(returned):
            assert_same(getattr(returned, field.name), getattr(served, field.name), f"{where}.{field.name}")
    else:
        assert served == returned, f"{where}: {returned!r} served as {served!r}"


# -- generated values and annotations --------------------------------------------------------------

ZONES = [None, dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York")]
keys = st.one_of(st.text(max_size=8), st.integers(-5, 5), st.tuples(st.integers(0, 3), st.text(max_size=3)))
hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.decimals(allow_nan=False),
    st.sampled_from(list(Color) + list(Level)),
    st.uuids(),
    st.dates(),
    st.datetimes(timezones=st.sampled_from(ZONES)),
    st.times(timezones=st.sampled_from([None, dt.UTC])),
    st.timedeltas(),
    st.builds(Point, st.integers(), st.floats(allow_nan=False)),
    st.builds(pathlib.PurePosixPath, st.text(alphabet="abc/", max_size=8)),
)
leaves = st.one_of(
    hashable_leaves,
    st.floats(),  # NaN, ±inf, -0.0
    st.builds(bytearray, st.binary(max_size=8)),
    st.builds(Item, name=st.text(max_size=5), price=st.floats(allow_nan=False), quantity=st.integers()),
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=6), children, max_size=4),
        st.dictionaries(keys, children, max_size=3),
        st.frozensets(hashable_leaves, max_size=3),
        st.sets(hashable_leaves, max_size=3),
        st.builds(Box, st.text(max_size=4), children, st.lists(st.text(max_size=3), max_size=2)),
        st.builds(
            Order,
            id=st.integers(),
            items=st.lists(st.builds(Item, name=st.text(max_size=4), price=st.floats(allow_nan=False)), max_size=2),
            note=children,
            site=st.sampled_from([None, "https://example.org/a?b=1"]),
            extras=st.dictionaries(st.text(max_size=4), children, max_size=2),
        ),
        st.builds(Pair, st.integers(), st.text(max_size=4)),
        st.builds(Row, id=st.integers(), score=st.floats(allow_nan=False)),  # a TypedDict value is a dict
    )


values = st.recursive(leaves, _containers, max_leaves=12)


def matching_annotation(value: Any) -> Any:
    """An annotation that describes `value` (what a careful author writes)."""
    if isinstance(value, bool | int | float | str | bytes | bytearray | Decimal | uuid.UUID | enum.Enum):
        return type(value)
    if isinstance(value, dt.date | dt.time | dt.timedelta | pathlib.PurePath | BaseModel):
        return type(value)
    if dataclasses.is_dataclass(value) or isinstance(value, Pair):
        return type(value)
    if isinstance(value, list):
        return list[Any]
    if isinstance(value, tuple):
        return tuple[Any, ...]
    if isinstance(value, frozenset):
        return frozenset[Any]
    if isinstance(value, set):
        return set[Any]
    if isinstance(value, dict):
        return dict[Any, Any]
    return Any


COERCING = {  # annotations pydantic validates these values into another type or value
    int: float,
    bool: int,
    float: int | float,
    str: str | bytes,
    tuple: list[Any],
    list: tuple[Any, ...],
    set: list[Any],
    frozenset: set[Any],
    dict: dict[str, float],
    Decimal: float,
    dt.datetime: dt.date | dt.datetime,
    bytes: str,
}


@st.composite
def values_and_annotations(draw: st.DrawFn) -> tuple[Any, Any]:
    value = draw(values)
    choice = draw(st.sampled_from(["matching", "coercing", "none", "any"]))
    if choice == "matching":
        return value, matching_annotation(value)
    if choice == "coercing":
        return value, COERCING.get(type(value), float | str)  # type: ignore[arg-type]
    return value, (Any if choice == "any" else None)


def _settings(default: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=EXAMPLES or default,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- the codec alone -----------------------------------------------------------------------------------


@_settings(300)
@given(values_and_annotations())
def test_the_codec_gives_back_the_returned_value_whatever_the_annotation(case: tuple[Any, Any]) -> None:
    value, annotation = case
    codec = JsonCodec(type_hint=annotation)
    format_, payload = codec.encode(value)
    assert format_ == TYPED_FORMAT
    served = codec.decode(format_, payload)
    assert_same(value, served)
    assert canonical_json(served) == canonical_json(value)
    assert fingerprint({"order": served}) == fingerprint({"order": value})
    assert JsonCodec().encode(served) == (format_, payload)  # storing it again gives the same bytes


def _reordered(value: Any) -> Any:
    """The same value with every set rebuilt in reverse iteration order."""
    if type(value) in (set, frozenset):
        return type(value)(reversed([_reordered(item) for item in value]))
    if type(value) is list:
        return [_reordered(item) for item in value]
    if type(value) is tuple:
        return tuple(_reordered(item) for item in value)
    if type(value) is dict:
        return {key: _reordered(item) for key, item in value.items()}
    return value


def _refuse_constant(name: str) -> Any:
    raise AssertionError(f"canonical JSON holds the non-JSON constant {name}")


@_settings(200)
@given(values)
def test_canonical_json_is_strict_json_and_independent_of_set_order(value: Any) -> None:
    import json

    canonical = canonical_json(value)
    if canonical is None:
        return
    json.loads(canonical, parse_constant=_refuse_constant)  # no NaN or Infinity literals
    assert canonical_json(_reordered(value)) == canonical


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()


@_settings(300)
@given(st.dictionaries(st.text(), _scalars) | st.dictionaries(st.text(), values, max_size=3))
def test_the_fast_path_for_flat_inputs_gives_the_general_paths_text(inputs: dict[str, Any]) -> None:
    """Flat `{str: scalar}` inputs skip the general preparation: the text must be the same.

    An `exclude_keys` entry no input has sends the same value down the general path.
    """
    assert canonical_json(inputs) == canonical_json(inputs, exclude_keys=["\x00 no key is this"])


def test_canonical_json_of_values_0_1_could_fingerprint_is_unchanged() -> None:
    # plain JSON values, models and dataclasses: the text 0.1 wrote (json.dumps of pydantic's JSON form)
    assert canonical_json({"b": [1, 2.5, None, True], "a": "é"}) == '{"a":"é","b":[1,2.5,null,true]}'
    assert canonical_json(Item(name="x", price=1.0)) == '{"name":"x","price":1.0,"quantity":1}'
    assert canonical_json(Point(1, 2.0)) == '{"x":1,"y":2.0}'
    assert canonical_json(((1, 2), {"k": 3})) == '[[1,2],{"k":3}]'  # the default (args, kwargs)
    assert canonical_json({1: "a"}) == '{"1":"a"}'
    assert canonical_json(Decimal("1.10")) == '"1.10"'
    # values it could not fingerprint, or not stably, now have one canonical form
    assert canonical_json({"s": {"b", "a", "c"}}) == '{"s":["a","b","c"]}'
    assert canonical_json(float("nan")) == '{"$kitaru":"float","value":"nan"}'
    assert canonical_json([float("inf"), -math.inf]) == (
        '[{"$kitaru":"float","value":"inf"},{"$kitaru":"float","value":"-inf"}]'
    )
    assert canonical_json(b"\xff") == '{"$kitaru":"bytes","value":"/w=="}'
    assert canonical_json(b"ab") != canonical_json("ab")


def test_set_fingerprints_do_not_depend_on_the_process() -> None:
    script = "from kitaru_core import fingerprint; print(fingerprint({'tags': {'alpha', 'beta', 'gamma', 'delta'}}))"
    prints = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in (1, 2, 3)
    }
    assert len(prints) == 1


@pytest.mark.parametrize(
    "value",
    [
        b"\x00\xff" * 100,
        bytearray(b"pdf"),
        float("nan"),
        math.inf,
        -math.inf,
        -0.0,
        Decimal("1.10"),
        Decimal("-0"),
        Decimal("1E+3"),
        dt.datetime(2024, 5, 1, 12, 30, 15, 123456),
        dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.UTC),
        dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))),
        dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Paris")),  # the second 02:30
        dt.datetime(2024, 3, 31, 2, 30, tzinfo=ZoneInfo("Europe/Paris")),  # a wall time that does not exist
        dt.date(2024, 2, 29),
        dt.time(23, 59, 59, 999999, tzinfo=dt.UTC),
        dt.timedelta(days=-1, microseconds=5),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        Color.GREEN,
        Level.HIGH,
        Pair(1, "a"),
        Path("/tmp/report.pdf"),
        {1: "int key", (1, "a"): "tuple key", None: "none key", "$kitaru": "a user key named like our tag"},
        Order(id=1, items=[Item(name="a", price=2)], note={"deep": [Point(1, 2.0), {3, 4}]}, site="https://x.org"),
        Row(id=1, score=2),
    ],
    ids=repr,
)
def test_values_json_cannot_carry_round_trip(value: Any) -> None:
    codec = JsonCodec()
    served = codec.decode(*codec.encode(value))
    assert_same(value, served)
    assert canonical_json(served) == canonical_json(value)


def test_subclasses_of_builtins_are_stored_as_their_base_type() -> None:
    from collections import OrderedDict

    codec = JsonCodec()
    served = codec.decode(*codec.encode(OrderedDict(a=1)))
    assert type(served) is dict
    assert served == {"a": 1}
    assert canonical_json(served) == canonical_json(OrderedDict(a=1))


# -- through the store: first run, then resume ----------------------------------------------------------

runs: Counter[str] = Counter()


class PlannedFailure(Exception):
    """Ends the first run after the downstream call committed, so the execution is resumable."""


def _checkpoint_returning(value: Any, annotation: Any) -> Any:
    def produce() -> Any:
        runs["produce"] += 1
        return value

    if annotation is not None:
        produce.__annotations__ = {"return": annotation}
    return checkpoint(name="produce")(produce)


@checkpoint
def consume(order: Any) -> str:
    runs["consume"] += 1
    return canonical_json(order) or ""


def _first_run_then_resume(value: Any, annotation: Any) -> None:
    produce = _checkpoint_returning(value, annotation)
    execution_id = f"values-{uuid.uuid4().hex[:12]}"
    served: list[Any] = []
    runs.clear()

    def body(fail: bool) -> None:
        with execution(execution_id, name="values"):
            output = produce()
            served.append(output)
            consume(output)
            if fail:
                raise PlannedFailure

    with pytest.raises(PlannedFailure):
        body(fail=True)
    body(fail=False)
    assert runs == Counter({"produce": 1, "consume": 1}), "a completed call ran again"
    returned, resumed = served
    assert returned is value
    assert_same(value, resumed)
    assert canonical_json(resumed) == canonical_json(value)
    calls = get_store().load_calls(execution_id)
    assert [call.status for call in calls] == ["completed", "completed"]  # nothing superseded
    assert calls[1].fingerprint == fingerprint({"order": value})


@_settings(25)
@given(case=values_and_annotations())
def test_a_resumed_execution_serves_the_returned_value_and_reruns_nothing(
    store_url: str, case: tuple[Any, Any]
) -> None:
    _first_run_then_resume(*case)


def test_large_bytes_go_to_the_artifact_store_and_come_back(store_url: str) -> None:
    _first_run_then_resume(os.urandom(5000), bytes)  # store_url sets a 1 KiB inline limit


def test_the_docs_first_failure_int_served_under_a_float_annotation(store_url: str) -> None:
    _first_run_then_resume({"order_id": 7, "total": 30.0}, dict[str, float])


# -- the docs' examples, as written --------------------------------------------------------------------


def _python_blocks(page: str) -> list[str]:
    markdown = (REPO / "docs" / page).read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


def _block(page: str, marker: str) -> str:
    [block] = [block for block in _python_blocks(page) if marker in block]
    return block


@pytest.fixture(params=["sqlite-file", pytest.param("postgres", marks=pytest.mark.postgres)])
def subprocess_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for scripts in a subprocess: a SQLite file (the default path) or PostgreSQL."""
    env = {**os.environ, "KITARU_INTERACTIVE": "false", "KITARU_CONFIG_FILE": str(tmp_path / "none.toml")}
    env.pop("KITARU_STORE_URL", None)
    if request.param == "postgres":
        from tests.conftest import _truncate_postgres  # pyright: ignore[reportPrivateUsage]

        url = request.getfixturevalue("postgres_database")
        _truncate_postgres(url)
        env["KITARU_STORE_URL"] = url
        configure(store_url=url, reset=True)
    else:
        configure(store_url=f"sqlite:///{tmp_path / '.kitaru' / 'kitaru.db'}", reset=True)
    yield env
    configure(reset=True)


def _run(script: str, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_billing_example_resumed_sends_no_second_invoice(tmp_path: Path, subprocess_store: dict[str, str]) -> None:
    (tmp_path / "billing.py").write_text(_block("concepts.md", "# billing.py"), encoding="utf-8")
    first = _run("billing.py", tmp_path, subprocess_store)
    assert first.count("fetching 7") == 1
    assert first.count("sending invoice") == 1
    invoice = first.strip().splitlines()[-1]
    # the process dies after send_invoice committed, before the flow completed
    [summary] = Client().list_executions()
    with get_store().engine.begin() as connection:
        connection.execute(text("UPDATE kitaru_executions SET status = 'failed' WHERE id = :id"), {"id": summary.id})

    second = _run("billing.py", tmp_path, subprocess_store)
    assert "fetching" not in second
    assert "sending invoice" not in second  # 0.1 sent it again: order_id came back as 7.0
    assert second.strip().splitlines()[-1] == invoice
    detail = Client().get_execution(summary.id)
    assert detail.status == "completed"
    assert [(call.key, call.status, call.source) for call in detail.calls] == [
        ("fetch_order:0", "completed", "store"),
        ("send_invoice:0", "completed", "store"),
    ]


def test_the_replay_example_reuses_calls_1_and_2(tmp_path: Path, subprocess_store: dict[str, str]) -> None:
    (tmp_path / "billing.py").write_text(_block("concepts.md", "# billing.py"), encoding="utf-8")
    script = "\n".join(
        [
            "from billing import bill",
            _block("concepts.md", 'execution_id="ticket-42"'),
            _block("concepts.md", "Client().replay("),
            "print('replayed as', new_id)",
        ]
    )
    (tmp_path / "replay_example.py").write_text(script, encoding="utf-8")
    output = _run("replay_example.py", tmp_path, subprocess_store)
    assert output.count("fetching 7") == 1  # the original execution only
    assert output.count("sending invoice") == 1
    new_id = output.split("replayed as")[-1].strip()
    detail = Client().get_execution(new_id)
    assert detail.status == "completed"
    assert [(call.key, call.status) for call in detail.calls] == [
        ("fetch_order:0", "completed"),
        ("send_invoice:0", "completed"),  # 0.1 superseded it and ran it again
    ]
    assert Client().get_output(new_id) == Client().get_output("ticket-42")


# -- decoding never loads code on a stored value's say-so ----------------------------------------------


def _tamper(execution_id: str, output_format: str, payload: bytes) -> None:
    with get_store().engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE kitaru_checkpoint_calls SET output_format = :format, output = :payload "
                "WHERE execution_id = :id"
            ),
            {"format": output_format, "payload": payload, "id": execution_id},
        )


@checkpoint
def stored_point():  # no annotation: values written by 0.1 are then loaded through the recorded class
    runs["stored_point"] += 1
    return Point(1, 2.0)


@pytest.mark.parametrize(
    ("output_format", "payload", "message"),
    [
        (TYPED_FORMAT, b'{"$kitaru":"model","class":"os:system","value":{}}', "not one"),
        (TYPED_FORMAT, b'{"$kitaru":"dataclass","class":"subprocess:Popen","value":{}}', "not one"),
        (TYPED_FORMAT, b'{"$kitaru":"enum","class":"builtins:eval","value":"1"}', "not one"),
        (TYPED_FORMAT, b'{"$kitaru":"model","class":"this:Zen","value":{}}', "not imported"),
        (TYPED_FORMAT, b'{"$kitaru":"no-such-tag","value":1}', "unknown tag"),
        ("json:this:Zen", b"{}", "not imported"),
        ("json:os:system", b"{}", "not one"),
        ("pickle", b"cos\nsystem\n(S'true'\ntR.", "pickle"),
        ("json+evil", b"{}", "Unknown stored value format"),
    ],
)
def test_a_tampered_format_raises_and_imports_nothing(
    store_url: str, output_format: str, payload: bytes, message: str
) -> None:
    assert "this" not in sys.modules  # `import this` prints; a decoder that imports it would show
    with execution("tampered", name="tampered"):
        stored_point()
    _tamper("tampered", output_format, payload)
    runs.clear()
    with pytest.raises(SerializationError, match=message), execution("tampered", name="tampered"):
        stored_point()
    assert "this" not in sys.modules
    assert runs == Counter()  # reported, not silently re-run


def test_decode_modules_allows_importing_a_named_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "kitaru_decode_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(
        "from pydantic import BaseModel\n\nclass Invoice(BaseModel):\n    number: int\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    invoice_module = importlib.import_module("kitaru_decode_probe.models")
    stored = JsonCodec().encode(invoice_module.Invoice(number=7))
    for name in ("kitaru_decode_probe.models", "kitaru_decode_probe"):
        monkeypatch.delitem(sys.modules, name)

    with pytest.raises(SerializationError, match=r"decode_modules=\['kitaru_decode_probe.models'\]"):
        JsonCodec().decode(*stored)
    assert "kitaru_decode_probe.models" not in sys.modules
    try:
        configure(decode_modules=["kitaru_decode_probe"])  # a package covers its submodules
        served = JsonCodec().decode(*stored)
    finally:
        configure(reset=True)
    assert type(served).__name__ == "Invoice"
    assert served.number == 7


def test_decode_modules_from_the_environment_and_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[kitaru]\ndecode_modules = ["myapp.models", "billing"]\n', encoding="utf-8")
    monkeypatch.setenv("KITARU_CONFIG_FILE", str(config))
    monkeypatch.delenv("KITARU_DECODE_MODULES", raising=False)
    kitaru_core.configure(reset=True)
    assert kitaru_core.configure().decode_modules == ("myapp.models", "billing")
    monkeypatch.setenv("KITARU_DECODE_MODULES", "a.b, c")
    assert kitaru_core.configure().decode_modules == ("a.b", "c")
    assert kitaru_core.configure(decode_modules=["x"]).decode_modules == ("x",)
    with pytest.raises(ConfigurationError, match="not a module name"):
        kitaru_core.configure(decode_modules=["os; rm -rf /"])
    kitaru_core.configure(reset=True)


# -- refused before the body runs, not after ---------------------------------------------------------------


@pytest.mark.parametrize(
    "annotation",
    [Opaque, list[Opaque], dict[str, Opaque | None], Callable[[], int], Iterator[int], type[int], tuple[int, Opaque]],
    ids=repr,
)
def test_an_unstorable_return_annotation_is_refused_at_decoration(annotation: Any) -> None:
    def handler() -> Any: ...

    handler.__annotations__ = {"return": annotation}
    with pytest.raises(ConfigurationError) as refused:
        checkpoint(handler)
    message = str(refused.value)
    assert "handler" in message
    assert "cannot store" in message
    assert "codec=" in message
    assert "allow_pickle=True" in message
    with pytest.raises(ConfigurationError, match="configure\\(allow_pickle=True\\)"):
        flow(handler)
    checkpoint(allow_pickle=True)(handler)  # opting in, or bringing a codec, is fine
    checkpoint(codec=JsonCodec())(handler)


@pytest.mark.parametrize(
    "annotation",
    [
        int,
        dict[str, float],
        bytes,
        Decimal,
        dt.datetime | None,
        tuple[int, ...],
        frozenset[str],
        Color,
        Order,
        Box,
        Pair,
        Row,
        Path,
        list[Any],
        typing.Literal["a", "b"],
        typing.Annotated[int, "meta"],
        typing.Sequence[Item],
        typing.Mapping[str, Point],
        object,
        Any,
    ],
    ids=repr,
)
def test_storable_return_annotations_are_accepted(annotation: Any) -> None:
    def handler() -> Any: ...

    handler.__annotations__ = {"return": annotation}
    checkpoint(handler)
    flow(handler)


def test_an_unresolvable_forward_reference_is_checked_at_the_first_call(sqlite_file_store: str) -> None:
    namespace: dict[str, Any] = {"checkpoint": checkpoint, "runs": runs}
    exec(  # a module whose annotation names a class defined after the decorator
        "@checkpoint\n"
        "def later() -> 'NotYetDefined':\n"
        "    runs['later'] += 1\n"
        "    return 1\n",
        namespace,
    )
    later = namespace["later"]  # decoration did not fail
    namespace["NotYetDefined"] = Opaque
    runs.clear()
    with pytest.raises(ConfigurationError, match=r"NotYetDefined|Opaque"), execution("forward", name="forward"):
        later()
    assert runs == Counter()  # refused before the body ran


def test_an_unannotated_unstorable_value_fails_before_it_is_committed(store_url: str) -> None:
    @checkpoint
    def opaque() -> Any:
        runs["opaque"] += 1
        return {"handle": Opaque(1)}

    runs.clear()
    with pytest.raises(SerializationError, match=r"Opaque at the value\['handle'\]"), execution("opaque", name="o"):
        opaque()
    assert runs == Counter({"opaque": 1})  # the annotation could not tell: it ran, then was refused
    assert [call.status for call in get_store().load_calls("opaque") if call.status == "completed"] == []


def test_a_class_defined_inside_a_function_is_found_through_the_annotation(store_url: str) -> None:
    class Local(BaseModel):
        n: int

    def make() -> Any:
        runs["annotated"] += 1
        return Local(n=1)

    make.__annotations__ = {"return": Local}  # a real object: `from __future__ import annotations` is on here
    annotated = checkpoint(name="annotated")(make)

    @checkpoint
    def unannotated() -> Any:
        return Local(n=2)

    runs.clear()
    with execution("local", name="local"):
        annotated()
    with execution("local", name="local"):
        served = annotated()
    assert runs == Counter({"annotated": 1})
    assert type(served) is Local
    with pytest.raises(SerializationError, match="inside a function"), execution("local2", name="local"):
        unannotated()


def test_values_written_by_0_1_still_load_as_before(store_url: str) -> None:
    codec = JsonCodec(type_hint=Item)
    assert codec.decode("json", b'{"name":"a","price":1}') == Item(name="a", price=1.0)
    assert JsonCodec().decode(f"json:{__name__}:Item", b'{"name":"a","price":1}') == Item(name="a", price=1.0)
    assert JsonCodec().decode("json", b'{"a":[1,2.5]}') == {"a": [1, 2.5]}
    assert JsonCodec(type_hint=dict[str, float]).decode("json", b'{"order_id":7}') == {"order_id": 7.0}
