"""The `kitaru-adapters` command line: list, show, answer, resume, replay, cancel and recover executions; serve."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kitaru_core import _config
from kitaru_core.errors import ExecutionWaitingError, KitaruError

T = TypeVar("T")

app = typer.Typer(
    name="kitaru-adapters",
    help="Durable execution for AI agents: inspect and steer executions.",
    no_args_is_help=True,
    add_completion=False,
)
executions_app = typer.Typer(
    help="Executions: list, show, answer waits, resume, replay, cancel.", no_args_is_help=True
)
app.add_typer(executions_app, name="executions")
tokens_app = typer.Typer(
    help="Named tokens of the HTTP API and dashboard: the audit trail records which one answered.",
    no_args_is_help=True,
)
app.add_typer(tokens_app, name="tokens")

# emoji=False: a key such as `agent:child:0` is printed as written, never as an emoji
console = Console(width=None if Console().is_terminal else 160, soft_wrap=True, emoji=False)
errors = Console(stderr=True, soft_wrap=True, emoji=False)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.callback()
def _main(
    store_url: Annotated[
        str | None,
        typer.Option("--store-url", envvar="KITARU_STORE_URL", help="SQLAlchemy URL of the store."),
    ] = None,
    artifacts_url: Annotated[
        str | None,
        typer.Option(
            "--artifacts-url", envvar="KITARU_ARTIFACTS_URL", help="fsspec URL of the artifact store."
        ),
    ] = None,
) -> None:
    _config.configure(store_url=store_url, artifacts_url=artifacts_url)


def _client() -> Any:
    from kitaru_core._client import Client

    return Client()


def _checked(action: Callable[[], T]) -> T:
    """Run a client action; report a waiting execution (exit 3) or any other failure (exit 1)."""
    try:
        return action()
    except ExecutionWaitingError as waiting:
        errors.print(str(waiting), highlight=False, markup=False)
        raise typer.Exit(code=3) from None
    except KitaruError as error:
        errors.print("[bold red]error:[/] " + escape(str(error)), highlight=False)
        raise typer.Exit(code=1) from None


def _flow_output_to_stderr(as_json: bool) -> contextlib.AbstractContextManager[object]:
    """With `--json`, what a flow run here prints goes to stderr: stdout carries the JSON document alone.

    An agent framework may print while the flow runs (CrewAI's tracing notice, an example's own
    output); the command's `--json` output must still parse.
    """
    return contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _money(value: float | None) -> str:
    return "" if value is None else f"${value:.6f}"


STATUS_STYLES = {
    "running": "cyan",
    "waiting": "yellow",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
    "queued": "blue",
    "superseded": "dim",
    "interrupted": "bold red",
}


@executions_app.command("list")
def list_executions(
    status: Annotated[
        list[str] | None, typer.Option("--status", "-s", help="Keep this status (repeatable).")
    ] = None,
    flow: Annotated[str | None, typer.Option("--flow", "-f", help="Keep this flow or agent name.")] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Created at or after this time (ISO 8601; local time if no zone).")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(help="Created before this time (ISO 8601; local time if no zone).")
    ] = None,
    limit: Annotated[int, typer.Option(help="Rows per page.")] = 50,
    offset: Annotated[int, typer.Option(help="Rows to skip.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """List executions, newest first."""
    _check_statuses(status or [])
    rows = _checked(
        lambda: _client().list_executions(
            status=status or None, flow=flow, since=since, until=until, limit=limit, offset=offset
        )
    )
    if as_json:
        print(json.dumps([row.model_dump(mode="json") for row in rows], indent=2))
        return
    table = Table(title="Executions")
    table.add_column("id", no_wrap=True)
    for column in ("flow", "status", "runs", "created", "ended", "error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        status_text = row.status + ("" if row.status != "running" or row.runner_alive else " (runner gone)")
        table.add_row(
            Text(row.id),
            Text(row.flow_name),
            f"[{STATUS_STYLES.get(row.status, 'white')}]{status_text}[/]",
            str(row.run_count),
            _when(row.created_at),
            _when(row.ended_at),
            Text((row.error or "")[:60]),
        )
    console.print(table)


def _check_statuses(statuses: list[str]) -> None:
    """Refuse a `--status` that no execution can have, naming the valid ones (exit 2)."""
    from typing import get_args

    from kitaru_core._records import ExecutionStatus

    valid = list(get_args(ExecutionStatus))
    unknown = [value for value in statuses if value not in valid]
    if unknown:
        errors.print(
            f"[bold red]error:[/] unknown --status {escape(', '.join(unknown))}; valid values: {', '.join(valid)}",
            highlight=False,
        )
        raise typer.Exit(code=2)


@executions_app.command("show")
def show(
    execution_id: Annotated[str, typer.Argument(help="The execution id.")],
    as_json: JsonOption = False,
) -> None:
    """Show one execution as a timeline of its checkpoint calls, with tokens and cost."""
    detail = _checked(lambda: _client().get_execution(execution_id))
    if as_json:
        print(detail.model_dump_json(indent=2, by_alias=True))
        return
    print_timeline(detail)
    _print_retries(execution_id)


def _print_retries(execution_id: str) -> None:
    """The worker's retries of a failed execution (`@flow(retry=...)`), when there were any."""
    from kitaru_core._workers import retry_state

    state = _checked(lambda: retry_state(_client().store, execution_id))
    if state.retry_at_epoch_s is not None:
        console.print(
            f"attempts: {state.retries} failed; a worker retries it (attempt {state.retries + 1}) at "
            f"{_when(_from_epoch(state.retry_at_epoch_s))}",
            highlight=False,
        )
    elif state.retries:
        console.print(f"attempts: {state.retries + 1} (retried {state.retries} time(s) by a worker)", highlight=False)


