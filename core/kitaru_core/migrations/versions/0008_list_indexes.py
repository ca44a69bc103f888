"""Indexes for the executions list: newest first, by status, by flow; running/waiting by update time.

The list (CLI, `Client.list_executions`, HTTP API, dashboard) orders by `created_at_epoch_s DESC, id`:
each index ends with exactly that order, so a page reads its rows from the index instead of sorting
the table. `ix_kitaru_executions_status_created` replaces `ix_kitaru_executions_status` (a prefix of it).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_CREATED_DESC = sa.text("created_at_epoch_s DESC")


def upgrade() -> None:
    op.create_index("ix_kitaru_executions_created", "kitaru_executions", [_CREATED_DESC, "id"])
    op.create_index(
        "ix_kitaru_executions_status_created", "kitaru_executions", ["status", _CREATED_DESC, "id"]
    )
    op.create_index(
        "ix_kitaru_executions_flow_created", "kitaru_executions", ["flow_name", _CREATED_DESC, "id"]
    )
    op.create_index(
        "ix_kitaru_executions_status_updated", "kitaru_executions", ["status", "updated_at_epoch_s", "id"]
    )
    op.drop_index("ix_kitaru_executions_status", table_name="kitaru_executions")


def downgrade() -> None:
    op.create_index("ix_kitaru_executions_status", "kitaru_executions", ["status", "created_at_epoch_s"])
    op.drop_index("ix_kitaru_executions_status_updated", table_name="kitaru_executions")
    op.drop_index("ix_kitaru_executions_flow_created", table_name="kitaru_executions")
    op.drop_index("ix_kitaru_executions_status_created", table_name="kitaru_executions")
    op.drop_index("ix_kitaru_executions_created", table_name="kitaru_executions")
