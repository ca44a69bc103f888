"""Named API tokens and the audit trail: who answered, resumed, cancelled or replayed, and when.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from kitaru_core.migrations._columns import drop_columns

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("kitaru_waits", sa.Column("answered_by", sa.String(300)))
    op.create_table(
        "kitaru_api_tokens",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at_epoch_s", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(300)),
        sa.Column("revoked_at_epoch_s", sa.Float),
    )
    op.create_table(
        "kitaru_audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "execution_id",
            sa.String(200),
            sa.ForeignKey("kitaru_executions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("wait_name", sa.String(500)),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("details", sa.Text),
        sa.Column("at_epoch_s", sa.Float, nullable=False),
    )
    op.create_index("ix_kitaru_audit_events_execution", "kitaru_audit_events", ["execution_id", "at_epoch_s"])


def downgrade() -> None:
    op.drop_index("ix_kitaru_audit_events_execution", table_name="kitaru_audit_events")
    op.drop_table("kitaru_audit_events")
    op.drop_table("kitaru_api_tokens")
    drop_columns("kitaru_waits", "answered_by")
