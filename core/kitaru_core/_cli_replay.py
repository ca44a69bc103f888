"""`kitaru-adapters executions replay` (with overrides and inputs) and `executions diff`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kitaru_core.cli import (
    STATUS_STYLES,
    JsonOption,
    _checked,  # pyright: ignore[reportPrivateUsage]
    _client,  # pyright: ignore[reportPrivateUsage]
    _flow_output_to_stderr,  # pyright: ignore[reportPrivateUsage]
    _money,  # pyright: ignore[reportPrivateUsage]
    console,
    errors,
    executions_app,
    import_from_working_directory,
    shell_word,
)

DIFF_PREVIEW_CHARACTERS = 60


def parse_assignments(values: list[str], option: str) -> dict[str, Any]:
    """`NAME=JSON` arguments as a dict; a bad one exits with status 2 and says what was wrong.

    The name ends at the first `=`; the rest is the JSON value (`--override 'price:0={"amount": 3}'`).
    """
    parsed: dict[str, Any] = {}
    for text in values:
        name, separator, raw = text.partition("=")
        if not separator or not name:
            errors.print(
                f"[bold red]error:[/] {option} takes NAME=JSON, e.g. {option} 'price:0=42'; got {escape(text)!r}",
                highlight=False,
            )
            raise typer.Exit(code=2)
        try:
            parsed[name] = json.loads(raw)
        except ValueError as error:
            errors.print(
                f"[bold red]error:[/] the value of {option} {escape(name)} is not JSON ({escape(str(error))}). "
                "Quote strings: " + escape(f"{option} '{name}=\"text\"'") + "; booleans are true/false.",
                highlight=False,
            )
            raise typer.Exit(code=2) from None
    return parsed


def _call_reference(text: str | None) -> str | int | None:
    """`--from`: a call's `#` (digits) or its key."""
    if text is None:
        return None
    return int(text) if text.isdigit() else text


@executions_app.command("replay")
def replay(
    execution_id: Annotated[str, typer.Argument(help="The execution to replay.")],
    from_call: Annotated[
        str | None,
        typer.Option(
            "--from", help="First call to run live again: its # in `show` or its key; default: reuse every completed call."
        ),
    ] = None,
    override: Annotated[
        list[str] | None,
        typer.Option(
            "--override",
            help=(
                "KEY=JSON: a call's output by call key (an adapter's model request: its response, a string or "
                '{"text": ..., "tool_calls": [...]}; an adapter\'s tool call: its result) or a wait\'s answer '
                "by wait name; repeatable."
            ),
        ),
    ] = None,
    input_: Annotated[
        list[str] | None,
        typer.Option("--input", help="NAME=JSON: a new value of the flow's input NAME; repeatable."),
    ] = None,
    run: Annotated[
        bool,
        typer.Option(help="Run the new execution now (needs an importable @flow); --no-run queues it for a worker."),
    ] = True,
    queue: Annotated[str, typer.Option("--queue", "-q", help="The worker queue of a --no-run replay.")] = "default",
    as_json: JsonOption = False,
) -> None:
    """Start a new execution reusing the stored calls of another up to a chosen call.

    Calls before --from are served from the store, the chosen call and later ones run live. Waits
    answered before it keep their answers; later ones are asked again.
    """
    overrides = parse_assignments(override or [], "--override")
    inputs = parse_assignments(input_ or [], "--input")
    import_from_working_directory()
    with _flow_output_to_stderr(as_json):
        new_id = _checked(
            lambda: _client().replay(
                execution_id,
                from_call=_call_reference(from_call),
                overrides=overrides or None,
                inputs=inputs or None,
                run=run,
                queue=queue,
            )
        )
    status = "completed" if run else "queued"
    if as_json:
        print(json.dumps({"execution_id": new_id, "replay_of": execution_id, "status": status}))
        return
    console.print(f"replay execution: {new_id}", markup=False, highlight=False)
    if not run and _client().get_summary(new_id).entry_point is None:
        console.print(
            "queued, not started by an importable @flow: run your program with the agent, crew or graph "
            f"inside `with kitaru_core.named_run({new_id!r}):` (a LangGraph graph on thread_id={new_id!r})",
            markup=False,
            highlight=False,
        )
    elif not run:
        console.print(
            f"queued on {queue}: a worker runs it, or run it here with: "
            f"kitaru-adapters executions resume {shell_word(new_id)}",
            markup=False,
            highlight=False,
        )
    console.print(
        f"compare: kitaru-adapters executions diff {shell_word(execution_id)} {shell_word(new_id)}",
        markup=False,
        highlight=False,
    )


def _cell(text: str | None) -> Text:
    shown = (text or "").replace("\n", " ")
    if len(shown) > DIFF_PREVIEW_CHARACTERS:
        shown = shown[:DIFF_PREVIEW_CHARACTERS] + "…"
    return Text(shown)


def _usage(side: Any) -> str:
    if side is None or side.input_tokens is None:
        return _money(side.cost_usd) if side is not None else ""
    return f"{side.input_tokens}/{side.output_tokens} {_money(side.cost_usd)}".strip()


CHANGE_STYLES = {"same": "dim", "changed": "yellow", "new": "green", "missing": "red"}


@executions_app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(help="The first execution (e.g. the original).")],
    b: Annotated[str, typer.Argument(help="The second execution (e.g. its replay).")],
    as_json: JsonOption = False,
) -> None:
    """Line up two executions call by call: same, changed, new or missing, outputs side by side, tokens and cost."""
    result = _checked(lambda: _client().diff(a, b))
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    table = Table(title=Text(f"{a} → {b}"))
    table.add_column("key", overflow="fold", ratio=1)
    table.add_column("change", no_wrap=True)
    table.add_column("A #", justify="right", no_wrap=True)
    table.add_column("A output", overflow="fold", ratio=1)
    table.add_column("B #", justify="right", no_wrap=True)
    table.add_column("B output", overflow="fold", ratio=1)
    table.add_column("A tokens/cost", no_wrap=True)
    table.add_column("B tokens/cost", no_wrap=True)
    for row in result.rows:
        table.add_row(
            Text(row.key),
            Text(row.change, style=CHANGE_STYLES[row.change]),
            str(row.a.sequence) if row.a else "",
            _cell(row.a.output_preview) if row.a else Text("—"),
            str(row.b.sequence) if row.b else "",
            _cell(row.b.output_preview) if row.b else Text("—"),
            _usage(row.a),
            _usage(row.b),
        )
    console.print(table)
    counts = ", ".join(f"{count} {name}" for name, count in result.counts.items())
    console.print(f"calls: {counts}", markup=False, highlight=False)
    for label, execution_id, status, totals in (
        ("A", a, result.a_status, result.a_totals),
        ("B", b, result.b_status, result.b_totals),
    ):
        console.print(
            Text.assemble(
                f"{label} {execution_id} ",
                (status, STATUS_STYLES.get(status, "white")),
                f": model calls {totals.model_calls}, tool calls {totals.tool_calls}, tokens paid "
                f"{totals.input_tokens}/{totals.output_tokens} ({_money(totals.cost_usd)})",
            ),
            highlight=False,
        )
