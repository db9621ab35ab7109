"""Shared fixtures: a fresh PostgreSQL database or SQLite file per test, a storage folder,
and a `World` that writes application rows and snapshot files the way the application does.

PostgreSQL is the real server on 127.0.0.1:5432 (override with SNAPSHOT_OPS_TEST_PG_URL);
each test gets its own database, dropped afterwards. When nothing listens there, the session
starts a private throwaway cluster from the installed server binaries (pytest-postgresql's
process fixture, `private_postgresql`) and uses that instead.

The object stores (see stores.py) are moto's S3 server and Azurite, started once per session
on free loopback ports behind fault-injecting proxies; each test gets its own bucket or
container. `store` runs a test once per backend; `store_world` is a `World` on PostgreSQL
whose objects live in that store.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import shutil
import socket
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pytest_postgresql import factories

from snapshot_ops.catalog import make_engine
from snapshot_ops.demo import app_tables
from snapshot_ops.jobs import snapshot_cleanup_job
from snapshot_ops.resources import SnapshotDatabase, SnapshotStorage
from snapshot_ops.rules import TEMPORARY_TYPE
from snapshot_ops_tests.faultproxy import FaultProxy
from snapshot_ops_tests.stores import (
    TEST_RETRY,
    AzureStore,
    FolderStore,
    S3Store,
    Store,
    azurite_connection_string,
    free_port,
    start_azurite,
    stop_process,
)

# Instance, webhook and UI-server fixtures.
pytest_plugins = ["snapshot_ops_tests.ops_fixtures"]

PG_ADMIN_URL = os.environ.get(
    "SNAPSHOT_OPS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
#: Where Debian's server packages (`postgresql-<major>`) put pg_ctl, one folder per major.
PG_CTL_PATTERN = "/usr/lib/postgresql/*/bin/pg_ctl"
#: A fixed reference time, so ages in tests are exact.
NOW = dt.datetime(2026, 11, 20, 3, 0, tzinfo=dt.UTC)


def installed_pg_ctl() -> str | None:
    """pg_ctl of the newest server matching PG_CTL_PATTERN, else the one on PATH, else None."""

    def major(path: str) -> tuple[int, ...]:
        version = Path(path).parent.parent.name
        return tuple(int(part) for part in version.split(".") if part.isdigit())

    found = sorted(glob.glob(PG_CTL_PATTERN), key=major)
    return found[-1] if found else shutil.which("pg_ctl")


def pg_listening(url: str) -> bool:
    """Whether anything accepts TCP connections at the URL's host and port (a URL without
    a host means libpq's local socket: taken as there)."""
    parsed = sa.engine.make_url(url)
    if not parsed.host:
        return True
    try:
        socket.create_connection((parsed.host, parsed.port or 5432), timeout=5).close()
    except OSError:
        return False
    return True


# Started only when `pg_admin_url` finds no server (the fixture is requested by name).
# A throwaway cluster need not survive a crash: no fsync.
private_postgresql = factories.postgresql_proc(
    executable=installed_pg_ctl(),
    port=None,
    postgres_options="-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
)


@pytest.fixture(scope="session")
def pg_admin_url(request: pytest.FixtureRequest) -> str:
    """Superuser URL of the PostgreSQL the tests create their databases on: PG_ADMIN_URL
    when a server listens there, else a private cluster started for this session (stopped
    and removed at its end)."""
    if pg_listening(PG_ADMIN_URL):
        return PG_ADMIN_URL
    if installed_pg_ctl() is None:
        pytest.fail(
            f"no PostgreSQL listens at {PG_ADMIN_URL} and no server is installed to start a "
            f"private one ({PG_CTL_PATTERN}): install the PostgreSQL server package (Debian: "
            "postgresql) or set SNAPSHOT_OPS_TEST_PG_URL"
        )
    if os.geteuid() == 0:
        pytest.fail(
            f"no PostgreSQL listens at {PG_ADMIN_URL}, and a private one cannot be started "
            "as root (PostgreSQL refuses): run the tests as an ordinary user or start a server"
        )
    server = request.getfixturevalue("private_postgresql")
    url = f"postgresql://{server.user}@{server.host}:{server.port}/{server.maintenance_dbname}"
    warnings.warn(
        f"no PostgreSQL at {PG_ADMIN_URL}: using a private cluster at {url}", stacklevel=1
    )
    return url


