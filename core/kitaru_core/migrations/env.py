"""Alembic environment: runs on the connection kitaru_core hands over in `config.attributes`."""

from alembic import context

from kitaru_core._tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table="kitaru_alembic_version")
with context.begin_transaction():
    context.run_migrations()
