"""Metadata and artifacts: `log()` metadata on executions and checkpoint calls, named versioned artifacts.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from kitaru_core.migrations._columns import drop_columns

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("kitaru_executions") as batch:
        batch.add_column(sa.Column("metadata", sa.Text, nullable=True))
    with op.batch_alter_table("kitaru_checkpoint_calls") as batch:
        batch.add_column(sa.Column("metadata", sa.Text, nullable=True))
    op.create_table(
        "kitaru_artifacts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "execution_id",
            sa.String(200),
            sa.ForeignKey("kitaru_executions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("save_key", sa.String(64), nullable=False),
        sa.Column("call_key", sa.Text, nullable=True),
        sa.Column("media_type", sa.String(100), nullable=False),
        sa.Column("value_format", sa.String(500), nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=True),
        sa.Column("value_ref", sa.String(64), nullable=True),
        sa.Column("value_size_bytes", sa.Integer, nullable=False),
        sa.Column("run_number", sa.Integer, nullable=False),
        sa.Column("created_at_epoch_s", sa.Float, nullable=False),
        sa.UniqueConstraint("execution_id", "name", "version", name="uq_kitaru_artifacts_version"),
        sa.UniqueConstraint("execution_id", "save_key", name="uq_kitaru_artifacts_save_key"),
    )


def downgrade() -> None:
    op.drop_table("kitaru_artifacts")
    drop_columns("kitaru_checkpoint_calls", "metadata")
    drop_columns("kitaru_executions", "metadata")
