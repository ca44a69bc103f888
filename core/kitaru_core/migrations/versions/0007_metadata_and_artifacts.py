"""Metadata and artifacts: `log()` metadata on executions and checkpoint calls, named versioned artifacts.

Revision ID: 0007
Revises: 0006
"""

import sqlite3

import sqlalchemy as sa
from alembic import op

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


def _drop_metadata_column(table: str) -> None:
    """Drop `metadata` without recreating the table where the database can.

    SQLite's batch mode recreates a table to drop a column, and dropping `kitaru_executions` with
    foreign keys on deletes every checkpoint call and wait through their `ON DELETE CASCADE`.
    SQLite 3.35 and later drop a column in place, as PostgreSQL does.
    """
    bind = op.get_bind()
    if bind.dialect.name != "sqlite" or sqlite3.sqlite_version_info >= (3, 35):
        op.execute(f'ALTER TABLE {table} DROP COLUMN "metadata"')
        return
    with op.batch_alter_table(table) as batch:  # pragma: no cover - SQLite older than 3.35
        batch.drop_column("metadata")


def downgrade() -> None:
    op.drop_table("kitaru_artifacts")
    _drop_metadata_column("kitaru_checkpoint_calls")
    _drop_metadata_column("kitaru_executions")
