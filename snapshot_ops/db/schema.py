"""The tables: the application's (reflected, names configurable) and the job's own (named
once here: a schema of their own on PostgreSQL, a name prefix on SQLite), and the advice on
the application's indexes.

The application's tables are read as they are; the only column ever written is
`"SnapshotFiles"."deletedAt"`. They must be tables whose every row the job's role sees: a
view, a materialized view, a foreign table, a partition or a name two schemas of the
search_path hold is refused when reflected (`_check_is_table`), and row-level security that
applies to the role stops a run at its probe (`Tables.check_rows_unfiltered`). The job's own
tables are a migration history (snapshot_ops/migrations), brought up to date by
`Tables.ensure_own_tables`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import REGCLASS
from sqlalchemy.engine import Connection, Engine

from snapshot_ops import migrations, settings
from snapshot_ops.db.engine import (
    PG_INSUFFICIENT_PRIVILEGE,
    READ_ONLY_OPTION,
    any_of,
    key_fold,
    quoted,
)
from snapshot_ops.db.instants import UtcInstant
from snapshot_ops.errors import ConfigError, RowSecurityError, SchemaError
from snapshot_ops.naivezone import check_naive_time_zone, check_unused_column_defaults
from snapshot_ops.rules import TEMPORARY_TYPE
from snapshot_ops.storage.base import KeyMatching
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
        naive_time_zone: str | None = None,
        unused_column_defaults: Sequence[str] | None = None,
    ) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        check_setting(time_format)
        self.time_format = time_format
        # Unset: the deployment's SNAPSHOT_OPS_NAIVE_TIME_ZONE, else auto.
        self.naive_time_zone = settings.naive_time_zone(naive_time_zone)
        check_naive_time_zone(self.naive_time_zone)
        # Unset: SNAPSHOT_OPS_UNUSED_COLUMN_DEFAULTS, else none.
        self.unused_column_defaults = settings.unused_column_defaults(unused_column_defaults)
        check_unused_column_defaults(self.unused_column_defaults)
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
        #: Ways of matching keys this database was found to fold right (verify_key_matching).
        self._verified_matchings: set[KeyMatching] = set()
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
            sa.Column("run_at", UtcInstant(), nullable=False),
            sa.Column("reference_time", UtcInstant(), nullable=False),
            sa.Column("cutoff", UtcInstant(), nullable=False),
            sa.Column("dry_run", sa.Boolean, nullable=False),
            sa.Column("status", sa.Text, nullable=False),
            sa.Column("candidate_count", sa.BigInteger, nullable=False, server_default="0"),
            sa.Column("marked_count", sa.BigInteger, nullable=False, server_default="0"),
            sa.Column("deleted_count", sa.BigInteger, nullable=False, server_default="0"),
            sa.Column("missing_count", sa.BigInteger, nullable=False, server_default="0"),
            sa.Column("bytes_reclaimed", sa.BigInteger, nullable=False, server_default="0"),
            sa.Column("error_count", sa.BigInteger, nullable=False, server_default="0"),
            sa.Column("errors", sa.Text, nullable=False, server_default="[]"),
            sa.Column("finished_at", UtcInstant()),
        )
        self.pending = sa.Table(
            self.own.name("pending_deletes"),
            own,
            sa.Column("file_id", sa.Text, primary_key=True),
            sa.Column("storage_key", sa.Text, nullable=False),
            sa.Column("size_bytes", sa.BigInteger),
            sa.Column("run_id", sa.Text, nullable=False),
            sa.Column("marked_at", UtcInstant(), nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
            sa.Column("last_error", sa.Text),
            # The lease (claim_pending): which run deletes this entry's object, and until when.
            sa.Column("claimed_by", sa.Text),
            sa.Column("lease_until", UtcInstant()),
            # Backoff after failed deletes: not claimed again before this instant.
            sa.Column("next_attempt_at", UtcInstant()),
        )

    def reading(self) -> Connection:
        """A connection for reads only: on SQLite its transaction takes no write lock."""
        return self.engine.connect().execution_options(**{READ_ONLY_OPTION: True})

    def _in(self, column: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
        """`column IN values` in this dialect's cheapest form (see engine.any_of)."""
        return any_of(column, values, sqlite=self.is_sqlite)

    # -- every row of the application's tables ---------------------------------------------

    def check_rows_unfiltered(self) -> None:
        """Raise RowSecurityError when row-level security applies to the job's role on an
        application table (PostgreSQL; SQLite has none).

        A probe of each table: every transaction of the job's engine runs with
        `row_security = off` (engine.make_engine), under which PostgreSQL fails a query on a
        table whose rows a policy would filter (SQLSTATE 42501) instead of filtering them:
        RLS with a policy, RLS with none (every row hidden), or FORCE ROW LEVEL SECURITY on
        a table the role owns. A 42501 that is not row-level security (a missing SELECT
        grant) is raised as it is (sqlalchemy.exc.ProgrammingError).
        """
        if self.is_sqlite:
            return
        for table in (self.attachments, self.files):
            try:
                with self.reading() as conn:
                    # PostgreSQL applies (or refuses) policies when it rewrites the query,
                    # before reading anything: no row need be read.
                    conn.execute(sa.select(sa.literal(1)).select_from(table).limit(0)).all()
            except sa.exc.ProgrammingError as exc:
                if getattr(exc.orig, "pgcode", None) != PG_INSUFFICIENT_PRIVILEGE:
                    raise
                refusal = self.row_security_refusal()
                if refusal is None:
                    raise
                raise RowSecurityError(refusal) from exc

    def row_security_refusal(self) -> str | None:
        """Why the job must not run as this role, when row-level security applies to it on
        an application table; None when it applies to neither (always on SQLite).

        Asks PostgreSQL's `row_security_active`, which decides as the query rewriter does
        (superusers, BYPASSRLS roles and owners of a table without FORCE ROW LEVEL SECURITY
        see every row); the message names the tables and the fix, BYPASSRLS.
        """
        if self.is_sqlite:
            return None
        tables = (self.attachments, self.files)
        with self.reading() as conn:
            role, *active = conn.execute(
                sa.select(
                    sa.func.quote_ident(sa.func.current_user()),
                    *(sa.func.row_security_active(sa.cast(quoted(t), REGCLASS)) for t in tables),
                )
            ).one()
        filtered = [quoted(t) for t, on in zip(tables, active, strict=True) if on]
        if not filtered:
            return None
        return (
            f"row-level security applies to the database role {role} on "
            f"{' and '.join(filtered)}: PostgreSQL would show the job only the rows a policy "
            "lets it see (none, when there is no policy), so a snapshot whose order link it "
            "cannot see would look unlinked and be deleted. The job runs with row_security "
            "off, so such a query fails instead; nothing was marked or deleted. Give the role "
            f"BYPASSRLS: ALTER ROLE {role} BYPASSRLS; (as a superuser, or on PostgreSQL 16 "
            f"and later as a role that has BYPASSRLS and ADMIN OPTION on {role}). A policy "
            "for the role is no substitute: the database cannot confirm that policies show "
            'every row (see docs/safety.md, "Every row, or no run")'
        )

    # -- advice ---------------------------------------------------------------------------

    def missing_indexes(self, key_matching: KeyMatching | None = None) -> list[str]:
        """The CREATE INDEX statements that would make the candidate queries cheap, for the
        indexes the application database lacks. The job never creates them itself: on a
        busy application table that is the owner's decision (and CONCURRENTLY cannot run
        inside the job's transactions).

        With a store that ignores case or normalization (`key_matching`), the shared-key
        lookup compares folded keys (engine.key_fold), which only an index on that very
        expression serves; on PostgreSQL the planner is asked whether an index serves it.
        SQLite cannot have one (the fold is a function of the job's connections only), so
        it gets no advice for it: each lookup reads the live rows (docs/safety.md)."""
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
        folding = key_matching is not None and not key_matching.exact
        if folding and not self.is_sqlite and not self._folded_lookup_indexed(key_matching):
            column = sa.column("storageKey", sa.Text)  # unqualified, as an index names it
            folded = key_fold(column, key_matching, sqlite=False)
            expression = folded.compile(dialect=self.engine.dialect)
            advice.append(
                f"CREATE INDEX{concurrently} IF NOT EXISTS "
                f'"{f.name}_storageKey_{key_matching.name.replace("+", "_")}_idx" '
                f'ON {quoted(f)} (({expression})) WHERE "deletedAt" IS NULL;'
            )
        elif not folding and not _has_index_leading_with(inspector, f, "storageKey"):
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

    def _folded_lookup_indexed(self, key_matching: KeyMatching) -> bool:
        """Whether PostgreSQL can serve the folded shared-key lookup (Journal.keys_in_use)
        with an index: its plan, with sequential scans off, has an index condition on
        "storageKey" (a full scan of another index has none)."""
        f = self.files.c
        probe = sa.select(f.fileId).where(
            f.deletedAt.is_(None),
            key_fold(f.storageKey, key_matching, sqlite=False)
            == key_fold(sa.literal("a.pdf", sa.Text), key_matching, sqlite=False),
        )
        literal = {"literal_binds": True}
        sql = str(probe.compile(dialect=self.engine.dialect, compile_kwargs=literal))
        with self.reading() as conn, conn.begin():
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}").scalar_one()
        return any('"storageKey"' in condition for condition in _index_conditions(plan))

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


