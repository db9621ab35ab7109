"""The job's own tables as a versioned Alembic migration history (`env.py`, `versions/`).

`upgrade` brings them to the newest revision on a connection whose transaction the caller
holds (`Catalog.ensure_own_tables` takes the schema lock first). Names follow the
catalog's namespace: in `schema` on PostgreSQL (the version table too, so the job's role
needs no right outside the schema it owns), with a name `prefix` on SQLite
(`snapshot_ops_alembic_version` beside `snapshot_ops_cleanup_runs`).

A database whose own tables were made before this history existed has them but no version
table: `upgrade` recognises it by its tables, completes what an older release left out
(tables it made later, the journal's lease and backoff columns), stamps it at `BASELINE`
and upgrades from there.

A new revision: `alembic revision --rev-id 0002 -m "what changes"` in the repository root
(pyproject.toml's `[tool.alembic]` points at this folder), then write its `upgrade()` with
`op` and the names from `own_names()`; see docs/safety.md, "The job's own tables: migrations".
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

#: The first revision: the tables exactly as the last release without migrations made them.
BASELINE = "0001"
#: Alembic's version table, named inside the job's namespace (prefixed on SQLite).
VERSION_TABLE = "alembic_version"

_LOCATION = str(Path(__file__).resolve().parent)

#: Alembic's `context` and `op` are module-level proxies to the one migration running in the
#: process: two threads migrating at once (two databases) would run each other's steps.
_ALEMBIC = threading.Lock()


def own_names() -> tuple[str | None, str]:
    """(schema, prefix) of the job's own tables, for a revision's `upgrade()`: schema is
    None on SQLite, prefix is "" on PostgreSQL."""
    from alembic import op

    attributes = op.get_context().config.attributes
    return attributes["schema"], attributes["prefix"]


def _config(conn: Connection, schema: str | None, prefix: str) -> Config:
    config = Config()
    config.set_main_option("script_location", _LOCATION)
    config.attributes.update(connection=conn, schema=schema, prefix=prefix)
    return config


@functools.cache
def _script() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", _LOCATION)
    return ScriptDirectory.from_config(config)


def head() -> str:
    """The newest revision shipped with this package."""
    revision = _script().get_current_head()
    assert revision is not None
    return revision


def version_options(schema: str | None, prefix: str) -> dict[str, Any]:
    """Alembic's options naming the job's version table (for `context.configure`)."""
    return {"version_table": f"{prefix}{VERSION_TABLE}", "version_table_schema": schema}


def current(conn: Connection, *, schema: str | None, prefix: str) -> str | None:
    """The revision the database's own tables are at (None: no version table)."""
    context = MigrationContext.configure(conn, opts=version_options(schema, prefix))
    return context.get_current_revision()


def upgrade(conn: Connection, *, schema: str | None, prefix: str) -> None:
    """Bring the job's own tables to `head()` inside `conn`'s transaction.

    On PostgreSQL every step is transactional DDL: a failure leaves the tables as they were.
    Raises what the database raises (e.g. permission denied when the role does not own
    `schema`)."""
    revision = current(conn, schema=schema, prefix=prefix)
    if revision == head():
        return
    config = _config(conn, schema, prefix)
    with _ALEMBIC:
        if revision is None and _made_before_versioning(conn, schema, prefix):
            _complete_unversioned(conn, schema, prefix)
            command.stamp(config, BASELINE)
        command.upgrade(config, "head")


def _baseline_tables(schema: str | None, prefix: str) -> list[sa.Table]:
    module = _script().get_revision(BASELINE).module
    return module.tables(sa.MetaData(schema=schema), prefix)


def _made_before_versioning(conn: Connection, schema: str | None, prefix: str) -> bool:
    inspector = sa.inspect(conn)
    return any(
        inspector.has_table(table.name, schema=schema) for table in _baseline_tables(schema, prefix)
    )


def _complete_unversioned(conn: Connection, schema: str | None, prefix: str) -> None:
    """Make an unversioned database's own tables equal the baseline, as the release before
    this history did on every run: create missing tables (the savings table was made on its
    first write), add missing columns (the journal's lease and backoff columns came late;
    all are nullable or have a default)."""
    inspector = sa.inspect(conn)
    for table in _baseline_tables(schema, prefix):
        if not inspector.has_table(table.name, schema=schema):
            table.create(conn)
            continue
        present = {c["name"] for c in inspector.get_columns(table.name, schema=schema)}
        quoted = f'"{schema}"."{table.name}"' if schema else f'"{table.name}"'
        for column in table.columns:
            if column.name not in present:
                kind = column.type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f'ALTER TABLE {quoted} ADD COLUMN "{column.name}" {kind}')