def print_timeline(detail: Any, *, target: Console | None = None) -> None:
    """Print an `ExecutionDetail` as Rich tables (used by the CLI and the examples)."""
    out = target or console
    style = STATUS_STYLES.get(detail.status, "white")
    out.print(
        f"[bold]{escape(detail.id)}[/]  {escape(detail.flow_name)}  [{style}]{detail.status}[/]  run "
        f"{detail.run_count}" + (f"  replay of {escape(detail.replay_of)}" if detail.replay_of else ""),
        highlight=False,
        emoji=False,
    )
    if detail.error:
        out.print(f"[red]{escape(detail.error)}[/]", highlight=False, emoji=False)
    table = Table(title="Checkpoint calls")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("key", overflow="fold", ratio=1)
    for column in ("kind", "status", "source", "ms", "model", "tokens in/out", "cost"):
        table.add_column(column, no_wrap=True, justify="right" if column in {"ms", "cost"} else "left")
    for call in detail.calls:
        tokens = f"{call.input_tokens}/{call.output_tokens}" if call.input_tokens is not None else ""
        table.add_row(
            str(call.sequence),
            Text(call.key),
            call.kind,
            f"[{STATUS_STYLES.get(call.status, 'white')}]{call.status}[/]",
            call.source,
            f"{call.duration_s * 1000:.1f}",
            call.model_name or "",
            tokens,
            _money(call.cost_usd),
        )
    out.print(table)
    totals = detail.totals
    out.print(
        f"model calls {totals.model_calls}, tool calls {totals.tool_calls}; tokens paid "
        f"{totals.input_tokens}/{totals.output_tokens} ({_money(totals.cost_usd)}); reused in the latest run "
        f"{totals.reused_input_tokens}/{totals.reused_output_tokens} ({_money(totals.reused_cost_usd)})"
    )
    if getattr(detail, "budget", None) is not None:
        from kitaru_core._budgets import describe_budget

        out.print(escape(f"budget: {describe_budget(detail.budget)}"), highlight=False)
    for wait in detail.waits:
        answer = _preview(json.dumps(wait.answer)) if wait.status == "answered" else "—"
        by = f"  by {wait.answered_by}" if wait.answered_by else ""
        out.print(
            f"wait [bold]{escape(wait.name)}[/] ({wait.status}): {escape(_preview(wait.question))}  "
            f"answer: {escape(answer)}{escape(by)}",
            highlight=False,
            emoji=False,
        )
    if detail.output_preview is not None:
        out.print(f"output: {escape(detail.output_preview)}", highlight=False, emoji=False)
    print_metadata(detail, out)
    for event in detail.audit:
        what = f" {event.wait_name}" if event.wait_name else ""
        extra = "".join(f" {key}={value}" for key, value in event.details.items())
        out.print(
            escape(
                f"audit: {_when(event.at)} {event.action}{what} by {event.actor} ({event.actor_kind}){extra}"
            ),
            highlight=False,
            emoji=False,
        )