def _index_conditions(plan: Any) -> list[str]:
    """Every "Index Cond" in a PostgreSQL JSON plan (nested nodes included)."""
    if isinstance(plan, list):
        return [c for item in plan for c in _index_conditions(item)]
    if not isinstance(plan, dict):
        return []
    found = [plan["Index Cond"]] if "Index Cond" in plan else []
    return found + [c for value in plan.values() for c in _index_conditions(value)]


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
    """Reflect an application table and check it is one (`_check_is_table`) and has the
    columns the job needs.

    `setting` is the database resource's field that names the table, for the message.
    Raises SchemaError, or ConfigError when the database cannot be reached.
    """
    qualified = f"{schema}.{name}" if schema else name
    try:
        with engine.connect() as conn:
            _check_is_table(conn, name, schema, setting)
            table = sa.Table(name, metadata, schema=schema, autoload_with=conn)
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


#: pg_class.relkind of what the job reads as an application table: an ordinary table, or a
#: partitioned one (whose rows are all its partitions' rows).
TABLE_KINDS = ("r", "p")
#: What else a name may be (PostgreSQL's pg_class.relkind, SQLite's sqlite_master.type), and
#: why its rows need not be the application's table's rows.
NOT_TABLES = {
    "v": ("a view", "a view shows the rows its query selects (e.g. one tenant's)"),
    "view": ("a view", "a view shows the rows its query selects (e.g. one tenant's)"),
    "m": ("a materialized view", "a materialized view holds the rows of its last refresh"),
    "f": (
        "a foreign table",
        "a foreign table shows another server's rows, as far as its user mapping may see",
    ),
}


