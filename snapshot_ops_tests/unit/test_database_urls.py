"""How SNAPSHOT_OPS_DATABASE_URL becomes an engine, before and at its first connection.

- `postgresql://` and the older `postgres://` (Heroku's form, still printed by many hosts)
  both reach the installed psycopg2 driver; a driver the user names stays.
- Only PostgreSQL and SQLite are accepted: any other database (MySQL or MariaDB, say) is a
  ConfigError naming it, before any connection is tried.
- On SQLite the job's connections wait up to 60 s for a write lock the application holds
  (SQLite's busy timeout), instead of failing the run with "database is locked".
  (A PostgreSQL connection that died in the pool is replaced: test_faults.py.)
"""

from __future__ import annotations

import pytest

from snapshot_ops.db import database_url, make_engine
from snapshot_ops.errors import ConfigError


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("postgresql://ops@db:5432/app", "postgresql+psycopg2://ops@db:5432/app"),
        ("postgres://ops@db:5432/app", "postgresql+psycopg2://ops@db:5432/app"),
        ("postgresql+psycopg2://ops@db/app", "postgresql+psycopg2://ops@db/app"),
        ("sqlite:////var/lib/parser/app.db", "sqlite:////var/lib/parser/app.db"),
    ],
)
def test_accepted_urls_reach_the_installed_driver(raw, parsed):
    assert database_url(raw).render_as_string() == parsed


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ("mysql://root@127.0.0.1:3306/test", "'mysql'"),
        ("mariadb+pymysql://root@127.0.0.1:3306/test", "'mariadb'"),
        ("mssql+pyodbc://sa@db.internal/parser", "'mssql'"),
    ],
)
def test_other_databases_are_refused_by_name(raw, named):
    with pytest.raises(ConfigError) as refused:
        database_url(raw)
    assert str(refused.value) == f"unsupported database {named}: use PostgreSQL or SQLite"


def test_sqlite_connections_wait_a_minute_for_the_write_lock(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'app.db'}")
    try:
        with engine.connect() as conn:
            busy_timeout_ms = conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()
    finally:
        engine.dispose()
    assert busy_timeout_ms == 60_000
