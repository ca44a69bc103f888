"""Lease identity: the holder's host id (boot id + pid namespace) and process start time.

Revision ID: 0005
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("kitaru_executions") as batch:
        batch.add_column(sa.Column("lease_host_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("lease_process_start_ticks", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("kitaru_executions") as batch:
        batch.drop_column("lease_process_start_ticks")
        batch.drop_column("lease_host_id")