def _check_is_table(conn: Connection, name: str, schema: str | None, setting: str) -> None:
    """Raise SchemaError unless `name` is a table whose rows are all the application's.

    The job must see every row of the application's tables, so a view (which may filter
    them, e.g. by tenant), a materialized view (stale), a foreign table or a single
    partition (some rows of a partitioned table) is refused, as is, with no `app_schema`,
    a name that more than one schema of the session's search_path holds (e.g. the role's
    own "$user" schema shadowing the application's: which one an unqualified name reads
    depends on the role). PostgreSQL: pg_class.relkind must be 'r' or 'p' (sqlite_master's
    type 'table' on SQLite). A name found nowhere is left to reflection, which says so.
    """
    qualified = f"{schema}.{name}" if schema else name
    fix = f"set {setting} (and app_schema, if it is in another schema) on the database resource"
    if conn.dialect.name == "sqlite":
        master = f'"{schema}".sqlite_master' if schema else "sqlite_master"
        kinds = conn.execute(
            sa.text(
                f"SELECT type FROM {master} WHERE type IN ('table', 'view') "
                "AND lower(name) = lower(:name)"  # SQLite's names are case-insensitive
            ),
            {"name": name},
        ).scalars()
        for kind in kinds:
            if kind != "table":
                what, why = NOT_TABLES[kind]
                raise SchemaError(
                    f'"{qualified}" is {what}, not a table: the job must read every row of '
                    f"the application's table, and {why}. Nothing was touched; {fix} to name "
                    "the table itself"
                )
        return
    if schema is not None:
        schemas = [schema]
    else:
        schemas = conn.execute(sa.text("SELECT current_schemas(false)::text[]")).scalar_one()
    found = conn.execute(
        sa.text(
            "SELECT n.nspname::text AS schema, c.relkind, c.relispartition, "
            "(SELECT i.inhparent::regclass::text FROM pg_catalog.pg_inherits AS i "
            " WHERE i.inhrelid = c.oid AND c.relispartition) AS parent "
            "FROM pg_catalog.pg_class AS c "
            "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE c.relname = :name AND n.nspname::text = ANY (CAST(:schemas AS text[]))"
        ),
        {"name": name, "schemas": schemas},
    ).all()
    found.sort(key=lambda row: schemas.index(row.schema))  # search_path order
    if len(found) > 1:
        where = ", ".join(row.schema for row in found)
        raise SchemaError(
            f'"{name}" ({setting}) is in more than one schema of the search_path ({where}): '
            f"the job would read the one in {found[0].schema}, which need not be the one the "
            'application uses (its search_path may differ, e.g. by a "$user" schema). '
            "Nothing was touched; set app_schema on the database resource to the "
            "application's schema"
        )
    if not found:
        return
    [relation] = found
    if relation.relispartition:
        raise SchemaError(
            f'"{qualified}" is a partition of {relation.parent}, holding only some of its '
            f"rows: the job must read every row. Nothing was touched; {fix} to name the "
            "partitioned table"
        )
    if relation.relkind not in TABLE_KINDS:
        what, why = NOT_TABLES.get(
            relation.relkind,
            (f"a relation of kind {relation.relkind!r}", "only a table holds its own rows"),
        )
        raise SchemaError(
            f'"{qualified}" is {what}, not a table: the job must read every row of the '
            f"application's table, and {why}. Nothing was touched; {fix} to name the table "
            "itself"
        )
