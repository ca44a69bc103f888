"""`KitaruSaver` on first use: a fresh project directory, and databases made by earlier versions."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from alembic import command
from alembic.config import Config
from langgraph.checkpoint.base import empty_checkpoint

from kitaru_adapters.langgraph import KitaruSaver
from kitaru_core import migrations
from kitaru_core.migrations import SCHEMA_REVISION, tables

from .conftest import ModelServer

README = Path(__file__).resolve().parents[2] / "README.md"

# The README's snippet needs a `builder`; this one is a refund desk agent on the scripted server.
PRELUDE = """
import sys
from typing import Annotated, Any

import httpx
from langchain_core.messages import AnyMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from typing_extensions import TypedDict


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


@tool
def refund(order_id: int, amount: int) -> str:
    \"\"\"Refund an order.\"\"\"
    return f"refunded {amount} USD for order {order_id}"


model = ChatOpenAI(
    model="gpt-4o-mini", base_url=sys.argv[1], api_key="scripted", max_retries=0,
    http_client=httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)),
).bind_tools([refund])
builder = StateGraph(State)
builder.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
builder.add_node("tools", ToolNode([refund]))
builder.add_edge(START, "agent")
builder.add_conditional_edges("agent", tools_condition)
builder.add_edge("tools", "agent")
"""

EPILOGUE = """
state = graph.get_state({"configurable": {"thread_id": "refund-7"}})
print("waiting for", [interrupt.value["tool"] for interrupt in state.interrupts])
"""


@pytest.fixture
def script() -> Any:
    from kitaru_core.testing import Rule, Script, ScriptedToolCall

    return Script(
        rules=[
            Rule(
                when_tools_offered="refund",
                tool_calls=(ScriptedToolCall("refund", {"order_id": 7, "amount": 25}),),
            )
        ]
    )


def _readme_snippet() -> str:
    section = README.read_text().split("## LangGraph", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "README.md has a python snippet under ## LangGraph"
    return match.group(1)


def test_the_readme_snippet_works_in_a_fresh_directory(model_server: ModelServer, tmp_path: Path) -> None:
    project = tmp_path / "fresh-project"
    project.mkdir()
    program = project / "app.py"
    program.write_text(PRELUDE + _readme_snippet() + EPILOGUE)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("KITARU_")} | {
        "KITARU_INTERACTIVE": "false",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    done = subprocess.run(
        [sys.executable, str(program), model_server.base_url],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "waiting for ['refund']" in done.stdout  # the gated refund stopped at its interrupt
    assert (project / ".kitaru" / "kitaru.db").is_file()
    assert len(model_server.requests()) == 1


def _put_one_checkpoint(saver: KitaruSaver) -> None:
    config: Any = {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}
    saver.put(config, empty_checkpoint(), {"source": "input", "step": -1}, {})


@pytest.mark.parametrize("store_revision", ["0001", None], ids=["beside-a-store-at-0001", "saver-only"])
def test_a_database_whose_saver_tables_were_made_by_create_all_keeps_working(
    tmp_path: Path, store_revision: str | None
) -> None:
    """Earlier versions made the saver's tables with `create_all`: beside a store at revision 0001,
    or alone in a database of their own (no store tables, no revision)."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sqlalchemy.create_engine(url)
    if store_revision is not None:
        config = Config()
        config.set_main_option("script_location", str(Path(migrations.__file__).parent))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, store_revision)
    old = sqlalchemy.MetaData()
    for table in (tables.langgraph_checkpoints, tables.langgraph_checkpoint_writes):
        table.to_metadata(old)
    old.create_all(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO langgraph_checkpoints VALUES ('kept', '', 'c1', NULL, 'x', x'00', 'x', x'00')"
        )
    engine.dispose()

    saver = KitaruSaver(url)
    try:
        _put_one_checkpoint(saver)
        assert saver.get_tuple({"configurable": {"thread_id": "t1"}}) is not None
        with saver.engine.connect() as connection:
            revision = connection.exec_driver_sql("SELECT version_num FROM kitaru_alembic_version").scalar()
            kept = connection.exec_driver_sql(
                "SELECT count(*) FROM langgraph_checkpoints WHERE thread_id='kept'"
            )
            assert kept.scalar() == 1
    finally:
        saver.close()
    assert revision == SCHEMA_REVISION


def test_a_new_database_gets_the_saver_tables_from_the_migrations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'new.db'}"
    saver = KitaruSaver(url)
    try:
        _put_one_checkpoint(saver)
        names = set(sqlalchemy.inspect(saver.engine).get_table_names())
    finally:
        saver.close()
    assert {"langgraph_checkpoints", "langgraph_checkpoint_writes", "kitaru_alembic_version"} <= names
