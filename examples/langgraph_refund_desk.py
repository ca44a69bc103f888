"""A durable LangGraph refund desk (the runnable example; the tests use it too).

    python examples/langgraph_refund_desk.py [--base-url URL]
        [--checkpointer none|sqlite|kitaru|async-sqlite|async-postgres] [--postgres-url URL]
        [--mode invoke|ainvoke|stream|astream] [--approve] [--resume JSON] [--no-durable]
        [--crash-after K] [--crash-after-model-calls K] [--rerun-as-is] [--counter-file F] [--timeline]

Without `--base-url` it starts the project's scripted OpenAI-compatible server on 127.0.0.1, so it
runs offline. `durable(graph)` is the one added line.

The graph: a `research` node makes three model calls in a row (plan, facts, risks); then an
`agent` node (a model with `bind_tools`) and a `ToolNode` loop: look the order up, refund it,
answer. Tool bodies append a line to the counter file, so a test can count how often each ran.

Running it again after a crash resumes: with a checkpointer the thread's unfinished run is
continued with `invoke(None, config)` (LangGraph's own way; with `--rerun-as-is` the same
`invoke(input, config)` is made again, and the adapter continues the unfinished run itself);
without one the same call is made again. `--approve` gates the `refund` tool: with a checkpointer the run stops at LangGraph's
`interrupt()` (continue with `--resume '{"approved": true}'`), without one at a durable wait
(answer it with the CLI, then run again). Exit code 3 means "waiting for an answer".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import sys
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from typing import Annotated, Any

import httpx
import wrapt
from _runner_support import EXIT_WAITING, crash_after
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AnyMessage, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command
from typing_extensions import TypedDict

import kitaru_core
from kitaru_adapters.langgraph import durable
from kitaru_core.cli import print_timeline
from kitaru_core.testing import Rule, Script, ScriptedModelServer, ScriptedToolCall

PROMPT = "Refund my order 7, please"
THREAD_ID = "refund-7"

SCRIPT = Script(
    rules=[
        Rule(when_last_user_contains="Plan the refund", text="plan: look up the order, then refund it"),
        Rule(when_last_user_contains="facts", text="facts: order 7 was paid 25 USD"),
        Rule(when_last_user_contains="risks", text="risks: none found"),
        Rule(
            when_tools_offered="refund",
            when_last_tool_result_contains="denied",
            text="Not refunded: {last_tool_result}",
        ),
        Rule(
            when_tools_offered="refund",
            when_last_tool_result_contains="refunded",
            text="Done: {last_tool_result}",
        ),
        Rule(
            when_tools_offered="refund",
            when_last_tool_result_contains="order 7",
            tool_calls=(ScriptedToolCall("refund", {"order_id": 7, "amount": 25}),),
        ),
        Rule(
            when_tools_offered="lookup_order", tool_calls=(ScriptedToolCall("lookup_order", {"order_id": 7}),)
        ),
    ],
    model_names=("gpt-4o-mini",),
)


class Desk(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    notes: list[str]


def build_graph(base_url: str, counter_file: Path | None, checkpointer: Any) -> Any:
    """The refund desk graph (unchanged LangGraph code; nothing here knows about durability)."""

    def note(line: str) -> None:
        if counter_file is not None:
            with counter_file.open("a") as handle:
                handle.write(line + "\n")

    @tool
    def lookup_order(order_id: int) -> str:
        """Look an order up."""
        note(f"lookup_order {order_id}")
        return f"order {order_id}: 25 USD, paid"

    @tool
    def refund(order_id: int, amount: int) -> str:
        """Refund an order."""
        note(f"refund {order_id} {amount}")
        return f"refunded {amount} USD for order {order_id}"

    # No keep-alive: connections are not left open when a run ends (or is killed).
    model = ChatOpenAI(
        model="gpt-4o-mini",
        base_url=base_url,
        api_key="scripted",
        max_retries=0,
        http_client=httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)),
        http_async_client=httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)),
    )
    tools = [lookup_order, refund]

    def research(state: Desk) -> dict[str, Any]:
        notes = []
        for question in ("Plan the refund of order 7", "List the facts about order 7", "List the risks"):
            notes.append(str(model.invoke([HumanMessage(question)]).content))
        return {"notes": notes}

    def agent(state: Desk) -> dict[str, Any]:
        return {"messages": [model.bind_tools(tools).invoke(state["messages"])]}

    builder = StateGraph(Desk)
    builder.add_node("research", research)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "research")
    builder.add_edge("research", "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=checkpointer, name="refund_desk")


def crash_after_model_calls(calls: int) -> None:
    """SIGKILL this process when the `calls`-th chat model call has returned to graph code."""
    returned = 0

    @wrapt.decorator
    def count(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
        nonlocal returned
        result = wrapped(*args, **kwargs)
        returned += 1
        if returned == calls:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    BaseChatModel.invoke = count(BaseChatModel.invoke)  # type: ignore[method-assign]


def make_checkpointer(kind: str, path: Path, stack: ExitStack) -> Any:
    if kind == "none":
        return None
    if kind == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, check_same_thread=False)
        stack.callback(connection.close)
        return SqliteSaver(connection)
    from kitaru_adapters.langgraph import KitaruSaver

    saver = KitaruSaver()
    stack.callback(saver.close)
    return saver


def run(graph: Any, payload: Any, config: dict[str, Any], mode: str) -> dict[str, Any]:
    if mode == "invoke":
        return graph.invoke(payload, config)
    if mode == "ainvoke":
        return asyncio.run(graph.ainvoke(payload, config))
    if mode == "stream":
        state: dict[str, Any] = {}
        for item in graph.stream(payload, config, stream_mode="values"):
            state = item  # each item is the whole state after a step
        return state

    async def consume() -> dict[str, Any]:
        state: dict[str, Any] = {}
        async for item in graph.astream(payload, config, stream_mode="values"):
            state = item
        return state

    return asyncio.run(consume())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", help="an OpenAI-compatible server; default: start the scripted one")
    parser.add_argument(
        "--checkpointer",
        choices=["none", "sqlite", "kitaru", "async-sqlite", "async-postgres"],
        default="kitaru",
    )
    parser.add_argument(
        "--postgres-url", help="psycopg URL of the database for --checkpointer async-postgres"
    )
    parser.add_argument("--mode", choices=["invoke", "ainvoke", "stream", "astream"], default="invoke")
    parser.add_argument("--approve", action="store_true", help="gate the refund tool for approval")
    parser.add_argument("--resume", help="answer LangGraph's interrupt(s): JSON, e.g. '{\"approved\": true}'")
    parser.add_argument("--no-durable", action="store_true", help="run without the adapter (to compare)")
    parser.add_argument("--crash-after", type=int, help="SIGKILL after the K-th committed checkpoint call")
    parser.add_argument(
        "--crash-after-model-calls", type=int, help="SIGKILL after the K-th model call returned"
    )
    parser.add_argument("--counter-file", type=Path)
    parser.add_argument("--graph-db", type=Path, default=Path(".kitaru/langgraph-refund-desk.db"))
    parser.add_argument("--thread", default=THREAD_ID)
    parser.add_argument(
        "--rerun-as-is",
        action="store_true",
        help="always call with the input (the adapter resumes a crashed call)",
    )
    parser.add_argument("--timeline", action="store_true", help="print the execution's timeline at the end")
    options = parser.parse_args()
    if options.base_url:
        return run_desk(options, options.base_url)
    with ScriptedModelServer(SCRIPT) as server:
        return run_desk(options, server.base_url)


def desk_and_input(options: argparse.Namespace, base_url: str, checkpointer: Any) -> tuple[Any, Any]:
    """The desk graph (durable unless `--no-durable`) and this run's input (the prompt or `--resume`)."""
    graph = build_graph(base_url, options.counter_file, checkpointer)
    if not options.no_durable:
        graph = durable(graph, approve=["refund"] if options.approve else None)  # the one added line
    if options.resume:
        return graph, Command(resume=json.loads(options.resume))
    return graph, {"messages": [HumanMessage(PROMPT)], "notes": []}


