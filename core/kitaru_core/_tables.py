"""The store's tables, as SQLAlchemy Core tables on one MetaData (migrations live in `migrations/`)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

SCHEMA_REVISION = "0010"

metadata = MetaData()

executions = Table(
    "kitaru_executions",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("flow_name", String(500), nullable=False),
    Column("entry_point", String(1000), nullable=True),
    Column("inputs_fingerprint", String(64), nullable=True),
    Column("inputs_format", String(500), nullable=True),
    Column("inputs", LargeBinary, nullable=True),
    Column("status", String(16), nullable=False),
    Column("output_format", String(500), nullable=True),
    Column("output", LargeBinary, nullable=True),
    Column("output_ref", String(64), nullable=True),
    Column("error_type", String(500), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("error_traceback", Text, nullable=True),
    Column("run_count", Integer, nullable=False, default=0),
    Column("replay_of", String(200), nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_host", String(255), nullable=True),
    Column("lease_pid", Integer, nullable=True),
    # The lease holder's identity beyond host name and pid (revision 0005): the host id (Linux boot id
    # and pid namespace) and the process start time, so pid reuse and containers sharing a host name
    # are told apart.
    Column("lease_host_id", String(255), nullable=True),
    Column("lease_process_start_ticks", BigInteger, nullable=True),
    Column("lease_expires_at_epoch_s", Float, nullable=True),
    Column("created_at_epoch_s", Float, nullable=False),
    Column("updated_at_epoch_s", Float, nullable=False),
    Column("ended_at_epoch_s", Float, nullable=True),
    # The queue a worker takes it from (revision 0006); executions not submitted are in "default".
    Column("queue", String(200), nullable=False, server_default="default"),
    # JSON object `log()` attached to the execution outside any checkpoint call (revision 0007).
    Column("metadata", Text, nullable=True),
    # Execution retries by a worker (revision 0010): failed attempts retried so far, and when the
    # next retry of a `failed` execution is due (`None`: none scheduled).
    Column("retry_attempts", Integer, nullable=False, server_default="0"),
    Column("retry_at_epoch_s", Float, nullable=True),
    Index("ix_kitaru_executions_resume", "flow_name", "inputs_fingerprint", "status"),
    Index("ix_kitaru_executions_queue", "status", "queue", "created_at_epoch_s"),
)

# What the executions list (CLI, `Client.list_executions`, the HTTP API and the dashboard) sorts and
# filters by, newest first with the id as tie-break, exactly as the list's ORDER BY (revision 0008;
# `ix_kitaru_executions_status_created` replaces 0007's `ix_kitaru_executions_status`): a page of 50
# reads 50 index entries instead of scanning and sorting the table. Workers take running and waiting
# executions oldest update first (`ix_kitaru_executions_status_updated`).
Index("ix_kitaru_executions_created", executions.c.created_at_epoch_s.desc(), executions.c.id)
Index(
    "ix_kitaru_executions_status_created",
    executions.c.status,
    executions.c.created_at_epoch_s.desc(),
    executions.c.id,
)
Index(
    "ix_kitaru_executions_flow_created",
    executions.c.flow_name,
    executions.c.created_at_epoch_s.desc(),
    executions.c.id,
)
Index(
    "ix_kitaru_executions_status_updated",
    executions.c.status,
    executions.c.updated_at_epoch_s,
    executions.c.id,
)

checkpoint_calls = Table(
    "kitaru_checkpoint_calls",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "execution_id",
        String(200),
        ForeignKey("kitaru_executions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("call_key", Text, nullable=False),
    Column("name", String(500), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("fingerprint", String(64), nullable=True),
    Column("output_format", String(500), nullable=True),
    Column("output", LargeBinary, nullable=True),
    Column("output_ref", String(64), nullable=True),
    Column("output_size_bytes", Integer, nullable=True),
    Column("error_type", String(500), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("error_traceback", Text, nullable=True),
    Column("attempts", Integer, nullable=False, default=1),
    Column("run_number", Integer, nullable=False),
    Column("last_served_run", Integer, nullable=True),
    Column("started_at_epoch_s", Float, nullable=False),
    Column("ended_at_epoch_s", Float, nullable=False),
    Column("model_name", String(500), nullable=True),
    Column("input_tokens", Integer, nullable=True),
    Column("output_tokens", Integer, nullable=True),
    Column("cost_usd", Float, nullable=True),
    Column("details", Text, nullable=True),
    # JSON object `log()` attached to the call, written with its record (revision 0007).
    Column("metadata", Text, nullable=True),
    Index("ix_kitaru_checkpoint_calls_execution", "execution_id", "call_key"),
)

waits = Table(
    "kitaru_waits",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "execution_id",
        String(200),
        ForeignKey("kitaru_executions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", String(500), nullable=False),
    Column("call_key", Text, nullable=False),
    Column("question", Text, nullable=False),
    Column("schema", Text, nullable=False),
    Column("details", Text, nullable=True),
    Column("status", String(16), nullable=False),
    Column("answer", Text, nullable=True),
    Column("refused_answers", Text, nullable=True),
    Column("created_at_epoch_s", Float, nullable=False),
    Column("answered_at_epoch_s", Float, nullable=True),
    Column("answered_by", String(300), nullable=True),
    UniqueConstraint("execution_id", "name", name="uq_kitaru_waits_execution_name"),
)

# Named API tokens of the HTTP server: only a SHA-256 digest of each secret is kept.
api_tokens = Table(
    "kitaru_api_tokens",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("secret_sha256", String(64), nullable=False, unique=True),
    Column("created_at_epoch_s", Float, nullable=False),
    Column("created_by", String(300), nullable=True),
    Column("revoked_at_epoch_s", Float, nullable=True),
)

# Who answered, resumed, cancelled or replayed an execution, and when.
audit_events = Table(
    "kitaru_audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "execution_id",
        String(200),
        ForeignKey("kitaru_executions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("action", String(16), nullable=False),
    Column("wait_name", String(500), nullable=True),
    Column("actor", String(300), nullable=False),
    Column("actor_kind", String(16), nullable=False),
    Column("details", Text, nullable=True),
    Column("at_epoch_s", Float, nullable=False),
    Index("ix_kitaru_audit_events_execution", "execution_id", "at_epoch_s"),
)

# Named, versioned artifacts of an execution (`save`/`load`, revision 0007). `save_key` is the SHA-256
# of where the `save` happened (scope or call key, name, occurrence): a `save` that runs again at the
# same place (a call re-run after a crash, flow code on resume) finds its row instead of adding a version.
artifacts = Table(
    "kitaru_artifacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "execution_id",
        String(200),
        ForeignKey("kitaru_executions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("save_key", String(64), nullable=False),
    Column("call_key", Text, nullable=True),
    Column("media_type", String(100), nullable=False),
    Column("value_format", String(500), nullable=False),
    Column("value", LargeBinary, nullable=True),
    Column("value_ref", String(64), nullable=True),
    Column("value_size_bytes", Integer, nullable=False),
    Column("run_number", Integer, nullable=False),
    Column("created_at_epoch_s", Float, nullable=False),
    UniqueConstraint("execution_id", "name", "version", name="uq_kitaru_artifacts_version"),
    UniqueConstraint("execution_id", "save_key", name="uq_kitaru_artifacts_save_key"),
)

# LangGraph's own checkpoints, kept by `kitaru_adapters.langgraph.KitaruSaver` (migration 0004).

langgraph_checkpoints = Table(
    "langgraph_checkpoints",
    metadata,
    Column("thread_id", String(255), primary_key=True),
    Column("checkpoint_ns", String(1024), primary_key=True),
    Column("checkpoint_id", String(64), primary_key=True),
    Column("parent_checkpoint_id", String(64), nullable=True),
    Column("checkpoint_type", String(32), nullable=False),
    Column("checkpoint", LargeBinary, nullable=False),
    Column("metadata_type", String(32), nullable=False),
    Column("metadata", LargeBinary, nullable=False),
)

langgraph_checkpoint_writes = Table(
    "langgraph_checkpoint_writes",
    metadata,
    Column("thread_id", String(255), primary_key=True),
    Column("checkpoint_ns", String(1024), primary_key=True),
    Column("checkpoint_id", String(64), primary_key=True),
    Column("task_id", String(64), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("task_path", String(1024), nullable=False, default=""),
    Column("channel", String(255), nullable=False),
    Column("value_type", String(32), nullable=False),
    Column("value", LargeBinary, nullable=False),
)


# Worker processes (revision 0006): who is taking executions from which queues, and whether alive.
workers = Table(
    "kitaru_workers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("host_id", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("queues", Text, nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("running", Text, nullable=False, server_default="[]"),
    Column("started_at_epoch_s", Float, nullable=False),
    Column("heartbeat_at_epoch_s", Float, nullable=False),
    Column("stopped_at_epoch_s", Float, nullable=True),
)
