"""Execution retries: how many times a worker retried a failed execution, and when it retries next.

Revision ID: 0010
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from kitaru_core.migrations._columns import drop_columns

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("kitaru_executions") as batch:
        batch.add_column(sa.Column("retry_attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("retry_at_epoch_s", sa.Float, nullable=True))


def downgrade() -> None:
    drop_columns("kitaru_executions", "retry_attempts", "retry_at_epoch_s")
