"""Shared fixtures: a fresh PostgreSQL database or SQLite file per test, a storage folder,
and a `World` that writes application rows and snapshot files the way the application does.

PostgreSQL is the real server on 127.0.0.1:5432 (override with SNAPSHOT_OPS_TEST_PG_URL);
each test gets its own database, dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from snapshot_ops.catalog import make_engine
from snapshot_ops.demo import app_tables
from snapshot_ops.jobs import snapshot_cleanup_job
from snapshot_ops.resources import SnapshotDatabase, SnapshotStorage
from snapshot_ops.rules import TEMPORARY_TYPE

# Instance, webhook and UI-server fixtures.
pytest_plugins = ["snapshot_ops_tests.ops_fixtures"]

PG_ADMIN_URL = os.environ.get(
    "SNAPSHOT_OPS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
#: A fixed reference time, so ages in tests are exact.
NOW = dt.datetime(2026, 11, 20, 3, 0, tzinfo=dt.UTC)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    name = f"snapshot_ops_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(
        PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg2://", 1),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.sqlite'}"


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on PostgreSQL and once on SQLite."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    root = tmp_path / "snapshots"
    root.mkdir()
    return root


class World:
    """The application's side: snapshot rows, their files, order attachments."""

    def __init__(self, db_url: str, root: Path, *, create_tables: bool = True) -> None:
        self.db_url = db_url
        self.root = root
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
            path = self.root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * (size if size and size > 0 else 10))
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
            return conn.execute(
                sa.select(self.files).where(self.files.c.fileId == file_id)
            ).one()

    def is_deleted(self, file_id: str) -> bool:
        return self.row(file_id).deletedAt is not None

    def has_file(self, file_id: str) -> bool:
        return (self.root / self.row(file_id).storageKey).exists()

    def live_rows(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).where(self.files.c.deletedAt.is_(None))
            ).scalar_one()

    def run_log(self) -> list[Any]:
        """Rows of the job's own run log, oldest first."""
        table = "snapshot_ops_cleanup_runs" if self.db_url.startswith("sqlite") else (
            "snapshot_ops.cleanup_runs"
        )
        with self.engine.connect() as conn:
            return conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY run_at").all()

    def pending(self) -> list[Any]:
        table = "snapshot_ops_pending_deletes" if self.db_url.startswith("sqlite") else (
            "snapshot_ops.pending_deletes"
        )
        with self.engine.connect() as conn:
            return conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY file_id").all()

    def run(self, raise_on_error: bool = False, **config: Any) -> Any:
        """Run the cleanup job in process as of NOW (unless overridden); return the result."""
        config.setdefault("reference_time", NOW.isoformat())
        return snapshot_cleanup_job.execute_in_process(
            run_config={"ops": {"identify_expired_candidates": {"config": config}}},
            resources={
                "database": SnapshotDatabase(url=self.db_url),
                "storage": SnapshotStorage(url=self.root.as_uri()),
            },
            raise_on_error=raise_on_error,
        )


@pytest.fixture
def world(db_url: str, storage_root: Path) -> Iterator[World]:
    w = World(db_url, storage_root)
    yield w
    w.engine.dispose()


@pytest.fixture
def pg_world(postgres_url: str, storage_root: Path) -> Iterator[World]:
    w = World(postgres_url, storage_root)
    yield w
    w.engine.dispose()
