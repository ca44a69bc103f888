"""Lease identity: the holder's host id (boot id + pid namespace) and process start time.

Revision ID: 0005
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from kitaru_core.migrations._columns import drop_columns

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("kitaru_executions") as batch:
        batch.add_column(sa.Column("lease_host_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("lease_process_start_ticks", sa.BigInteger, nullable=True))


def downgrade() -> None:
    drop_columns("kitaru_executions", "lease_process_start_ticks", "lease_host_id")
