"""The tables: the application's (reflected, names configurable) and the job's own (named
once here: a schema of their own on PostgreSQL, a name prefix on SQLite), and the advice on
the application's indexes.

The application's tables are read as they are; the only column ever written is
`"SnapshotFiles"."deletedAt"`. The job's own tables are a migration history
(snapshot_ops/migrations), brought up to date by `Tables.ensure_own_tables`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from snapshot_ops import migrations
from snapshot_ops.db.engine import READ_ONLY_OPTION, any_of, quoted
from snapshot_ops.errors import ConfigError, SchemaError
from snapshot_ops.rules import TEMPORARY_TYPE
from snapshot_ops.timeformat import ColumnTimes, check_setting

#: Columns of the application's tables that the job reads (and, for deletedAt, writes).
SNAPSHOT_COLUMNS = ("fileId", "snapshotType", "storageKey", "sizeBytes", "createdAt", "deletedAt")
ATTACHMENT_COLUMNS = ("fileId",)

#: PostgreSQL advisory lock key held while the job creates its own schema or migrates its
#: tables (and while it rewrites the savings table).
SCHEMA_LOCK_KEY = 0x534E4150  # "SNAP"


@dataclass(frozen=True)
class OwnNames:
    """Where the job's own tables live: `schema` (None on SQLite, which has no schemas) and
    the `prefix` of their names ("" on PostgreSQL; "<ops_schema>_" on SQLite). Decided here
    once for the run log, the journal, the savings table and Alembic's version table."""

    schema: str | None
    prefix: str

    @classmethod
    def of(cls, ops_schema: str, *, sqlite: bool) -> OwnNames:
        """The names for the database resource's `ops_schema` on this dialect."""
        if sqlite:  # SQLite has no schemas: the namespace is a name prefix
            return cls(None, f"{ops_schema}_")
        return cls(ops_schema, "")

    def name(self, table: str) -> str:
        """The name of the job's own table `table` (e.g. "cleanup_runs"), prefixed."""
        return f"{self.prefix}{table}"


