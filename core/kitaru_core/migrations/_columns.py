"""Helpers the migration scripts share."""

from __future__ import annotations

import sqlite3

from alembic import op


def drop_columns(table: str, *columns: str) -> None:
    """Drop `columns` from `table` without recreating the table where the database can.

    SQLite's batch mode recreates a table to drop a column, and dropping `kitaru_executions` with
    foreign keys on deletes every checkpoint call and wait through their `ON DELETE CASCADE`.
    PostgreSQL and SQLite 3.35 or later drop a column in place. Drop the column's indexes first.

    Args:
        table: The table's name.
        columns: The names of the columns to drop.
    """
    bind = op.get_bind()
    if bind.dialect.name != "sqlite" or sqlite3.sqlite_version_info >= (3, 35):
        quote = bind.dialect.identifier_preparer.quote
        for column in columns:
            op.execute(f"ALTER TABLE {quote(table)} DROP COLUMN {quote(column)}")
        return
    with op.batch_alter_table(table) as batch:  # pragma: no cover - SQLite older than 3.35
        for column in columns:
            batch.drop_column(column)
