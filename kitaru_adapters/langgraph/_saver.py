"""`KitaruSaver`: LangGraph checkpoints in a SQLAlchemy database (SQLite or PostgreSQL).

By default it uses the durable store's database, so a graph's own state and the checkpoint calls
of its runs live side by side. Two tables, `langgraph_checkpoints` and `langgraph_checkpoint_writes`,
made by the store's Alembic migrations (`kitaru_core.migrations`, revision 0004) like every other
table; values go through LangGraph's serializer (`JsonPlusSerializer`).
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from sqlalchemy import (
    Engine,
    and_,
    create_engine,
    delete,
    event,
    insert,
    select,
)
from sqlalchemy.pool import StaticPool

import kitaru_core
from kitaru_core.migrations import langgraph_checkpoint_writes, langgraph_checkpoints, upgrade_database

checkpoints_table = langgraph_checkpoints
writes_table = langgraph_checkpoint_writes


def _make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    in_memory = url in {"sqlite://", "sqlite:///:memory:", "sqlite+pysqlite://"}
    database = url.split("///", 1)[1] if "///" in url else ""
    if not in_memory and database:
        Path(database).parent.mkdir(parents=True, exist_ok=True)  # a fresh project has no ./.kitaru/ yet
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        poolclass=StaticPool if in_memory else None,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:  # pyright: ignore[reportUnusedFunction]
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def _configurable(config: RunnableConfig | None) -> Mapping[str, Any]:
    return (config or {}).get("configurable") or {}


def _matches(value: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return all(key in value and value[key] == expected for key, expected in wanted.items())


class KitaruSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on SQLAlchemy: SQLite (WAL) or PostgreSQL, sync and async.

    Pass it as `builder.compile(checkpointer=KitaruSaver())`. It passes LangGraph's checkpoint
    conformance suite (`langgraph-checkpoint-conformance`, base capabilities) on both databases.
    The async methods run the same statements in a worker thread.

    Args:
        url: SQLAlchemy URL; default: the durable store's (`kitaru_core.configure()`, so
            `KITARU_STORE_URL` or `./.kitaru/kitaru.db`).
        engine: An existing engine instead of `url` (not disposed by `close()`).
        serde: LangGraph serializer; default `JsonPlusSerializer`.

    Raises:
        StoreError: The database cannot be reached.
        MigrationError: Its tables could not be created (the store's migrations failed), or the
            database's schema is newer than this version.
    """

    def __init__(
        self, url: str | None = None, *, engine: Engine | None = None, serde: SerializerProtocol | None = None
    ) -> None:
        super().__init__(serde=serde)
        self._owns_engine = engine is None
        self.engine = (
            engine
            if engine is not None
            else _make_engine(url or kitaru_core.configure().resolved_store_url())
        )
        self._lock = threading.Lock()  # SQLite allows one writer: keep this process's writes in line
        upgrade_database(self.engine)

    def close(self) -> None:
        """Dispose of the engine this saver created."""
        if self._owns_engine:
            self.engine.dispose()

    # -- helpers ---------------------------------------------------------------------------------

    def _tuple(self, row: Any, connection: Any) -> CheckpointTuple:
        thread_id, namespace, checkpoint_id = row.thread_id, row.checkpoint_ns, row.checkpoint_id
        pending = connection.execute(
            select(
                writes_table.c.task_id,
                writes_table.c.channel,
                writes_table.c.value_type,
                writes_table.c.value,
            )
            .where(
                writes_table.c.thread_id == thread_id,
                writes_table.c.checkpoint_ns == namespace,
                writes_table.c.checkpoint_id == checkpoint_id,
            )
            .order_by(writes_table.c.task_path, writes_table.c.task_id, writes_table.c.idx)
        ).all()
        parent = (
            {
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": namespace,
                    "checkpoint_id": row.parent_checkpoint_id,
                }
            }
            if row.parent_checkpoint_id
            else None
        )
        return CheckpointTuple(
            config={
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": namespace,
                    "checkpoint_id": checkpoint_id,
                }
            },
            checkpoint=self.serde.loads_typed((row.checkpoint_type, row.checkpoint)),
            metadata=self.serde.loads_typed((row.metadata_type, row.metadata)),
            parent_config=parent,  # pyright: ignore[reportArgumentType]
            pending_writes=[
                (task_id, channel, self.serde.loads_typed((value_type, value)))
                for task_id, channel, value_type, value in pending
            ],
        )

    # -- the sync interface ----------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named by `config` (its `checkpoint_id`, or the thread's latest)."""
        configurable = _configurable(config)
        query = select(checkpoints_table).where(
            checkpoints_table.c.thread_id == str(configurable["thread_id"]),
            checkpoints_table.c.checkpoint_ns == configurable.get("checkpoint_ns", ""),
        )
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id:
            query = query.where(checkpoints_table.c.checkpoint_id == checkpoint_id)
        else:
            query = query.order_by(checkpoints_table.c.checkpoint_id.desc()).limit(1)
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
            return self._tuple(row, connection) if row is not None else None

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints matching `config` (thread, namespace, id) and `filter` (metadata), newest first."""
        configurable = _configurable(config)
        conditions: list[Any] = []
        if "thread_id" in configurable:
            conditions.append(checkpoints_table.c.thread_id == str(configurable["thread_id"]))
        if "checkpoint_ns" in configurable:
            conditions.append(checkpoints_table.c.checkpoint_ns == configurable["checkpoint_ns"])
        if checkpoint_id := get_checkpoint_id(config) if config else None:
            conditions.append(checkpoints_table.c.checkpoint_id == checkpoint_id)
        if before is not None and (before_id := get_checkpoint_id(before)):
            conditions.append(checkpoints_table.c.checkpoint_id < before_id)
        query = select(checkpoints_table).order_by(checkpoints_table.c.checkpoint_id.desc())
        if conditions:
            query = query.where(and_(*conditions))
        if limit is not None and not filter:
            query = query.limit(limit)
        found: list[CheckpointTuple] = []
        with self.engine.connect() as connection:
            for row in connection.execute(query).all():
                if limit is not None and len(found) >= limit:
                    break
                item = self._tuple(row, connection)
                if filter and not _matches(item.metadata, filter):
                    continue
                found.append(item)
        yield from found

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint (replacing one with the same id) and return its config."""
        configurable = _configurable(config)
        thread_id = str(configurable["thread_id"])
        namespace = configurable.get("checkpoint_ns", "")
        checkpoint_type, checkpoint_bytes = self.serde.dumps_typed(checkpoint)
        metadata_type, metadata_bytes = self.serde.dumps_typed(get_checkpoint_metadata(config, metadata))
        key = and_(
            checkpoints_table.c.thread_id == thread_id,
            checkpoints_table.c.checkpoint_ns == namespace,
            checkpoints_table.c.checkpoint_id == checkpoint["id"],
        )
        with self._lock, self.engine.begin() as connection:
            connection.execute(delete(checkpoints_table).where(key))
            connection.execute(
                insert(checkpoints_table).values(
                    thread_id=thread_id,
                    checkpoint_ns=namespace,
                    checkpoint_id=checkpoint["id"],
                    parent_checkpoint_id=configurable.get("checkpoint_id"),
                    checkpoint_type=checkpoint_type,
                    checkpoint=checkpoint_bytes,
                    metadata_type=metadata_type,
                    metadata=metadata_bytes,
                )
            )
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": namespace,
                "checkpoint_id": checkpoint["id"],
            }
        }

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """Store a task's writes: special channels replace earlier ones, other writes are kept once."""
        configurable = _configurable(config)
        thread_id = str(configurable["thread_id"])
        namespace = str(configurable.get("checkpoint_ns", ""))
        checkpoint_id = str(configurable["checkpoint_id"])
        replace = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        rows = [
            {
                "thread_id": thread_id,
                "checkpoint_ns": namespace,
                "checkpoint_id": checkpoint_id,
                "task_id": task_id,
                "idx": WRITES_IDX_MAP.get(channel, index),
                "task_path": task_path,
                "channel": channel,
                "value_type": value_type,
                "value": value,
            }
            for index, (channel, item) in enumerate(writes)
            for value_type, value in [self.serde.dumps_typed(item)]
        ]
        if not rows:
            return
        same_task = and_(
            writes_table.c.thread_id == thread_id,
            writes_table.c.checkpoint_ns == namespace,
            writes_table.c.checkpoint_id == checkpoint_id,
            writes_table.c.task_id == task_id,
        )
        with self._lock, self.engine.begin() as connection:
            existing = {
                index for (index,) in connection.execute(select(writes_table.c.idx).where(same_task)).all()
            }
            if replace:
                indexes = [row["idx"] for row in rows]
                connection.execute(delete(writes_table).where(same_task, writes_table.c.idx.in_(indexes)))
                connection.execute(insert(writes_table), rows)
            else:
                fresh = [row for row in rows if row["idx"] not in existing]
                if fresh:
                    connection.execute(insert(writes_table), fresh)

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint and write of a thread."""
        with self._lock, self.engine.begin() as connection:
            connection.execute(delete(writes_table).where(writes_table.c.thread_id == str(thread_id)))
            connection.execute(
                delete(checkpoints_table).where(checkpoints_table.c.thread_id == str(thread_id))
            )

    def get_next_version(self, current: str | None, channel: None = None) -> str:
        """A version greater than `current`: a zero-padded counter and a random tie-breaker."""
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            number = int(str(current).split(".")[0])
        return f"{number + 1:032}.{random.random():016}"

    # -- the async interface (the same statements in a worker thread) -----------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """See `get_tuple`."""
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """See `list`."""
        found = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit))
        )
        for item in found:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """See `put`."""
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """See `put_writes`."""
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """See `delete_thread`."""
        await asyncio.to_thread(self.delete_thread, thread_id)