class Tables:
    """The application's tables (reflected) and the job's own tables, on one engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        snapshot_files_table: str = "SnapshotFiles",
        order_attachments_table: str = "OrderAttachments",
        app_schema: str | None = None,
        ops_schema: str = "snapshot_ops",
        time_format: str = "auto",
    ) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        check_setting(time_format)
        self.time_format = time_format
        app = sa.MetaData()
        self.files = _reflect(
            engine, app, snapshot_files_table, app_schema, SNAPSHOT_COLUMNS, "snapshot_files_table"
        )
        # The time columns' declared types; their values are read and bound as stored (see
        # timeformat.py). On SQLite the declared type says nothing sure (a DATETIME column
        # may hold text or numbers), and SQLAlchemy's DATETIME type would parse each value
        # as text, so the columns pass values through and `times` encodes them.
        self._declared = {name: self.files.c[name].type for name in ("createdAt", "deletedAt")}
        if self.is_sqlite:
            for name in self._declared:
                self.files.c[name].type = sa.types.NullType()
        # Text on PostgreSQL compares in byte order ("C"), the order in which ISO 8601 text
        # is time order; a linguistic collation may skip punctuation.
        created = self.files.c.createdAt
        text = not self.is_sqlite and isinstance(self._declared["createdAt"], sa.String)
        self._created: sa.ColumnElement[Any] = created.collate("C") if text else created
        self._times: ColumnTimes | None = None
        self.attachments = _reflect(
            engine,
            app,
            order_attachments_table,
            app_schema,
            ATTACHMENT_COLUMNS,
            "order_attachments_table",
        )
        self.own = OwnNames.of(ops_schema, sqlite=self.is_sqlite)
        own = sa.MetaData(schema=self.own.schema)
        self.runs = sa.Table(
            self.own.name("cleanup_runs"),
            own,
            sa.Column("run_id", sa.Text, primary_key=True),
            sa.Column("run_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("reference_time", sa.DateTime(timezone=True), nullable=False),
            sa.Column("cutoff", sa.DateTime(timezone=True), nullable=False),
            sa.Column("dry_run", sa.Boolean, nullable=False),
            sa.Column("status", sa.Text, nullable=False),
            sa.Column("candidate_count", sa.BigInteger, nullable=False, server_default="0"),
            sa.Column("marked_count", sa.BigInteger, nullable=False, server_default="0"),
            sa.Column("deleted_count", sa.BigInteger, nullable=False, server_default="0"),
            sa.Column("missing_count", sa.BigInteger, nullable=False, server_default="0"),
            sa.Column("bytes_reclaimed", sa.BigInteger, nullable=False, server_default="0"),
            sa.Column("error_count", sa.BigInteger, nullable=False, server_default="0"),
            sa.Column("errors", sa.Text, nullable=False, server_default="[]"),
            sa.Column("finished_at", sa.DateTime(timezone=True)),
        )
        self.pending = sa.Table(
            self.own.name("pending_deletes"),
            own,
            sa.Column("file_id", sa.Text, primary_key=True),
            sa.Column("storage_key", sa.Text, nullable=False),
            sa.Column("size_bytes", sa.BigInteger),
            sa.Column("run_id", sa.Text, nullable=False),
            sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
            sa.Column("last_error", sa.Text),
            # The lease (claim_pending): which run deletes this entry's object, and until when.
            sa.Column("claimed_by", sa.Text),
            sa.Column("lease_until", sa.DateTime(timezone=True)),
            # Backoff after failed deletes: not claimed again before this instant.
            sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        )

    def reading(self) -> Connection:
        """A connection for reads only: on SQLite its transaction takes no write lock."""
        return self.engine.connect().execution_options(**{READ_ONLY_OPTION: True})

    def _in(self, column: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
        """`column IN values` in this dialect's cheapest form (see engine.any_of)."""
        return any_of(column, values, sqlite=self.is_sqlite)

    # -- advice ---------------------------------------------------------------------------

    def missing_indexes(self) -> list[str]:
        """The CREATE INDEX statements that would make the candidate queries cheap, for the
        indexes the application database lacks. The job never creates them itself: on a
        busy application table that is the owner's decision (and CONCURRENTLY cannot run
        inside the job's transactions)."""
        inspector = sa.inspect(self.engine)
        concurrently = "" if self.is_sqlite else " CONCURRENTLY"
        advice = []
        f, a = self.files, self.attachments
        if not _has_index_leading_with(inspector, f, "createdAt"):
            # A text column is compared in byte order (see __init__); so must its index be.
            collate = "" if self._created is f.c.createdAt else ' COLLATE "C"'
            advice.append(
                f"CREATE INDEX{concurrently} IF NOT EXISTS "
                f'"{f.name}_expiry_idx" ON {quoted(f)} ("createdAt"{collate}, "fileId") '
                f'WHERE "snapshotType" = \'{TEMPORARY_TYPE}\' AND "deletedAt" IS NULL;'
            )
        if not _has_index_leading_with(inspector, f, "storageKey"):
            # Before deleting an object the job asks whether a live row still names it.
            advice.append(
                f"CREATE INDEX{concurrently} IF NOT EXISTS "
                f'"{f.name}_storageKey_idx" ON {quoted(f)} ("storageKey") '
                f'WHERE "deletedAt" IS NULL;'
            )
        if not _has_index_leading_with(inspector, a, "fileId"):
            advice.append(
                f"CREATE INDEX{concurrently} IF NOT EXISTS "
                f'"{a.name}_fileId_idx" ON {quoted(a)} ("fileId");'
            )
        return advice

    # -- the job's own tables -------------------------------------------------------------

    def lock_own_schema(self, conn: Connection) -> None:
        """Serialise, until `conn`'s transaction ends, the runs that create or rewrite the
        job's own tables: IF NOT EXISTS is not safe against a concurrent creator (two runs
        at once fail on a unique index). SQLite's BEGIN IMMEDIATE serialises already."""
        if not self.is_sqlite:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))

    def ensure_own_tables(self) -> None:
        """Create the job's schema if it is missing and bring its own tables to the newest
        revision of `snapshot_ops/migrations` (idempotent; tables an older release made
        without a version table are adopted: see `migrations.upgrade`).

        Two runs starting at once take turns on the schema lock; the second finds the
        tables at the newest revision and changes nothing."""
        with self.engine.begin() as conn:
            self.lock_own_schema(conn)
            if self.own.schema is not None:
                # A least-privileged role owns a schema an administrator made for it but may
                # not create schemas (CREATE SCHEMA IF NOT EXISTS needs that right even when
                # the schema exists), so only a missing schema is created.
                if not sa.inspect(conn).has_schema(self.own.schema):
                    conn.execute(sa.schema.CreateSchema(self.own.schema))
            migrations.upgrade(conn, schema=self.own.schema, prefix=self.own.prefix)


def _has_index_leading_with(inspector: Any, table: sa.Table, column: str) -> bool:
    indexes = inspector.get_indexes(table.name, schema=table.schema)
    pk = inspector.get_pk_constraint(table.name, schema=table.schema)
    leading = [ix["column_names"][:1] for ix in indexes] + [pk.get("constrained_columns", [])[:1]]
    return [column] in leading


def _reflect(
    engine: Engine,
    metadata: sa.MetaData,
    name: str,
    schema: str | None,
    needed: Sequence[str],
    setting: str,
) -> sa.Table:
    """Reflect an application table and check it has the columns the job needs.

    `setting` is the database resource's field that names the table, for the message.
    """
    qualified = f"{schema}.{name}" if schema else name
    try:
        table = sa.Table(name, metadata, schema=schema, autoload_with=engine)
    except sa.exc.NoSuchTableError as exc:
        raise SchemaError(
            f'table "{qualified}" not found in the application database; '
            f"if it is called otherwise, set {setting} (and app_schema, if it is in another "
            "schema) on the database resource"
        ) from exc
    except sa.exc.OperationalError as exc:
        raise ConfigError(f"cannot connect to the application database: {exc.orig}") from exc
    missing = [c for c in needed if c not in table.c]
    if missing:
        raise SchemaError(
            f'table "{qualified}" lacks column(s) {", ".join(repr(c) for c in missing)} '
            "that the cleanup job needs"
        )
    return table
