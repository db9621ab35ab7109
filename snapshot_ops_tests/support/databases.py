"""Databases and worlds for the tests: a fresh PostgreSQL database or SQLite file per test, a
storage folder, and `World` fixtures on them (registered by the top conftest.py).

PostgreSQL is the real server on 127.0.0.1:5432 (override with SNAPSHOT_OPS_TEST_PG_URL);
each test gets its own database, dropped afterwards. When nothing listens there, the session
starts a private throwaway cluster from the installed server binaries (pytest-postgresql's
process fixture, `private_postgresql`) and uses that instead.

`db_url` runs a test once on each database; `store_world` is a `World` on PostgreSQL whose
objects live in the `store` under test (see stores.py); `cleanup_role` is the
least-privileged login role the job runs as in production.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pytest_postgresql import factories

from snapshot_ops_tests.support.stores import Store
from snapshot_ops_tests.support.world import World

PG_ADMIN_URL = os.environ.get(
    "SNAPSHOT_OPS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
#: Where Debian's server packages (`postgresql-<major>`) put pg_ctl, one folder per major.
PG_CTL_PATTERN = "/usr/lib/postgresql/*/bin/pg_ctl"


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


@pytest.fixture
def world(db_url: str, storage_root: Path) -> Iterator[World]:
    w = World(db_url, storage_root)
    yield w
    w.engine.dispose()


@pytest.fixture
def nullable_world(db_url: str, storage_root: Path) -> Iterator[World]:
    """A World whose "createdAt" column allows NULL, as many applications' do."""
    w = World(db_url, storage_root, create_tables=False)
    w.files.c.createdAt.nullable = True
    w.files.metadata.create_all(w.engine)
    yield w
    w.engine.dispose()


@pytest.fixture
def pg_world(postgres_url: str, storage_root: Path) -> Iterator[World]:
    w = World(postgres_url, storage_root)
    yield w
    w.engine.dispose()


@pytest.fixture
def store_world(postgres_url: str, storage_root: Path, store: Store) -> Iterator[World]:
    """A World on PostgreSQL whose snapshot objects live in `store`."""
    w = World(postgres_url, storage_root, store)
    yield w
    w.engine.dispose()


@pytest.fixture(scope="session")
def make_pg_database(pg_admin_url: str) -> Iterator[Callable[[str], str]]:
    """Factory: create a fresh PostgreSQL database, return its URL; all dropped at the end."""
    admin = sa.create_engine(
        pg_admin_url.replace("postgresql://", "postgresql+psycopg2://", 1),
        isolation_level="AUTOCOMMIT",
    )
    created: list[str] = []

    def make(purpose: str) -> str:
        name = f"snapshot_ops_{purpose}_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        created.append(name)
        url = sa.engine.make_url(pg_admin_url).set(database=name)
        return url.render_as_string(hide_password=False)

    yield make
    with admin.connect() as conn:
        for name in created:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def cleanup_role(postgres_url: str, storage_root: Path) -> Iterator[tuple[World, str, str]]:
    """A login role with the job's minimal grants in a fresh application database, made as
    docs/safety.md's "Least privilege" says: (the World, as the administrator; the role's
    name; the role's database URL). The role and what it owns are dropped afterwards."""
    world = World(postgres_url, storage_root)  # the application creates its tables
    name = f"snapshot_cleanup_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(
        world.engine.url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        for statement in (
            f"CREATE ROLE {name} LOGIN",
            f"REVOKE ALL ON SCHEMA public FROM {name}",
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            f"CREATE SCHEMA snapshot_ops AUTHORIZATION {name}",
            f'GRANT SELECT ON "OrderAttachments" TO {name}',
            f'GRANT SELECT ON "SnapshotFiles" TO {name}',
            f'GRANT UPDATE ("deletedAt") ON "SnapshotFiles" TO {name}',
        ):
            conn.exec_driver_sql(statement)
    role_url = sa.engine.make_url(postgres_url).set(username=name)
    yield world, name, role_url.render_as_string(hide_password=False)
    world.engine.dispose()
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP OWNED BY {name}")
        conn.exec_driver_sql(f"DROP ROLE {name}")
    admin.dispose()
