"""Initial schema: executions, checkpoint calls, waits.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kitaru_executions",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("flow_name", sa.String(500), nullable=False),
        sa.Column("entry_point", sa.String(1000)),
        sa.Column("inputs_fingerprint", sa.String(64)),
        sa.Column("inputs_format", sa.String(500)),
        sa.Column("inputs", sa.LargeBinary),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("output_format", sa.String(500)),
        sa.Column("output", sa.LargeBinary),
        sa.Column("output_ref", sa.String(64)),
        sa.Column("error_type", sa.String(500)),
        sa.Column("error_message", sa.Text),
        sa.Column("error_traceback", sa.Text),
        sa.Column("run_count", sa.Integer, nullable=False),
        sa.Column("replay_of", sa.String(200)),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_host", sa.String(255)),
        sa.Column("lease_pid", sa.Integer),
        sa.Column("lease_expires_at_epoch_s", sa.Float),
        sa.Column("created_at_epoch_s", sa.Float, nullable=False),
        sa.Column("updated_at_epoch_s", sa.Float, nullable=False),
        sa.Column("ended_at_epoch_s", sa.Float),
    )
    op.create_index(
        "ix_kitaru_executions_resume", "kitaru_executions", ["flow_name", "inputs_fingerprint", "status"]
    )
    op.create_index("ix_kitaru_executions_status", "kitaru_executions", ["status", "created_at_epoch_s"])
    op.create_table(
        "kitaru_checkpoint_calls",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "execution_id",
            sa.String(200),
            sa.ForeignKey("kitaru_executions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("call_key", sa.Text, nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("fingerprint", sa.String(64)),
        sa.Column("output_format", sa.String(500)),
        sa.Column("output", sa.LargeBinary),
        sa.Column("output_ref", sa.String(64)),
        sa.Column("output_size_bytes", sa.Integer),
        sa.Column("error_type", sa.String(500)),
        sa.Column("error_message", sa.Text),
        sa.Column("error_traceback", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("run_number", sa.Integer, nullable=False),
        sa.Column("last_served_run", sa.Integer),
        sa.Column("started_at_epoch_s", sa.Float, nullable=False),
        sa.Column("ended_at_epoch_s", sa.Float, nullable=False),
        sa.Column("model_name", sa.String(500)),
        sa.Column("input_tokens", sa.Integer),
        sa.Column("output_tokens", sa.Integer),
        sa.Column("cost_usd", sa.Float),
        sa.Column("details", sa.Text),
    )
    op.create_index(
        "ix_kitaru_checkpoint_calls_execution", "kitaru_checkpoint_calls", ["execution_id", "call_key"]
    )
    op.create_table(
        "kitaru_waits",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "execution_id",
            sa.String(200),
            sa.ForeignKey("kitaru_executions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("call_key", sa.Text, nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("schema", sa.Text, nullable=False),
        sa.Column("details", sa.Text),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("answer", sa.Text),
        sa.Column("refused_answers", sa.Text),
        sa.Column("created_at_epoch_s", sa.Float, nullable=False),
        sa.Column("answered_at_epoch_s", sa.Float),
        sa.UniqueConstraint("execution_id", "name", name="uq_kitaru_waits_execution_name"),
    )


def downgrade() -> None:
    op.drop_table("kitaru_waits")
    op.drop_table("kitaru_checkpoint_calls")
    op.drop_table("kitaru_executions")