@pytest.fixture
def postgres_url(pg_admin_url: str) -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    name = f"snapshot_ops_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(
        pg_admin_url.replace("postgresql://", "postgresql+psycopg2://", 1),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(pg_admin_url).set(database=name)
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

    def run(self, raise_on_error: bool = False, instance: Any = None, **config: Any) -> Any:
        """Run the cleanup job in process as of NOW (unless overridden); return the result.

        `instance`: the Dagster instance to run in (default: a new ephemeral one)."""
        config.setdefault("reference_time", NOW.isoformat())
        return snapshot_cleanup_job.execute_in_process(
            instance=instance,
            run_config={"ops": {"identify_expired_candidates": {"config": config}}},
            resources={
                "database": SnapshotDatabase(url=self.db_url),
                "storage": (
                    SnapshotStorage(url=self.store.url, **TEST_RETRY)
                    if self.store is not None
                    else SnapshotStorage(url=self.root.as_uri())
                ),
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


# -- object stores ---------------------------------------------------------------------------

#: Dummy credentials for the emulators; distinctive so tests can check they are never shown.
TEST_AWS_SECRET = "test-secret-3f9c2a7be1d54c06"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[tuple[str, int]]:
    """moto's S3 server, a real HTTP endpoint on a free loopback port, for the session."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield "127.0.0.1", port
    server.stop()


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """Azurite's blob service (in memory) on a free loopback port, for the session."""
    process, port = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield "127.0.0.1", port
    stop_process(process)


@pytest.fixture(scope="session")
def s3_proxy(moto_server: tuple[str, int]) -> Iterator[FaultProxy]:
    """A proxy in front of moto, and boto3's standard variables pointing at it."""
    proxy = FaultProxy(moto_server)
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
            env.delenv(name, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "test-key-id")
        env.setenv("AWS_SECRET_ACCESS_KEY", TEST_AWS_SECRET)
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_ENDPOINT_URL", proxy.url)
        yield proxy
    proxy.close()


@pytest.fixture(scope="session")
def azure_proxy(azurite_server: tuple[str, int]) -> Iterator[FaultProxy]:
    """A proxy in front of Azurite, and the SDK's connection string variable pointing at it."""
    proxy = FaultProxy(azurite_server)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string(proxy.port))
        yield proxy
    proxy.close()


@pytest.fixture
def filesystem_store(tmp_path: Path) -> FolderStore:
    return FolderStore(tmp_path / "fs")


@pytest.fixture
def s3_store(s3_proxy: FaultProxy, moto_server: tuple[str, int]) -> Iterator[S3Store]:
    proxy = s3_proxy
    proxy.reset()
    store = S3Store(f"http://{moto_server[0]}:{moto_server[1]}", proxy)
    yield store
    proxy.reset()
    store.remove()


@pytest.fixture
def azure_store(azure_proxy: FaultProxy, azurite_server: tuple[str, int]) -> Iterator[AzureStore]:
    proxy = azure_proxy
    proxy.reset()
    store = AzureStore(azurite_connection_string(azurite_server[1]), proxy)
    yield store
    proxy.reset()
    store.remove()


@pytest.fixture(params=["filesystem", "s3", "azure"])
def store(request: pytest.FixtureRequest) -> Store:
    """Each test using this runs once per storage backend."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def store_world(postgres_url: str, storage_root: Path, store: Store) -> Iterator[World]:
    """A World on PostgreSQL whose snapshot objects live in `store`."""
    w = World(postgres_url, storage_root, store)
    yield w
    w.engine.dispose()
