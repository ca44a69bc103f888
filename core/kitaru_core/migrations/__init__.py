"""Alembic migrations of the kitaru_core store (run automatically when a store is opened).

`upgrade_database` brings any SQLAlchemy engine's database to the schema this version uses; the
store calls it when it opens, and so does `kitaru_adapters.langgraph.KitaruSaver` for its own
engine. The tables are declared once, as SQLAlchemy Core tables (`tables`); the saver's tables are
`langgraph_checkpoints` and `langgraph_checkpoint_writes`.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from kitaru_core import _tables as tables
from kitaru_core.errors import MigrationError, StoreError

__all__ = [
    "SCHEMA_REVISION",
    "current_revision",
    "langgraph_checkpoint_writes",
    "langgraph_checkpoints",
    "tables",
    "upgrade_database",
]

SCHEMA_REVISION = tables.SCHEMA_REVISION
langgraph_checkpoints = tables.langgraph_checkpoints
langgraph_checkpoint_writes = tables.langgraph_checkpoint_writes

_POSTGRES_MIGRATION_LOCK = 7_160_114_161  # any constant: migrations of one database wait for each other


def current_revision(connection: Connection) -> str | None:
    """The schema revision of the database `connection` reaches (`None`: no kitaru tables yet)."""
    if not inspect(connection).has_table("kitaru_alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM kitaru_alembic_version")).scalar()


def _lock(connection: Connection) -> None:
    """Keep concurrent first opens of one database from migrating it at the same time."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_MIGRATION_LOCK})
    elif connection.dialect.name == "sqlite":
        driver: object = connection.connection.driver_connection
        if not getattr(driver, "in_transaction", True):
            connection.exec_driver_sql("BEGIN IMMEDIATE")  # the store's engine has begun one already


def upgrade_database(engine: Engine, *, description: str | None = None) -> None:
    """Bring the database of `engine` to this version's schema (all Alembic migrations up to head).

    Cheap when the database is current (one query). Safe when several processes open a new
    database at the same time: they migrate one after the other.

    Args:
        engine: The database's engine.
        description: How error messages name the database (default: its URL without password).

    Raises:
        MigrationError: The schema is newer than this code, or a migration failed.
        StoreError: The database cannot be reached.
    """
    where = description or engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as connection:
            revision = current_revision(connection)
            connection.rollback()
        if revision == SCHEMA_REVISION:
            return
        if revision is not None and revision > SCHEMA_REVISION:
            raise MigrationError(
                f"The store at {where} has schema revision {revision}, newer than this version of "
                f"kitaru-adapters understands ({SCHEMA_REVISION}). Upgrade kitaru-adapters."
            )
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent))
        with engine.begin() as connection:
            _lock(connection)
            if current_revision(connection) == SCHEMA_REVISION:
                return
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except MigrationError:
        raise
    except SQLAlchemyError as error:
        raise StoreError(f"Cannot open the store at {where}: {error}") from error
    except Exception as error:  # alembic reports failures with its own exception types
        raise MigrationError(f"Migrating the store at {where} failed: {error}") from error
