"""The engine and the two dialects the job supports (PostgreSQL, SQLite).

`make_engine` sets the engine up for the locking protocol (see snapshot_ops.db.candidates);
`any_of`, `key_fold` and `quoted` are the few places the SQL differs by dialect outside the
protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import URL, Connection, Engine, make_url

from snapshot_ops.errors import ConfigError
from snapshot_ops.storage.base import KeyMatching

#: Execution option of connections that only read (SQLite: deferred BEGIN, no write lock).
READ_ONLY_OPTION = "snapshot_ops_read_only"
#: The isolation level of every transaction the job runs on PostgreSQL.
ISOLATION_LEVEL = "READ COMMITTED"
#: PostgreSQL's SQLSTATE for "permission denied": a missing grant, and also a query that
#: row-level security would filter while row_security is off.
PG_INSUFFICIENT_PRIVILEGE = "42501"
#: The SQL function `key_fold` calls on SQLite, registered on the job's connections.
SQLITE_KEY_FOLD = "snapshot_ops_key_fold"
#: PostgreSQL's ICU root collation, whose upper() and lower() are Unicode's full case
#: mappings (libc's map one character to one, and "C" only ASCII).
ICU_ROOT = "und-x-icu"


def database_url(raw: str) -> URL:
    """Parse a SQLAlchemy URL, mapping plain `postgresql://` to the installed psycopg2 driver.

    SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3, which is not installed (and
    dagster-postgres cannot use it), so a URL as a user types it is pinned to psycopg2.
    """
    try:
        url = make_url(raw)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(
            f"SNAPSHOT_OPS_DATABASE_URL is not a database URL: {exc}. "
            "Expected e.g. postgresql://user@host:5432/db or sqlite:////path/app.db"
        ) from exc
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg2")
    if url.get_backend_name() not in ("postgresql", "sqlite"):
        raise ConfigError(
            f"unsupported database {url.get_backend_name()!r}: use PostgreSQL or SQLite"
        )
    return url


def make_engine(raw_url: str) -> Engine:
    """An engine for the application database, set up for the locking protocol.

    On SQLite each connection waits up to 60 s (its busy timeout) for a write lock the
    application holds, rather than failing the run with "database is locked"; the job's own
    write transactions take the lock up front (`BEGIN IMMEDIATE`) and its reads take none.
    On PostgreSQL a pooled connection is checked before use, so one the server dropped while
    it sat idle is replaced, and every transaction runs at READ COMMITTED with
    `row_security = off` (whatever the role or database sets): a query that row-level
    security would filter fails with SQLSTATE 42501 instead (see
    `schema.Tables.check_rows_unfiltered`). Raises ConfigError as `database_url` does.
    """
    url = database_url(raw_url)
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        # pysqlite's own transaction handling defers BEGIN and never takes the write lock
        # up front; BEGIN IMMEDIATE makes each batch's select + mark one atomic unit.
        @sa.event.listens_for(engine, "connect")
        def _no_pysqlite_transactions(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        # A connection opened by `Catalog.reading` only reads: a plain (deferred) BEGIN
        # takes no write lock, so a long count never makes the application's writers wait.
        @sa.event.listens_for(engine, "begin")
        def _begin_immediate(conn: Connection) -> None:
            if conn.get_execution_options().get(READ_ONLY_OPTION):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        sa.event.listen(engine, "connect", _register_key_fold)
        return engine
    # READ COMMITTED whatever the role's or the database's default_transaction_isolation:
    # the marking protocol's re-check sees an attach committed during its lock wait only
    # because each statement takes a new snapshot (see candidates.Candidates.mark_batch).
    # psycopg2 names the level in each BEGIN, so it holds behind a transaction pooler too.
    engine = sa.create_engine(url, pool_pre_ping=True, isolation_level=ISOLATION_LEVEL)

    # Row-level security could hide rows of the application's tables from the job's role
    # (a tenant policy, or RLS with no policy, which hides them all): links it cannot see
    # make linked files look unlinked. With row_security off, PostgreSQL fails a query that
    # a policy would filter instead of filtering it (and changes nothing for the roles RLS
    # does not apply to). Set in every transaction, not once per session, so that neither
    # a pooled connection reset (RESET ALL) nor a transaction pooler handing the next
    # transaction to another server session can lose it.
    @sa.event.listens_for(engine, "begin")
    def _row_security_off(conn: Connection) -> None:
        conn.exec_driver_sql("SET LOCAL row_security = off")

    return engine


def _register_key_fold(dbapi_conn: Any, _record: Any) -> None:
    """SQLite has no Unicode case mapping of its own (its lower() and NOCASE fold ASCII
    only), so `key_fold` calls KeyMatching.fold itself: SQLITE_KEY_FOLD(key, name)."""
    matchings = {
        m.name: m for m in (KeyMatching(c, n) for c in (False, True) for n in (False, True))
    }

    def fold(key: str | None, name: str) -> str | None:
        return None if key is None else matchings[name].fold(key)

    dbapi_conn.create_function(SQLITE_KEY_FOLD, 2, fold, deterministic=True)


def key_fold(
    value: sa.ColumnElement[Any], matching: KeyMatching, *, sqlite: bool
) -> sa.ColumnElement[Any]:
    """`value` (a storage key) folded in SQL as `matching.fold` folds it in Python, so that
    `key_fold(a) = key_fold(b)` holds for every two keys the store may take for one object
    (KeyMatching). Exact: `value` itself.

    PostgreSQL: upper(lower(...)) under the ICU root collation (ICU_ROOT), and
    normalize(..., NFD/NFC) around it when normalization is ignored; this needs ICU and a
    UTF8 database (`Journal.verify_key_matching` checks, and an expression index on it
    serves the lookups: `Tables.missing_indexes`). SQLite: the registered SQLITE_KEY_FOLD.
    """
    if matching.exact:
        return value
    if sqlite:
        return getattr(sa.func, SQLITE_KEY_FOLD)(value, matching.name)
    if matching.ignores_case:
        if matching.ignores_normalization:
            value = sa.func.normalize(value, sa.literal_column("NFD"))
        value = sa.func.upper(sa.func.lower(value.collate(ICU_ROOT)))
    if matching.ignores_normalization:
        value = sa.func.normalize(value, sa.literal_column("NFC"))
    return value


def any_of(
    column: sa.ColumnElement[Any], values: Sequence[Any], *, sqlite: bool
) -> sa.ColumnElement[bool]:
    """`column IN values`. On PostgreSQL as `= ANY(array)`: one bound array instead of
    a thousand bound values, which SQLAlchemy would otherwise render one by one (it
    was the largest CPU cost of a batch)."""
    if sqlite:
        return column.in_(values)
    array_type = ARRAY(column.type)
    array = sa.cast(sa.bindparam(None, list(values), type_=array_type), array_type)
    return column == sa.any_(array)


def quoted(table: sa.Table) -> str:
    """The table's name as SQL writes it, schema-qualified when it has one."""
    name = f'"{table.name}"'
    return f'"{table.schema}".{name}' if table.schema else name
