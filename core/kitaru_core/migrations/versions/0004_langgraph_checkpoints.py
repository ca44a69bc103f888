"""LangGraph checkpoints: the tables of `kitaru_adapters.langgraph.KitaruSaver`.

Earlier versions of the saver created these tables themselves (`create_all`); a database that
already has them keeps them as they are.

Revision ID: 0004
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "langgraph_checkpoints" not in existing:
        op.create_table(
            "langgraph_checkpoints",
            sa.Column("thread_id", sa.String(255), primary_key=True),
            sa.Column("checkpoint_ns", sa.String(1024), primary_key=True),
            sa.Column("checkpoint_id", sa.String(64), primary_key=True),
            sa.Column("parent_checkpoint_id", sa.String(64)),
            sa.Column("checkpoint_type", sa.String(32), nullable=False),
            sa.Column("checkpoint", sa.LargeBinary, nullable=False),
            sa.Column("metadata_type", sa.String(32), nullable=False),
            sa.Column("metadata", sa.LargeBinary, nullable=False),
        )
    if "langgraph_checkpoint_writes" not in existing:
        op.create_table(
            "langgraph_checkpoint_writes",
            sa.Column("thread_id", sa.String(255), primary_key=True),
            sa.Column("checkpoint_ns", sa.String(1024), primary_key=True),
            sa.Column("checkpoint_id", sa.String(64), primary_key=True),
            sa.Column("task_id", sa.String(64), primary_key=True),
            sa.Column("idx", sa.Integer, primary_key=True),
            sa.Column("task_path", sa.String(1024), nullable=False),
            sa.Column("channel", sa.String(255), nullable=False),
            sa.Column("value_type", sa.String(32), nullable=False),
            sa.Column("value", sa.LargeBinary, nullable=False),
        )


def downgrade() -> None:
    op.drop_table("langgraph_checkpoint_writes")
    op.drop_table("langgraph_checkpoints")