PREVIEW_CHARACTERS = 200


def _preview(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARACTERS else text[:PREVIEW_CHARACTERS] + "…"


@executions_app.command("waits")
def waits(
    execution_id: Annotated[str | None, typer.Argument(help="Only this execution's waits.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List pending waits with their questions and answer schemas."""
    pending = _checked(lambda: _client().pending_waits(execution_id))
    if as_json:
        print(json.dumps([wait.model_dump(mode="json", by_alias=True) for wait in pending], indent=2))
        return
    table = Table(title="Pending waits")
    for column in ("execution", "wait", "question", "schema"):
        table.add_column(column, overflow="fold")
    for wait in pending:
        table.add_row(Text(wait.execution_id), Text(wait.name), Text(wait.question), Text(json.dumps(wait.schema_)))
    console.print(table)


@executions_app.command("answer")
def answer(
    execution_id: Annotated[str, typer.Argument(help="The execution id.")],
    wait_name: Annotated[str, typer.Argument(help="The wait's name.")],
    value: Annotated[
        str | None,
        typer.Option("--value", help='The answer as JSON, e.g. true, "text", {"approved": false}.'),
    ] = None,
    approve: Annotated[
        bool, typer.Option("--approve", help="Shortcut for a tool approval: approve.")
    ] = False,
    deny: Annotated[bool, typer.Option("--deny", help="Shortcut for a tool approval: deny.")] = False,
    message: Annotated[str | None, typer.Option("--message", help="Message with --approve/--deny.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Answer a pending wait. The answer is validated against the wait's schema."""
    if sum([value is not None, approve, deny]) != 1:
        errors.print("error: give exactly one of --value JSON, --approve or --deny.")
        raise typer.Exit(code=2)
    if value is not None:
        try:
            parsed = json.loads(value)
        except ValueError as error:
            errors.print(
                f"error: --value must be JSON ({error}). Quote strings: --value '\"yes\"'; "
                "booleans are true/false."
            )
            raise typer.Exit(code=2) from None
    else:
        parsed = {"approved": approve, "message": message}
    wait = _checked(lambda: _client().answer(execution_id, wait_name, parsed))
    if as_json:
        print(wait.model_dump_json(indent=2, by_alias=True))
        return
    console.print(
        f"answered wait {wait.name} of {execution_id}: {json.dumps(wait.answer)}", markup=False, highlight=False
    )
    console.print(
        f"resume with: kitaru-adapters executions resume {shell_word(execution_id)} (or re-run the program)",
        markup=False,
        highlight=False,
    )


@executions_app.command("resume")
def resume(
    execution_id: Annotated[str, typer.Argument(help="The execution id.")],
    as_json: JsonOption = False,
    audited: Annotated[
        bool, typer.Option("--audited", hidden=True, help="The starting process recorded it already.")
    ] = False,
) -> None:
    """Resume an execution whose entry point is an importable @flow, in this process.

    Its `module:function` entry point is imported from the working directory first, as `python -m`
    does, then from the installed packages.
    """
    import_from_working_directory()
    with _flow_output_to_stderr(as_json):
        result = _checked(lambda: _client().resume(execution_id, audit=not audited))
    if as_json:
        from pydantic_core import to_json

        document = {"execution_id": execution_id, "status": "completed", "output": result}
        print(to_json(document, fallback=repr).decode())
        return
    console.print(f"execution {execution_id} completed", markup=False, highlight=False)
    console.print(repr(result), markup=False)


@executions_app.command("cancel")
def cancel(
    execution_id: Annotated[str, typer.Argument(help="The execution id.")], as_json: JsonOption = False
) -> None:
    """Cancel an execution (a live runner stops at its next checkpoint call)."""
    summary = _checked(lambda: _client().cancel(execution_id))
    if as_json:
        print(summary.model_dump_json(indent=2))
        return
    console.print(f"execution {execution_id}: {summary.status} (cancel requested)")


@executions_app.command("recover")
def recover(as_json: JsonOption = False) -> None:
    """Mark running executions whose process is gone as failed, so they can be resumed."""
    crashed = _checked(lambda: _client().recover())
    if as_json:
        print(json.dumps(crashed))
        return
    console.print(f"marked {len(crashed)} crashed execution(s) as failed: {', '.join(crashed) or 'none'}")


def _stored_revision(url: str) -> str | None:
    """The schema revision of the database at `url` before anything migrates it (`None`: none yet)."""
    if url.startswith("sqlite") and (":memory:" in url or url.rstrip("/") in ("sqlite:", "sqlite:/")):
        return None
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    from kitaru_core.migrations import current_revision

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return current_revision(connection)
    except SQLAlchemyError:
        return None  # unreachable or not a database yet: opening the store says what is wrong
    finally:
        engine.dispose()


@app.command("migrate")
def migrate(as_json: JsonOption = False) -> None:
    """Bring the store's schema to this version (Alembic migrations up to head) and print its revision.

    Every process that opens the store migrates it on first use; run this once when you deploy a
    new version (a Kubernetes Job, a systemd `ExecStartPre`) so workers and the server start on a
    current schema. Safe while other processes open the store (migrations take a lock). Exits 1
    with the reason when the store is unreachable or its schema is newer than this version.
    """
    from kitaru_core.migrations import SCHEMA_REVISION

    settings = _config.current_settings()
    url = settings.resolved_store_url()
    before = _stored_revision(url)
    store = _checked(lambda: _client().store)
    where = store.engine.url.render_as_string(hide_password=True)
    if as_json:
        print(json.dumps({"store": where, "revision_before": before, "revision": SCHEMA_REVISION}))
        return
    if before == SCHEMA_REVISION:
        console.print(Text(f"store {where}: schema revision {SCHEMA_REVISION}, already current"))
    else:
        console.print(Text(f"store {where}: schema revision {before or 'none'} -> {SCHEMA_REVISION}"))


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option("--name", help="The token's name, e.g. a person: ana.")],
    as_json: JsonOption = False,
) -> None:
    """Make a named token and print its secret (only this once; the store keeps a digest)."""
    from kitaru_core import _tokens
    from kitaru_core._client import os_user

    secret = _checked(lambda: _tokens.create_token(_client().store, name, created_by=os_user()[0]))
    if as_json:
        print(json.dumps({"name": name, "token": secret}))
        return
    console.print(f"Token {escape(name)} (shown only this once; send it as 'Authorization: Bearer TOKEN'):")
    console.print(f"  {secret}", highlight=False, markup=False)


@tokens_app.command("list")
def tokens_list(as_json: JsonOption = False) -> None:
    """List the named tokens (never their secrets)."""
    from kitaru_core import _tokens

    records = _checked(lambda: _tokens.list_tokens(_client().store))
    if as_json:
        print(json.dumps([record.__dict__ for record in records], indent=2))
        return
    table = Table(title="API tokens")
    for column in ("name", "created", "created by", "revoked"):
        table.add_column(column)
    for record in records:
        table.add_row(
            escape(record.name),
            _when(_from_epoch(record.created_at_epoch_s)),
            escape(record.created_by or ""),
            _when(_from_epoch(record.revoked_at_epoch_s)),
        )
    console.print(table)


@tokens_app.command("revoke")
def tokens_revoke(name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke a named token: the server refuses it from its next request on."""
    from kitaru_core import _tokens

    _checked(lambda: _tokens.revoke_token(_client().store, name))
    console.print(f"revoked token {escape(name)}")


def _from_epoch(epoch_s: float | None) -> datetime | None:
    from datetime import UTC

    return datetime.fromtimestamp(epoch_s, tz=UTC) if epoch_s is not None else None


@app.command("serve")
def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on. Reads need the token unless it is loopback.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8765,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="KITARU_SERVER_TOKEN",
            help="The API token (at least 16 characters); default: read from --token-file, or generated there.",
        ),
    ] = None,
    token_file: Annotated[
        Path, typer.Option(help="Where the generated token is kept (readable by its owner only).")
    ] = Path(".kitaru", "server-token"),
    reads_need_token: Annotated[
        bool, typer.Option("--reads-need-token", help="Require the token for reads on loopback too.")
    ] = False,
    poll_interval: Annotated[
        float, typer.Option(help="Seconds between checks of the store for live updates.")
    ] = 0.25,
    log_dir: Annotated[
        Path, typer.Option(help="Folder for the output of executions resumed in the background.")
    ] = Path(".kitaru", "logs"),
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            envvar="KITARU_SERVER_ALLOWED_HOSTS",
            help="Another host name requests may use (repeatable; the env var takes a comma-separated "
            "list; '*' allows any). Default: the listening address, 127.0.0.1, localhost, ::1.",
        ),
    ] = None,
    max_request_bytes: Annotated[
        int,
        typer.Option(
            envvar="KITARU_SERVER_MAX_REQUEST_BYTES", help="Largest request body (an answer) accepted."
        ),
    ] = 1024 * 1024,
) -> None:
    """Serve the dashboard and the HTTP API (needs the `server` extra)."""
    try:
        from kitaru_core import server
    except ImportError as error:
        from kitaru_core.errors import MissingDependencyError

        missing = (
            error
            if isinstance(error, MissingDependencyError)
            else MissingDependencyError(error.name or "fastapi", "server")
        )
        errors.print(f"[bold red]error:[/] {escape(str(missing))}", highlight=False)
        raise typer.Exit(code=1) from None

    from kitaru_core.server._settings import is_loopback

    created = False
    token_source = "--token / KITARU_SERVER_TOKEN"
    if token is None:
        token, created = _checked(lambda: server.load_or_create_token(token_file))
        token_source = str(token_file)
    open_reads = is_loopback(host) and not reads_need_token
    from kitaru_core.server._settings import DEFAULT_ALLOWED_HOSTS

    extra_hosts = [name.strip() for entry in allow_host or [] for name in entry.split(",") if name.strip()]
    allowed_hosts = tuple(dict.fromkeys([*DEFAULT_ALLOWED_HOSTS, host, *extra_hosts]))
    settings = _checked(
        lambda: server.ServerSettings(
            token=token,
            open_reads=open_reads,
            poll_interval_s=poll_interval,
            resume_log_dir=log_dir,
            allowed_hosts=allowed_hosts,
            max_request_bytes=max_request_bytes,
        )
    )
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}"
    if created:
        console.print(f"Generated an API token, saved in {token_file} (shown only this once):")
        console.print(f"  {token}", highlight=False)
        console.print(f"Dashboard (signs you in): {url}/login?token={token}", highlight=False)
    else:
        console.print(f"Dashboard: {url}/   (API token: {token_source})", highlight=False)
    console.print(
        f"API: {url}/api  ·  OpenAPI: {url}/openapi.json  ·  reads "
        + ("open on loopback" if open_reads else "need the token"),
        highlight=False,
    )
    console.print(f"Host names answered: {', '.join(allowed_hosts)} (--allow-host adds one)", highlight=False)
    _checked(lambda: server.serve(settings, host=host, port=port))


# -- workers -------------------------------------------------------------------------------------

workers_app = typer.Typer(help="Worker processes: which are alive, what they take and run.", no_args_is_help=True)
app.add_typer(workers_app, name="workers")


def _json_argument(text: str, what: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except ValueError as error:
        errors.print(f"[bold red]error:[/] {what} is not JSON: {escape(str(error))}", highlight=False)
        raise typer.Exit(code=2) from None
    if not isinstance(value, kind):
        errors.print(f"[bold red]error:[/] {what} must be a JSON {kind.__name__}, got {escape(text)}", highlight=False)
        raise typer.Exit(code=2)
    return value


@executions_app.command("submit")
def submit(
    entry_point: Annotated[str, typer.Argument(help="The @flow to run, as module:flow (importable by the workers).")],
    args: Annotated[str, typer.Option("--args", help="Positional arguments as a JSON list.")] = "[]",
    kwargs: Annotated[str, typer.Option("--kwargs", help="Keyword arguments as a JSON object.")] = "{}",
    queue: Annotated[str, typer.Option("--queue", "-q", help="The worker queue.")] = "default",
    execution_id: Annotated[
        str | None, typer.Option("--execution-id", help="Explicit id (an idempotency key); default: generated.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Queue an execution of a @flow for a worker (`kitaru-adapters worker`); print its id."""
    import_from_working_directory()  # `module:flow` beside the caller, as `python -m` would find it
    positional = _json_argument(args, "--args", list)
    keywords = _json_argument(kwargs, "--kwargs", dict)
    new_id = _checked(
        lambda: _client().submit(entry_point, *positional, execution_id=execution_id, queue=queue, **keywords)
    )
    if as_json:
        print(json.dumps({"execution_id": new_id, "queue": queue, "status": "queued"}))
        return
    console.print(f"queued execution {escape(new_id)} on queue {escape(queue)}", highlight=False)


@app.command("worker")
def worker(
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue",
            "-q",
            help="A queue to take from (repeatable; default: default); NAME:LIMIT runs at most LIMIT of it at once.",
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Executions run at once, each in its own process.")] = 1,
    imports: Annotated[
        list[str] | None, typer.Option("--import", help="A module the runs import first (repeatable).")
    ] = None,
    poll_interval_s: Annotated[float, typer.Option("--poll-interval", help="Seconds between looks for work.")] = 0.5,
    shutdown_timeout_s: Annotated[
        float, typer.Option("--shutdown-timeout", help="Seconds SIGTERM waits for runs to reach a checkpoint boundary.")
    ] = 30.0,
    prestart: Annotated[
        bool, typer.Option(help="Keep one process started ahead, imports done, so taking work costs no process start.")
    ] = True,
    lost_process_retries: Annotated[
        int,
        typer.Option(
            "--lost-process-retries",
            help="Times an execution whose process was killed by a signal (out of memory...) is resumed on its own.",
        ),
    ] = 2,
) -> None:
    """Run queued, crashed and answered executions until SIGTERM or Ctrl-C (then stop at checkpoint boundaries)."""
    import logging

    from kitaru_core._workers import Worker

    import_from_working_directory()  # `--import jobs` beside the worker, as its children (`python -m`) find it
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    runner = _checked(
        lambda: Worker(
            queue or ["default"],
            concurrency=concurrency,
            imports=imports or [],
            poll_interval_s=poll_interval_s,
            shutdown_timeout_s=shutdown_timeout_s,
            prestart=prestart,
            lost_process_retries=lost_process_retries,
        )
    )
    _checked(runner.run)


@workers_app.command("list")
def workers_list(as_json: JsonOption = False) -> None:
    """List the workers the store has seen: host, pid, queues, heartbeat, running executions."""
    from kitaru_core._workers import list_workers

    records = _checked(lambda: list_workers(_client().store))
    if as_json:
        print(json.dumps([{**record.__dict__, "state": record.state()} for record in records], indent=2))
        return
    table = Table(title="Workers")
    table.add_column("id", no_wrap=True)
    for column in ("state", "host", "pid", "queues", "concurrency", "running", "heartbeat", "started"):
        table.add_column(column, overflow="fold")
    state_styles = {"alive": "green", "stopped": "dim", "gone": "red"}
    for record in records:
        state = record.state()
        table.add_row(
            escape(record.id),
            f"[{state_styles[state]}]{state}[/]",
            escape(record.host),
            str(record.pid),
            escape(", ".join(record.queues)),
            str(record.concurrency),
            escape(", ".join(record.running)),
            _when(_from_epoch(record.heartbeat_at_epoch_s)),
            _when(_from_epoch(record.started_at_epoch_s)),
        )
    console.print(table)
def _size(size_bytes: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size_bytes < 1024 or unit == "MiB":
            return f"{size_bytes} {unit}" if unit == "B" else f"{size_bytes:.1f} {unit}"
        size_bytes /= 1024  # pyright: ignore[reportAssignmentType]
    return str(size_bytes)  # pragma: no cover - the loop always returns


def print_metadata(detail: Any, out: Console) -> None:
    """Print what `log()` attached to the execution and its calls, and how many artifacts it has."""
    if getattr(detail, "metadata", None):
        out.print(escape(f"metadata: {_preview(json.dumps(detail.metadata, ensure_ascii=False))}"), highlight=False, emoji=False)
    for call in detail.calls:
        if getattr(call, "metadata", None):
            text = _preview(json.dumps(call.metadata, ensure_ascii=False))
            out.print(escape(f"metadata of #{call.sequence} {call.key}: {text}"), highlight=False, emoji=False)
    artifacts = getattr(detail, "artifacts", [])
    if artifacts:
        names = len({artifact.name for artifact in artifacts})
        out.print(
            escape(
                f"artifacts: {names} name(s), {len(artifacts)} version(s): "
                f"kitaru-adapters executions artifacts {shell_word(detail.id)}"
            ),
            highlight=False,
            emoji=False,
        )


def shell_word(text: str) -> str:
    """`text` quoted for a POSIX shell when it needs it (ids may hold spaces, quotes, `$`...)."""
    import shlex

    return shlex.quote(text)


@executions_app.command("artifacts")
def artifacts(
    execution_id: Annotated[str, typer.Argument(help="The execution id.")],
    as_json: JsonOption = False,
) -> None:
    """List an execution's artifacts (`save`): name, version, media type, format, size, created."""
    rows = _checked(lambda: _client().list_artifacts(execution_id))
    if as_json:
        print(json.dumps([row.model_dump(mode="json") for row in rows], indent=2))
        return
    table = Table(title=f"Artifacts of {escape(execution_id)}")
    table.add_column("name", overflow="fold")
    table.add_column("version", justify="right", no_wrap=True)
    for column in ("media type", "format", "size", "created", "saved by"):
        table.add_column(column, overflow="fold", justify="right" if column == "size" else "left")
    for row in rows:
        table.add_row(
            escape(row.name),
            str(row.version),
            escape(row.media_type),
            escape(row.format),
            _size(row.size_bytes),
            _when(row.created_at),
            escape(row.call_key or "flow"),
        )
    console.print(table)
    if not rows:
        console.print(
            "No artifacts: save one inside the execution with kitaru_core.save(name, value).", highlight=False
        )


def import_from_working_directory() -> None:
    """Put the working directory first on the import path, as `python -m` does (the console script does not)."""
    import os
    import sys

    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


from kitaru_core import _cli_replay  # noqa: E402  # registers `executions replay` and `executions diff`

_ = _cli_replay


def main() -> None:
    """Entry point of the `kitaru-adapters` console script."""
    app()


if __name__ == "__main__":
    main()
