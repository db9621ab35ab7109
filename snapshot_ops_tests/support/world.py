"""The application's side of a test: a `World` writes snapshot rows, their files and order
attachments the way the application does, and reads back what the job did to them."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from snapshot_ops.db import make_engine
from snapshot_ops.defs.resources import SnapshotDatabase, SnapshotStorage
from snapshot_ops.demo import app_tables
from snapshot_ops.rules import TEMPORARY_TYPE
from snapshot_ops_tests.support.jobs import NOW, run_cleanup
from snapshot_ops_tests.support.stores import TEST_RETRY, Store

__all__ = ["NOW", "World"]


class World:
    """The application's side: snapshot rows, their files, order attachments."""

    def __init__(
        self, db_url: str, root: Path, store: Store | None = None, *, create_tables: bool = True
    ) -> None:
        self.db_url = db_url
        self.root = root
        self.store = store  # when set, objects live there instead of under `root`
        self.engine = make_engine(db_url)
        self.files, self.attachments = app_tables(sa.MetaData())
        if create_tables:
            self.files.metadata.create_all(self.engine)

    def add(
        self,
        *,
        age: dt.timedelta,
        snapshot_type: str = TEMPORARY_TYPE,
        linked: bool = False,
        with_file: bool = True,
        size: int | None = 100,
        key: str | None = None,
        deleted: bool = False,
        now: dt.datetime = NOW,
    ) -> str:
        """Insert one snapshot row (and its file, and an attachment); return its fileId."""
        file_id = str(uuid.uuid4())
        key = key if key is not None else f"{file_id[:2]}/{file_id}.pdf"
        if with_file:
            data = b"x" * (size if size and size > 0 else 10)
            if self.store is not None:
                self.store.put(key, data)
            else:
                path = self.root / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(self.files).values(
                    fileId=file_id,
                    snapshotType=snapshot_type,
                    parseSessionId=f"ps-{file_id[:8]}",
                    storageKey=key,
                    sizeBytes=size,
                    createdAt=now - age,
                    deletedAt=now if deleted else None,
                )
            )
            if linked:
                conn.execute(sa.insert(self.attachments).values(orderId="o-1", fileId=file_id))
        return file_id

    def attach(self, file_id: str, order_id: str = "o-2") -> bool:
        """Attach as the application does: lock the row, attach only if it is still live."""
        with self.engine.begin() as conn:
            live = conn.execute(
                sa.select(self.files.c.fileId)
                .where(self.files.c.fileId == file_id, self.files.c.deletedAt.is_(None))
                .with_for_update()
            ).first()
            if live is None:
                return False
            conn.execute(sa.insert(self.attachments).values(orderId=order_id, fileId=file_id))
            return True

    def row(self, file_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(self.files).where(self.files.c.fileId == file_id)).one()

    def is_deleted(self, file_id: str) -> bool:
        return self.row(file_id).deletedAt is not None

    def has_file(self, file_id: str) -> bool:
        if self.store is not None:
            return self.store.exists(self.row(file_id).storageKey)
        return (self.root / self.row(file_id).storageKey).exists()

    def live_rows(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).where(self.files.c.deletedAt.is_(None))
            ).scalar_one()

    def run_log(self) -> list[Any]:
        """Rows of the job's own run log, oldest first."""
        table = (
            "snapshot_ops_cleanup_runs"
            if self.db_url.startswith("sqlite")
            else ("snapshot_ops.cleanup_runs")
        )
        with self.engine.connect() as conn:
            return conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY run_at").all()

    def pending(self) -> list[Any]:
        table = (
            "snapshot_ops_pending_deletes"
            if self.db_url.startswith("sqlite")
            else ("snapshot_ops.pending_deletes")
        )
        with self.engine.connect() as conn:
            return conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY file_id").all()

    def run(
        self,
        raise_on_error: bool = False,
        instance: Any = None,
        *,
        naive_time_zone: str | None = None,
        **config: Any,
    ) -> Any:
        """Run the cleanup job in process on this world (see jobs.run_cleanup), with the
        database resource's `naive_time_zone` (unset: the environment's, see conftest.py)."""
        storage = (
            SnapshotStorage(url=self.store.url, **TEST_RETRY)
            if self.store is not None
            else SnapshotStorage(url=self.root.as_uri())
        )
        return run_cleanup(
            SnapshotDatabase(url=self.db_url, naive_time_zone=naive_time_zone),
            storage,
            instance=instance,
            raise_on_error=raise_on_error,
            **config,
        )