def run_desk(options: argparse.Namespace, base_url: str) -> int:
    if options.crash_after:
        crash_after(options.crash_after)
    if options.crash_after_model_calls:
        crash_after_model_calls(options.crash_after_model_calls)
    if options.checkpointer.startswith("async-"):
        return asyncio.run(run_desk_async(options, base_url))
    config = {"configurable": {"thread_id": options.thread}}
    with ExitStack() as stack:
        checkpointer = make_checkpointer(options.checkpointer, options.graph_db, stack)
        graph, payload = desk_and_input(options, base_url, checkpointer)
        if (
            checkpointer is not None
            and not options.resume
            and not options.rerun_as_is
            and graph.get_state(config).tasks
        ):
            # The thread has an unfinished run: continue it (LangGraph's resume). `tasks`, not `next`:
            # a task whose writes were saved before the crash is no longer listed in `next`.
            payload = None
        try:
            state = run(graph, payload, config, options.mode)
        except kitaru_core.errors.ExecutionWaitingError as waiting:
            print(waiting, file=sys.stderr)
            return EXIT_WAITING
    return report(options, state)


def report(options: argparse.Namespace, state: dict[str, Any]) -> int:
    if "__interrupt__" in state:
        for pending in state["__interrupt__"]:
            print(f"interrupt {pending.id} {json.dumps(pending.value)}")
        return EXIT_WAITING
    print(f"notes={' | '.join(state['notes'])}")
    print(f"output={state['messages'][-1].content}")
    print(f"messages={json.dumps([[message.type, message.content] for message in state['messages']])}")
    if options.timeline and not options.no_durable:
        print_timeline(kitaru_core.Client().get_execution(options.thread))
    return 0


async def run_desk_async(options: argparse.Namespace, base_url: str) -> int:
    """The same desk on an async checkpointer (`ainvoke` / `astream` only, as LangGraph requires)."""
    if options.mode not in {"ainvoke", "astream"}:
        raise SystemExit("async checkpointers need --mode ainvoke or --mode astream")
    config = {"configurable": {"thread_id": options.thread}}
    async with AsyncExitStack() as stack:
        if options.checkpointer == "async-sqlite":
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            options.graph_db.parent.mkdir(parents=True, exist_ok=True)
            checkpointer: Any = await stack.enter_async_context(
                AsyncSqliteSaver.from_conn_string(str(options.graph_db))
            )
        else:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

            if not options.postgres_url:
                raise SystemExit("--checkpointer async-postgres needs --postgres-url postgresql://...")
            checkpointer = await stack.enter_async_context(
                AsyncPostgresSaver.from_conn_string(options.postgres_url)
            )
            await checkpointer.setup()
        graph, payload = desk_and_input(options, base_url, checkpointer)
        if not options.resume and not options.rerun_as_is and (await graph.aget_state(config)).tasks:
            payload = None  # the thread has an unfinished run: continue it
        try:
            if options.mode == "ainvoke":
                state = await graph.ainvoke(payload, config)
            else:
                state = {}
                async for item in graph.astream(payload, config, stream_mode="values"):
                    state = item
        except kitaru_core.errors.ExecutionWaitingError as waiting:
            print(waiting, file=sys.stderr)
            return EXIT_WAITING
    return report(options, state)


if __name__ == "__main__":
    sys.exit(main())
