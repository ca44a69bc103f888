"""HTTP API of replay (with overrides and inputs) and of the call-by-call diff of two executions."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query
from pydantic import BaseModel, Field

from kitaru_core import Client
from kitaru_core._diff import ExecutionDiff
from kitaru_core._ids import MAX_ID_CHARACTERS
from kitaru_core._workers import live_workers_for
from kitaru_core.errors import InvalidAnswerError
from kitaru_core.server._app import ApiError, ErrorBody, ExecutionId, Who, valid_id
from kitaru_core.server._settings import ServerSettings

PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
MAX_CALL_KEY_CHARACTERS = 2000


class ReplayRequest(BaseModel):
    """A replay: which call runs live again, what to override, and whether to run it now.

    Attributes:
        from_call: The first call to run live again: its key (`"price:0"`) or its `sequence` (`#`
            in the timeline); `null`: reuse every completed call. Waits answered before it keep
            their answers; later ones are asked again.
        overrides: New values by call key or by wait name: a plain `@checkpoint` call's output; an
            adapter's model request: its response, a string (the text) or `{"text": ..., "tool_calls":
            [{"name": ..., "arguments": {...}}]}`; an adapter's tool call: its result as any JSON value;
            a wait: its answer, checked against the wait's schema (422). Other adapter calls (a
            handoff, a flow step) take no override (409).
        inputs: New values of some of the flow's inputs, by parameter name (names are checked against
            the stored inputs; values are passed to the flow as given).
        new_execution_id: The new execution's id; default: generated.
        run: Run it now in a background process (`true`), or only prepare it `queued` for a worker.
        queue: The worker queue of the replay (a live worker of it runs the replay, `run: false` or not).
    """

    from_call: Annotated[str, Field(max_length=MAX_CALL_KEY_CHARACTERS, pattern=PRINTABLE)] | Annotated[
        int, Field(ge=0, le=2**31)
    ] | None = Field(default=None, description="Key or sequence of the first call to run live again.")
    overrides: dict[str, Any] = Field(
        default_factory=dict[str, Any], description="New outputs by call key, or new answers by wait name."
    )
    inputs: dict[str, Any] = Field(default_factory=dict[str, Any], description="New flow inputs by parameter name.")
    new_execution_id: str | None = Field(
        default=None, max_length=MAX_ID_CHARACTERS, pattern=PRINTABLE, description="The new execution's id."
    )
    run: bool = Field(default=True, description="Run it now (by a live worker of `queue` if there is one, else in a background process); false: only queue it.")
    queue: str = Field(
        default="default", max_length=MAX_ID_CHARACTERS, pattern=PRINTABLE, description="Worker queue of the replay."
    )


class ReplayStarted(BaseModel):
    """The new execution of a replay.

    Attributes:
        execution_id: The new execution.
        replay_of: The execution replayed.
        status: `running` (a background process runs it) or `queued` (a worker takes it).
        pid: The background process, when it runs now.
        log_path: Where that process's output goes.
    """

    execution_id: str
    replay_of: str
    status: Literal["running", "queued"]
    pid: int | None = None
    log_path: str | None = None


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:80] or "execution"


def add_replay_routes(
    app: FastAPI, client: Client, settings: ServerSettings, *, reads: list[Any], writes: list[Any]
) -> None:
    """Add `POST /api/executions/{execution_id}/replay` and `GET /api/diff` to `app`."""
    error_body = ErrorBody
    not_found: dict[int | str, dict[str, Any]] = {
        404: {"model": error_body, "description": "No such execution, or no call with that sequence."}
    }

    @app.post(
        "/api/executions/{execution_id}/replay",
        dependencies=writes,
        tags=["executions"],
        status_code=202,
        responses={
            **not_found,
            409: {
                "model": error_body,
                "description": "An override or input names nothing the execution has, does not fit its call "
                "(a model request's is not a model response) or targets an adapter call that takes none (a "
                "handoff, a flow step), or cannot be stored; the new id exists; or the execution is not "
                "resumable from here.",
            },
            413: {"model": error_body, "description": "The request body is larger than the server accepts."},
            422: {
                "model": error_body,
                "description": "The body does not match the schema, an overridden answer does not satisfy "
                "its wait's schema, or an id is not valid.",
            },
        },
    )
    def replay(  # pyright: ignore[reportUnusedFunction]
        execution_id: ExecutionId, body: ReplayRequest, actor: Who
    ) -> ReplayStarted:
        """Start a new execution reusing another's stored calls up to a chosen call, with overrides.

        Calls before `from_call` are served from the store, the chosen call and later ones run live.
        Everything is checked before the new execution is created: a refused replay creates
        nothing. With `run: false`, or when a live worker serves `queue`, it is stored `queued` for a
        worker (the server runs no flow code); otherwise (`run: true`, the default, and no live
        worker) a background process runs it (its entry point must be an importable `@flow`). Both executions'
        audit trails record the token's name. Compare the two with `GET /api/diff`.
        """
        source_id = valid_id(execution_id, "execution_id")
        try:
            return _replay(source_id, body, actor)
        except InvalidAnswerError as error:  # the wait is not touched: say so, not "it stays pending"
            raise ApiError(
                422,
                "InvalidAnswerError",
                f"The answer given for wait {error.wait_name!r} does not satisfy its schema; no replay of "
                f"{source_id!r} was created. Change it and replay again.",
                error.problems,
            ) from error

    def _replay(source_id: str, body: ReplayRequest, actor: tuple[str, str]) -> ReplayStarted:
        overrides = body.overrides or None
        inputs = body.inputs or None
        # With a live worker on the queue the server runs no flow code: the replay is queued for it.
        if not body.run or live_workers_for(client.store, body.queue):
            new_id = client.replay(
                source_id,
                from_call=body.from_call,
                overrides=overrides,
                inputs=inputs,
                new_execution_id=body.new_execution_id,
                run=False,
                queue=body.queue,
                actor=actor,
            )
            return ReplayStarted(execution_id=new_id, replay_of=source_id, status="queued")
        log_path = settings.resume_log_dir / f"replay-{_file_name(source_id)}-{int(time.time() * 1000)}.log"
        new_id, pid = client.replay_in_background(
            source_id,
            from_call=body.from_call,
            overrides=overrides,
            inputs=inputs,
            new_execution_id=body.new_execution_id,
            log_path=log_path,
            actor=actor,
        )
        return ReplayStarted(
            execution_id=new_id, replay_of=source_id, status="running", pid=pid, log_path=str(log_path)
        )

    @app.get("/api/diff", dependencies=reads, tags=["executions"], responses=not_found)
    def diff(  # pyright: ignore[reportUnusedFunction]
        a: Annotated[str, Query(description="The first execution (e.g. the original).", max_length=MAX_ID_CHARACTERS, pattern=PRINTABLE)],
        b: Annotated[str, Query(description="The second execution (e.g. its replay).", max_length=MAX_ID_CHARACTERS, pattern=PRINTABLE)],
    ) -> ExecutionDiff:
        """Two executions lined up call by call: same, changed, new or missing, outputs, tokens and cost."""
        return client.diff(a, b)
