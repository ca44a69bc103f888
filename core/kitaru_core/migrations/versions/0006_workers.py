"""Workers: the executions' queue, the `queued` status's index, and the workers table.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from kitaru_core.migrations._columns import drop_columns

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("kitaru_executions") as batch:
        batch.add_column(sa.Column("queue", sa.String(200), nullable=False, server_default="default"))
    op.create_index("ix_kitaru_executions_queue", "kitaru_executions", ["status", "queue", "created_at_epoch_s"])
    op.create_table(
        "kitaru_workers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("host_id", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("queues", sa.Text, nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("running", sa.Text, nullable=False, server_default="[]"),
        sa.Column("started_at_epoch_s", sa.Float, nullable=False),
        sa.Column("heartbeat_at_epoch_s", sa.Float, nullable=False),
        sa.Column("stopped_at_epoch_s", sa.Float, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("kitaru_workers")
    op.drop_index("ix_kitaru_executions_queue", table_name="kitaru_executions")
    drop_columns("kitaru_executions", "queue")
