"""All SQL the job runs: the candidates, the lock + re-check + mark protocol, its own tables.

The application's tables are read as they are (reflected, names configurable); the only
column ever written is `"SnapshotFiles"."deletedAt"`. Everything else the job keeps lives
in tables of its own, in a schema of its own on PostgreSQL (a name prefix on SQLite):

- `cleanup_runs`: one row per run, with its `runAt`, `deletedCount` and `errors`.
- `pending_deletes`: the journal of rows marked deleted whose object may still exist.

The protocol (see `mark_batch`): a row is marked and journaled in one transaction that
first locks it and then re-checks its linkage; only after that commit is the object deleted,
and its journal entry is removed once the store confirms it is gone. A crash anywhere
leaves either a live row with its object, or a marked row with a journal entry that the
next run finishes.

No transaction on the application's database is open while the store works: a run takes
journal entries as a committed *lease* (`claim_pending`: `claimed_by` = its run id,
`lease_until`), deletes their objects with no transaction open, then settles them in a new
short transaction that only touches entries it still holds (`settle_pending`). That
transaction also adds what it settled to the settling run's `cleanup_runs` row, so an
object is counted once, by the run that settled it, even when that run is later killed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import URL, Connection, Engine, make_url

from snapshot_ops import migrations
from snapshot_ops.errors import ConfigError, SchemaError
from snapshot_ops.rules import TEMPORARY_TYPE
from snapshot_ops.storage.base import check_key, refused_by
from snapshot_ops.timeformat import ColumnTimes, TimeFormat, TimeFormatError, check_setting, detect

#: Columns of the application's tables that the job reads (and, for deletedAt, writes).
SNAPSHOT_COLUMNS = ("fileId", "snapshotType", "storageKey", "sizeBytes", "createdAt", "deletedAt")
ATTACHMENT_COLUMNS = ("fileId",)

#: PostgreSQL advisory lock key held while the job creates its own schema or migrates its
#: tables (and while it rewrites the savings table).
SCHEMA_LOCK_KEY = 0x534E4150  # "SNAP"

#: How many error messages a run keeps in its log row; all are counted.
MAX_STORED_ERRORS = 200

#: Execution option of connections that only read (SQLite: deferred BEGIN, no write lock).
READ_ONLY_OPTION = "snapshot_ops_read_only"

#: A journal entry whose delete failed once is tried again by the next run (a passing
#: outage). One that failed n >= 2 times is not tried again before
#: min(BACKOFF_BASE * 2**(n-2), BACKOFF_CAP) has passed (1 h, 2 h, 4 h, ... 7 days); until
#: then every run reports it as an error by name without sending it to the store.
BACKOFF_BASE = dt.timedelta(hours=1)
BACKOFF_CAP = dt.timedelta(days=7)

#: Run-log statuses: `running` until the run records its end; `crashed` when a later run
#: found its Dagster run ended without closing its row (worker killed).
RUNNING, SUCCEEDED, FAILED, CRASHED = "running", "succeeded", "failed", "crashed"


def backoff(attempts: int) -> dt.timedelta:
    """How long an entry whose delete has failed `attempts` times waits to be retried:
    nothing after one failure, then 1 h doubling with each failure, at most BACKOFF_CAP."""
    if attempts < 2:
        return dt.timedelta(0)
    return min(BACKOFF_BASE * 2 ** min(attempts - 2, 30), BACKOFF_CAP)


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
    """An engine for the application database, set up for the locking protocol."""
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

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


@dataclass(frozen=True)
class Candidate:
    file_id: str
    storage_key: str
    size_bytes: int | None


@dataclass(frozen=True)
class CandidateSummary:
    """Read-only figures about what a run would delete and keep."""

    candidates: int
    known_bytes: int
    unknown_size: int
    kept_linked: int  # expired parse-session snapshots kept because an order links them


@dataclass(frozen=True)
class MarkedBatch:
    marked: list[Candidate]
    attached_meanwhile: list[str]  # passed the first check, linked at the re-check
    refused: list[tuple[Candidate, str]]  # unsafe keys: left live, reported
    cursor: tuple[Any, Any] | None  # keyset position after this batch; None: no rows left


@dataclass(frozen=True)
class ReadBatch:
    """Candidates read for one batch, not yet locked (`Catalog.read_batch`)."""

    passed: dict[Any, Candidate]  # raw "fileId" -> candidate, in keyset order; not refused
    refused: list[tuple[Candidate, str]]  # unsafe keys: left live, reported
    cursor: tuple[Any, Any] | None  # keyset position after the rows read; None: none left


@dataclass(frozen=True)
class PendingDelete:
    file_id: str
    storage_key: str
    size_bytes: int | None
    attempts: int


@dataclass(frozen=True)
class BackedOff:
    """A journal entry waiting out its backoff: reported by every run, not yet retried."""

    file_id: str
    attempts: int
    next_attempt_at: dt.datetime
    last_error: str | None


@dataclass(frozen=True)
class Settled:
    """What one settle transaction changed: only entries the run still held count."""

    deleted: int = 0
    missing: int = 0
    bytes_reclaimed: int = 0
    file_ids: frozenset[str] = frozenset()


class Catalog:
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
        if self.is_sqlite:  # SQLite has no schemas: the namespace is a name prefix
            schema, prefix = None, f"{ops_schema}_"
        else:
            schema, prefix = ops_schema, ""
        self.ops_schema = None if self.is_sqlite else ops_schema
        self.own_prefix = prefix
        own = sa.MetaData(schema=schema)
        self.runs = sa.Table(
            f"{prefix}cleanup_runs",
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
            f"{prefix}pending_deletes",
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
                f'"{f.name}_expiry_idx" ON {_quoted(f)} ("createdAt"{collate}, "fileId") '
                f'WHERE "snapshotType" = \'{TEMPORARY_TYPE}\' AND "deletedAt" IS NULL;'
            )
        if not _has_index_leading_with(inspector, f, "storageKey"):
            # Before deleting an object the job asks whether a live row still names it.
            advice.append(
                f"CREATE INDEX{concurrently} IF NOT EXISTS "
                f'"{f.name}_storageKey_idx" ON {_quoted(f)} ("storageKey") '
                f'WHERE "deletedAt" IS NULL;'
            )
        if not _has_index_leading_with(inspector, a, "fileId"):
            advice.append(
                f"CREATE INDEX{concurrently} IF NOT EXISTS "
                f'"{a.name}_fileId_idx" ON {_quoted(a)} ("fileId");'
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
            if self.ops_schema is not None:
                # A least-privileged role owns a schema an administrator made for it but may
                # not create schemas (CREATE SCHEMA IF NOT EXISTS needs that right even when
                # the schema exists), so only a missing schema is created.
                if not sa.inspect(conn).has_schema(self.ops_schema):
                    conn.execute(sa.schema.CreateSchema(self.ops_schema))
            migrations.upgrade(conn, schema=self.ops_schema, prefix=self.own_prefix)

    def reading(self) -> Connection:
        """A connection for reads only: on SQLite its transaction takes no write lock."""
        return self.engine.connect().execution_options(**{READ_ONLY_OPTION: True})

    def start_run(
        self,
        *,
        run_id: str,
        run_at: dt.datetime,
        reference_time: dt.datetime,
        cutoff: dt.datetime,
        dry_run: bool,
        candidate_count: int,
    ) -> None:
        """Open the run-log row of Dagster run `run_id` (status `running`, counters 0).

        Idempotent: a re-execution's later steps call it again for their own run id, which
        the first step (skipped in a re-execution from failure) would otherwise have made.
        """
        with self.engine.begin() as conn:
            exists = conn.execute(
                sa.select(self.runs.c.run_id).where(self.runs.c.run_id == run_id)
            ).first()
            if exists is None:
                conn.execute(
                    sa.insert(self.runs).values(
                        run_id=run_id,
                        run_at=run_at,
                        reference_time=reference_time,
                        cutoff=cutoff,
                        dry_run=dry_run,
                        status=RUNNING,
                        candidate_count=candidate_count,
                    )
                )

    def finish_run(
        self, run_id: str, *, status: str, errors: Sequence[str], **counts: int
    ) -> dict[str, Any]:
        """Close the run's row with `status` and `errors`; return its counters.

        The deleted, missing and bytes counters are not written here: each settle
        transaction adds to them (settle_pending), so they hold exactly what the run settled.
        `counts` may set the others (e.g. a dry run's would-be `marked_count`).
        """
        r = self.runs.c
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(self.runs)
                .where(r.run_id == run_id)
                .values(
                    status=status,
                    error_count=len(errors),
                    errors=json.dumps(list(errors[:MAX_STORED_ERRORS])),
                    finished_at=dt.datetime.now(dt.UTC),
                    **counts,
                )
            )
            row = conn.execute(
                sa.select(
                    r.marked_count, r.deleted_count, r.missing_count, r.bytes_reclaimed
                ).where(r.run_id == run_id)
            ).one()
        return dict(row._mapping)

    def running_runs(self, *, besides: str) -> list[str]:
        """Run ids whose log row still says `running`, other than `besides`."""
        r = self.runs.c
        with self.reading() as conn:
            return list(
                conn.execute(
                    sa.select(r.run_id).where(r.status == RUNNING, r.run_id != besides)
                ).scalars()
            )

    def close_crashed_runs(self, run_ids: Sequence[str], reason: str) -> None:
        """Close the rows of runs known to have ended without closing them, as `crashed`,
        and release their journal leases so any run can finish those entries at once.

        What such a run settled before it died stays in its row's counters.
        """
        if not run_ids:
            return
        r, p = self.runs.c, self.pending.c
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(self.runs)
                .where(self._in(r.run_id, list(run_ids)), r.status == RUNNING)
                .values(
                    status=CRASHED,
                    error_count=r.error_count + 1,
                    errors=json.dumps([reason]),
                    finished_at=dt.datetime.now(dt.UTC),
                )
            )
            conn.execute(
                sa.update(self.pending)
                .where(self._in(p.claimed_by, list(run_ids)))
                .values(claimed_by=None, lease_until=None)
            )

    def release_leases(self, run_id: str) -> None:
        """Give back every journal entry `run_id` still holds (a run that failed)."""
        p = self.pending.c
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(self.pending)
                .where(p.claimed_by == run_id)
                .values(claimed_by=None, lease_until=None)
            )

    def finish_run_if_running(self, run_id: str, *, errors: Sequence[str]) -> None:
        """Mark a run failed unless it already recorded its own end."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(self.runs)
                .where(self.runs.c.run_id == run_id, self.runs.c.status == RUNNING)
                .values(
                    status=FAILED,
                    error_count=len(errors),
                    errors=json.dumps(list(errors[:MAX_STORED_ERRORS])),
                    finished_at=dt.datetime.now(dt.UTC),
                )
            )

    # -- time columns -----------------------------------------------------------------------

    @property
    def times(self) -> ColumnTimes:
        """How "createdAt" and "deletedAt" store time, checked once per catalog.

        Every comparison with "createdAt" and every write of "deletedAt" goes through this.
        Raises TimeFormatError (naming the column, a sample value and the setting to use)
        when the live rows' "createdAt" cannot be read for sure.
        """
        if self._times is None:
            f = self.files.c
            with self.engine.connect() as conn:
                created = detect(
                    conn,
                    f.createdAt,
                    self._declared["createdAt"],
                    # The rows the rule can select, which the expiry index holds.
                    scope=sa.and_(f.snapshotType == TEMPORARY_TYPE, f.deletedAt.is_(None)),
                    setting=self.time_format,
                    where=f'"createdAt" of {_quoted(self.files)}',
                )
            self._times = ColumnTimes(created, self._deleted_format(created))
        return self._times

    def _deleted_format(self, created: TimeFormat) -> TimeFormat:
        """How "deletedAt" is written: by its own type when PostgreSQL's column is a
        timestamp (naive: UTC wall time, whatever the session's TimeZone), otherwise as the
        application writes "createdAt": its two time columns share one representation."""
        declared = self._declared["deletedAt"]
        if not self.is_sqlite and isinstance(declared, sa.DateTime):
            return TimeFormat("timestamp", naive=not getattr(declared, "timezone", False))
        if created.kind != "timestamp":
            return created
        if self.time_format in ("iso_text", "epoch_seconds", "epoch_milliseconds"):
            return TimeFormat(self.time_format)
        raise TimeFormatError(
            f'"deletedAt" of {_quoted(self.files)} is declared {declared}, not a timestamp '
            'like "createdAt", so how to write it is unknown; nothing was touched. Set '
            "time_format on the database resource (SNAPSHOT_OPS_TIME_FORMAT) to iso_text, "
            "epoch_seconds or epoch_milliseconds."
        )

    # -- candidates -------------------------------------------------------------------------

    def _expired(self, cutoff: dt.datetime) -> sa.ColumnElement[bool]:
        f = self.files.c
        return sa.and_(
            f.snapshotType == TEMPORARY_TYPE,
            f.deletedAt.is_(None),
            # A plain comparison on the column, so the expiry index serves it; `bound`
            # writes the cutoff in the column's own representation, where this is exact.
            self._created < self.times.created.bound(cutoff),
        )

    def database_now(self) -> dt.datetime:
        """The database server's clock (aware, UTC), to check the worker's clock against."""
        with self.reading() as conn:
            if self.is_sqlite:
                raw = conn.exec_driver_sql("SELECT strftime('%Y-%m-%dT%H:%M:%f', 'now')")
                return dt.datetime.fromisoformat(raw.scalar_one()).replace(tzinfo=dt.UTC)
            value = conn.exec_driver_sql("SELECT statement_timestamp()").scalar_one()
        return value.astimezone(dt.UTC)

    def keys_in_use(self, conn: Connection, keys: Sequence[str]) -> set[str]:
        """Those of `keys` that a live row (`deletedAt` null) still points at.

        Two rows may share one object, e.g. an order's snapshot reusing the object of an
        expired parse-session one: the object must stay while any row that must stay
        points at it, whatever happens to the other row.
        """
        if not keys:
            return set()
        f = self.files.c
        return set(
            conn.execute(
                sa.select(f.storageKey)
                .where(self._in(f.storageKey, list(set(keys))), f.deletedAt.is_(None))
                .distinct()
            ).scalars()
        )

    def shared_keys(self, keys: Sequence[str]) -> set[str]:
        """`keys_in_use` in a read-only connection of its own: asked right before a batch
        the run leased at marking is deleted (as `claim_pending` asks for the entries it
        leases), so the window in which a new live row could take such a key stays as
        short as it was."""
        with self.reading() as conn:
            return self.keys_in_use(conn, keys)

    def _in(self, column: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
        """`column IN values`. On PostgreSQL as `= ANY(array)`: one bound array instead of
        a thousand bound values, which SQLAlchemy would otherwise render one by one (it
        was the largest CPU cost of a batch)."""
        if self.is_sqlite:
            return column.in_(values)
        array_type = ARRAY(column.type)
        array = sa.cast(sa.bindparam(None, list(values), type_=array_type), array_type)
        return column == sa.any_(array)

    def _linked(self) -> sa.Exists:
        return sa.exists().where(self.attachments.c.fileId == self.files.c.fileId)

    def summarize(self, cutoff: dt.datetime) -> CandidateSummary:
        """Count what the rule selects now, and what it keeps only because it is linked."""
        f = self.files.c
        with self.reading() as conn:
            row = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(sa.case((f.sizeBytes > 0, f.sizeBytes))), 0),
                    sa.func.count() - sa.func.count(sa.case((f.sizeBytes >= 0, 1))),
                ).where(self._expired(cutoff), ~self._linked())
            ).one()
            kept = conn.execute(
                sa.select(sa.func.count()).where(self._expired(cutoff), self._linked())
            ).scalar_one()
        return CandidateSummary(
            candidates=row[0], known_bytes=int(row[1]), unknown_size=row[2], kept_linked=kept
        )

    def count_undated(self) -> int:
        """Live, unlinked ParseSessionSnapshot rows whose "createdAt" is NULL.

        The rule cannot date them, so no run ever expires them (NULL is never older than a
        cutoff); they are counted so that runs and the backlog check can report them.
        """
        f = self.files.c
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).where(
                    f.snapshotType == TEMPORARY_TYPE,
                    f.deletedAt.is_(None),
                    f.createdAt.is_(None),
                    ~self._linked(),
                )
            ).scalar_one()

    def iter_candidates(self, cutoff: dt.datetime, batch_size: int) -> Iterator[list[Candidate]]:
        """Stream the current candidates in keyset order without locking (dry-run listings)."""
        cursor = None
        while True:
            with self.reading() as conn:
                rows = conn.execute(self._candidate_query(cutoff, cursor, batch_size)).all()
            if not rows:
                return
            yield [_candidate(r) for r in rows]
            cursor = (rows[-1].createdAt, rows[-1].fileId)

    def _candidate_query(
        self,
        cutoff: dt.datetime,
        cursor: tuple[Any, Any] | None,
        limit: int,
        *,
        upper: tuple[Any, Any] | None = None,
    ) -> sa.Select[Any]:
        f = self.files.c
        query = sa.select(f.fileId, f.storageKey, f.sizeBytes, f.createdAt).where(
            self._expired(cutoff), ~self._linked()
        )
        if cursor is not None:
            # The cursor holds createdAt as stored; it is compared, like the ORDER BY, on
            # the same expression, so the walk sees each row once whatever the format.
            query = query.where(
                sa.tuple_(self._created, f.fileId)
                > sa.tuple_(
                    sa.literal(cursor[0], f.createdAt.type), sa.literal(cursor[1], f.fileId.type)
                )
            )
        if upper is not None:  # the last key of a range, itself included
            query = query.where(
                sa.tuple_(self._created, f.fileId)
                <= sa.tuple_(
                    sa.literal(upper[0], f.createdAt.type), sa.literal(upper[1], f.fileId.type)
                )
            )
        return query.order_by(self._created, f.fileId).limit(limit)

    def range_boundaries(
        self, cutoff: dt.datetime, *, every: int, most: int
    ) -> list[tuple[Any, Any]]:
        """Up to `most` keys splitting the current candidates into ranges of `every` rows.

        The every-th, 2·every-th, ... candidate's ("createdAt" as stored, "fileId") in the
        marking walk's keyset order, read without locks (each key one indexed query that
        skips `every - 1` rows). Range i is then the keys after boundary i-1 up to and
        including boundary i (the first is unbounded below, the last above), so the ranges
        cover the whole key space whatever changes after this read. Fewer keys come back
        when the candidates run out.
        """
        keys: list[tuple[Any, Any]] = []
        with self.reading() as conn:
            while len(keys) < most:
                query = self._candidate_query(cutoff, keys[-1] if keys else None, 1)
                row = conn.execute(query.offset(every - 1)).first()
                if row is None:
                    break
                keys.append((row.createdAt, row.fileId))
        return keys

    # -- the protocol -----------------------------------------------------------------------

    def mark_batch(
        self,
        *,
        cutoff: dt.datetime,
        cursor: tuple[Any, Any] | None,
        limit: int,
        run_id: str,
        marked_at: dt.datetime,
        dry_run: bool = False,
        refusals: Callable[[Sequence[str]], Mapping[str, str]] | None = None,
        upper: tuple[Any, Any] | None = None,
        lease: dt.timedelta | None = None,
    ) -> MarkedBatch:
        """Read up to `limit` candidates, leave the refused ones live, lock, re-check and
        mark the rest.

        First, without a lock and outside any transaction, the next candidates are read
        and `refusals` (the storage backend's, `StorageBackend.refusals`; the shared key
        checks when None) names the keys the store would refuse: those rows are never
        marked, so they stay live, fixable, and are reported with the reason. The storage
        is asked before the locking transaction begins, so no transaction on the
        application's database is open while it answers.

        This is where a concurrent attach is made safe. The application attaches a file by
        locking its row (`SELECT ... FOR UPDATE`) and inserting into OrderAttachments only
        if `deletedAt` is still null. Then, in one transaction:

        1. `SELECT ... FOR UPDATE` locks the remaining candidates (those still live, expired
           and unlinked). If an attach holds a row, this waits for it; but under READ
           COMMITTED the statement's `NOT EXISTS` was evaluated on a snapshot taken
           *before* the wait, so it cannot see that attach. A row whose storage key changed
           since it was checked is left live for the next run.
        2. A new statement therefore re-reads OrderAttachments for the locked ids; it sees
           every attach committed so far, and no new attach can start: they need the lock.
        3. Unlinked rows get `deletedAt` and a journal entry; the transaction commits.
           An attach that was waiting then finds `deletedAt` set and does not attach.

        Only after this commit are the objects deleted (cleanup.mark_and_delete), so the
        worst a crash can do is leave a marked row whose journal entry the next run finishes.
        With `lease`, the journal entries are written already leased to `run_id` until now +
        `lease` (as `claim_pending` would lease them), so the run deletes this batch's
        objects without a claim of its own; a run that dies holding them gives them back
        when its lease ends or when a later run closes it (`close_crashed_runs`).
        On SQLite, BEGIN IMMEDIATE (see make_engine) makes the whole batch exclusive instead.
        The cursor moves past every row read, refused ones included, so a walk reads each
        row once. With `upper` (a key from `range_boundaries`) only candidates up to that
        key, itself included, are read: a range's walk never marks a row of the next range.
        """
        read = self.read_batch(
            cutoff=cutoff, cursor=cursor, limit=limit, refusals=refusals, upper=upper
        )
        return self.lock_and_mark(
            read, cutoff=cutoff, run_id=run_id, marked_at=marked_at, dry_run=dry_run, lease=lease
        )

    def read_batch(
        self,
        *,
        cutoff: dt.datetime,
        cursor: tuple[Any, Any] | None,
        limit: int,
        refusals: Callable[[Sequence[str]], Mapping[str, str]] | None = None,
        upper: tuple[Any, Any] | None = None,
    ) -> ReadBatch:
        """The first half of `mark_batch`: read up to `limit` candidates after `cursor`
        (up to `upper`) without a lock and outside any transaction, and ask `refusals`
        which of their keys the store would refuse. Nothing is written; `lock_and_mark`
        re-checks every row under its lock, so the read may happen any time before it
        (cleanup.mark_and_delete reads the next batch while the current one is marked)."""
        self.times  # noqa: B018 -- checked before the transaction (on SQLite it is exclusive)
        with self.engine.connect() as conn:
            rows = conn.execute(self._candidate_query(cutoff, cursor, limit, upper=upper)).all()
        if not rows:
            return ReadBatch({}, [], None)
        # The last row in the query's own order (the database's collation, not Python's).
        next_cursor = (rows[-1].createdAt, rows[-1].fileId)
        read = {row.fileId: _candidate(row) for row in rows}
        keys = [c.storage_key for c in read.values()]
        reasons = refusals(keys) if refusals is not None else refused_by(check_key, keys)
        # Refused rows are never marked: they stay live and are reported.
        refused = [(c, reasons[c.storage_key]) for c in read.values() if c.storage_key in reasons]
        passed = {i: c for i, c in read.items() if c.storage_key not in reasons}
        return ReadBatch(passed, refused, next_cursor)

    def lock_and_mark(
        self,
        read: ReadBatch,
        *,
        cutoff: dt.datetime,
        run_id: str,
        marked_at: dt.datetime,
        dry_run: bool = False,
        lease: dt.timedelta | None = None,
    ) -> MarkedBatch:
        """The second half of `mark_batch`: lock, re-check and mark the rows `read_batch`
        read and the store did not refuse (steps 1 to 3 there), in one transaction."""
        passed, refused, next_cursor = read.passed, read.refused, read.cursor
        if next_cursor is None:
            return MarkedBatch([], [], [], None)
        if not passed:
            return MarkedBatch([], [], refused, next_cursor)
        with self.engine.connect() as conn, conn.begin() as transaction:
            # Step 1: lock the candidates (waiting for any attach that holds one).
            f = self.files.c
            query = (
                sa.select(f.fileId, f.storageKey)
                .where(self._in(f.fileId, list(passed)), self._expired(cutoff), ~self._linked())
                .order_by(f.createdAt, f.fileId)
            )
            if not self.is_sqlite:
                query = query.with_for_update(of=self.files)
            safe = {
                row.fileId: passed[row.fileId]
                for row in conn.execute(query)
                if row.storageKey == passed[row.fileId].storage_key  # the key that was checked
            }
            # Steps 2 and 3: one *new* statement re-checks the linkage and marks.
            leased_until = None if lease is None else dt.datetime.now(dt.UTC) + lease
            marked_ids = (
                self._recheck_and_mark(conn, list(safe), run_id, marked_at, leased_until)
                if safe
                else set()
            )
            if marked_ids and not dry_run:  # the run's row counts its marks as they commit
                r = self.runs.c
                conn.execute(
                    sa.update(self.runs)
                    .where(r.run_id == run_id)
                    .values(marked_count=r.marked_count + len(marked_ids))
                )
            if dry_run:
                transaction.rollback()
        marked = [c for raw_id, c in safe.items() if raw_id in marked_ids]
        attached = [c.file_id for raw_id, c in safe.items() if raw_id not in marked_ids]
        # Only an empty batch ends the walk: a short one can come from rows that changed
        # while this statement waited for their locks (another run marked them).
        return MarkedBatch(marked, attached, refused, next_cursor)

    def _recheck_and_mark(
        self,
        conn: Connection,
        ids: list[Any],
        run_id: str,
        marked_at: dt.datetime,
        leased_until: dt.datetime | None = None,
    ) -> set[Any]:
        """Mark the locked rows that are still unlinked, journal them; return their ids.

        Runs as a statement of its own after the rows are locked, so under READ COMMITTED
        its NOT EXISTS reads a snapshot taken after every attach that could still commit:
        attaches need the row locks this transaction holds.
        """
        f = self.files.c
        marking = (
            sa.update(self.files)
            .where(self._in(f.fileId, ids), f.deletedAt.is_(None), ~self._linked())
            .values(deletedAt=self.times.deleted.encode(marked_at))
            .returning(f.fileId, f.storageKey, f.sizeBytes)
        )
        journal_columns = ["file_id", "storage_key", "size_bytes", "run_id", "marked_at"]
        # The lease, when the marking run deletes the batch itself (claimed_by NULL: free).
        claimed_by = None if leased_until is None else run_id
        journal_columns += ["claimed_by", "lease_until"]
        if self.is_sqlite:  # no data-modifying CTEs: two statements, same transaction
            rows = conn.execute(marking).all()
            if rows:
                conn.execute(
                    sa.insert(self.pending),
                    [
                        dict(
                            zip(
                                journal_columns,
                                (
                                    *(str(r.fileId), r.storageKey, r.sizeBytes),
                                    *(run_id, marked_at, claimed_by, leased_until),
                                ),
                                strict=True,
                            )
                        )
                        for r in rows
                    ],
                )
            return {r.fileId for r in rows}
        # PostgreSQL: mark and journal in one round trip.
        marked = marking.cte("marked")
        journal = (
            sa.insert(self.pending)
            .from_select(
                journal_columns,
                sa.select(
                    sa.cast(marked.c.fileId, sa.Text),
                    marked.c.storageKey,
                    marked.c.sizeBytes,
                    sa.literal(run_id, sa.Text),
                    sa.literal(marked_at, sa.DateTime(timezone=True)),
                    sa.literal(claimed_by, sa.Text),
                    sa.literal(leased_until, sa.DateTime(timezone=True)),
                ),
            )
            .returning(self.pending.c.file_id)
        )
        by_text = {str(i): i for i in ids}
        return {by_text[file_id] for file_id in conn.execute(journal).scalars()}

    def claim_pending(
        self,
        *,
        run_id: str,
        now: dt.datetime,
        lease: dt.timedelta,
        after: str | None = None,
        limit: int | None = None,
        only: Sequence[str] | None = None,
    ) -> tuple[list[PendingDelete], list[str]]:
        """Lease journal entries to `run_id` until `now + lease`, in one short transaction.

        Takes entries no run holds (or whose lease has run out) and that are not waiting out
        a backoff: either the next `limit` after `after` in file_id order (to sweep the whole
        journal) or those among `only` (the batch this run has just marked). The lease is
        committed before the caller talks to the store, so no transaction stays open during
        the delete, and another run skips these entries until the lease ends.

        Entries whose object a live row still names (see `keys_in_use`) are not this row's
        alone to delete: they are dropped from the journal here, object kept.
        Returns (leased entries to delete, in file_id order; file_ids dropped as shared).
        """
        p = self.pending.c
        free = sa.or_(p.claimed_by.is_(None), p.lease_until < now)
        due = sa.or_(p.next_attempt_at.is_(None), p.next_attempt_at <= now)
        pick = sa.select(p.file_id).where(free, due)
        if after is not None:
            pick = pick.where(p.file_id > after)
        if only is not None:
            pick = pick.where(self._in(p.file_id, list(only)))
        pick = pick.order_by(p.file_id).limit(limit)
        if not self.is_sqlite:  # a competing claim's rows are skipped, not waited for
            pick = pick.with_for_update(skip_locked=True)
        claim = (
            sa.update(self.pending)
            # `free` again: under READ COMMITTED a row another claim leased meanwhile is
            # re-checked here and left alone.
            .where(p.file_id.in_(pick), free)
            .values(claimed_by=run_id, lease_until=now + lease)
            .returning(p.file_id, p.storage_key, p.size_bytes, p.attempts)
        )
        with self.engine.begin() as conn:
            entries = sorted(
                (PendingDelete(*row) for row in conn.execute(claim)), key=lambda e: e.file_id
            )
            in_use = self.keys_in_use(conn, [e.storage_key for e in entries])
            shared = [e.file_id for e in entries if e.storage_key in in_use]
            if shared:
                conn.execute(sa.delete(self.pending).where(self._in(p.file_id, shared)))
        return [e for e in entries if e.storage_key not in in_use], shared

    def settle_pending(
        self,
        *,
        run_id: str,
        now: dt.datetime,
        deleted: dict[str, int],
        missing: Sequence[str],
        failed: dict[str, tuple[int, str]],
        shared: Sequence[str] = (),
    ) -> Settled:
        """Settle what the store answered for entries `run_id` leased, in one transaction.

        `deleted` maps file_id -> bytes freed, `missing` lists objects that were already
        gone, `failed` maps file_id -> (attempts before this one, error). Only entries still
        leased by `run_id` change: gone ones leave the journal and are counted, failed ones
        are released with one more attempt and a backoff (`backoff`). What was counted is
        added to `run_id`'s cleanup_runs row in the same transaction, so a run killed right
        after still has it in its row, and no other run counts it again. `shared` lists
        entries whose object a live row still names: they leave the journal, object kept,
        uncounted (their ids are in the result's `file_ids` when they were still held).
        """
        p, r = self.pending.c, self.runs.c
        mine = p.claimed_by == run_id
        gone = list(deleted) + list(missing) + list(shared)
        with self.engine.begin() as conn:
            settled: set[str] = set()
            if gone:
                settled = set(
                    conn.execute(
                        sa.delete(self.pending)
                        .where(self._in(p.file_id, gone), mine)
                        .returning(p.file_id)
                    ).scalars()
                )
            if failed:  # one statement for all of them (executemany)
                conn.execute(
                    sa.update(self.pending)
                    .where(p.file_id == sa.bindparam("failed_id"), mine)
                    .values(
                        attempts=p.attempts + 1,
                        last_error=sa.bindparam("error"),
                        claimed_by=None,
                        lease_until=None,
                        next_attempt_at=sa.bindparam("retry_at"),
                    ),
                    [
                        {
                            "failed_id": file_id,
                            "error": error[:2000],
                            "retry_at": now + backoff(attempts + 1),
                        }
                        for file_id, (attempts, error) in failed.items()
                    ],
                )
            result = Settled(
                deleted=sum(1 for i in deleted if i in settled),
                missing=sum(1 for i in missing if i in settled),
                bytes_reclaimed=sum(size for i, size in deleted.items() if i in settled),
                file_ids=frozenset(settled),
            )
            if result.deleted or result.missing:
                conn.execute(
                    sa.update(self.runs)
                    .where(r.run_id == run_id)
                    .values(
                        deleted_count=r.deleted_count + result.deleted + result.missing,
                        missing_count=r.missing_count + result.missing,
                        bytes_reclaimed=r.bytes_reclaimed + result.bytes_reclaimed,
                    )
                )
        return result

    def backed_off(self, now: dt.datetime) -> list[BackedOff]:
        """Journal entries not to be retried before a later instant (failed deletes)."""
        p = self.pending.c
        with self.reading() as conn:
            rows = conn.execute(
                sa.select(p.file_id, p.attempts, p.next_attempt_at, p.last_error)
                .where(p.next_attempt_at > now)
                .order_by(p.file_id)
            ).all()
        return [BackedOff(*row) for row in rows]

    # -- releasing journal entries that cannot succeed -------------------------------------

    def release_pending(self, file_ids: Sequence[str]) -> list[str]:
        """Make the rows of these journal entries live again and drop the entries.

        In one transaction: the journal entries among `file_ids` are deleted, and only for
        the entries that were there, the row's `"deletedAt"` is set back to NULL. Ids that
        the journal does not hold are left alone (their rows are not touched), so releasing
        twice, or racing a run that just settled an entry, changes nothing. Rows are picked
        by id only, never by comparing timestamps. The object is not touched: a released
        row is live, can be fixed, and is a candidate again for the next run.

        An entry that a live run holds (an unexpired lease, see `claim_pending`) is left
        alone too: that run may be deleting its object right now, and its row must not
        become live meanwhile.

        Returns the released file ids. For an entry whose object the store refused (it can
        never be deleted by that key) or whose row's key was changed since it was marked.
        """
        if not file_ids:
            return []
        p, f = self.pending.c, self.files.c
        now = dt.datetime.now(dt.UTC)
        with self.engine.begin() as conn:
            released = list(
                conn.execute(
                    sa.delete(self.pending)
                    .where(
                        self._in(p.file_id, list(dict.fromkeys(file_ids))),
                        sa.or_(p.claimed_by.is_(None), p.lease_until <= now),
                    )
                    .returning(p.file_id)
                ).scalars()
            )
            if released:
                conn.execute(
                    sa.update(self.files).where(self._in(f.fileId, released)).values(deletedAt=None)
                )
        return released

    def stale_pending(self, *, limit: int) -> list[PendingDelete]:
        """Up to `limit` journal entries whose row now names another storage key.

        The row's owner changed its `"storageKey"` after it was marked (e.g. pointed a
        refused key at the real file): deleting the journaled key would miss the row's
        object, so such an entry is released (`release_pending`) instead of retried.
        Entries whose row no longer exists are not stale: their object is still deleted.
        """
        p, f = self.pending.c, self.files.c
        query = (
            sa.select(p.file_id, p.storage_key, p.size_bytes, p.attempts)
            .join_from(self.pending, self.files, f.fileId == sa.cast(p.file_id, f.fileId.type))
            .where(f.storageKey.is_distinct_from(p.storage_key))
            .order_by(p.file_id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [PendingDelete(*row) for row in conn.execute(query)]

    def journal(self) -> list[dict[str, Any]]:
        """Every journal entry with its row's current state, in file_id order.

        Each is a dict: `file_id`, `storage_key` (the journaled key), `row_storage_key`
        (the row's key now; None if the row is gone), `row_marked` (its `"deletedAt"` is
        set; None if the row is gone), `attempts`, `last_error`, `run_id`, `marked_at`
        (ISO 8601). Empty when the job never created its journal here.
        """
        p, f = self.pending.c, self.files.c
        if not sa.inspect(self.engine).has_table(self.pending.name, schema=self.pending.schema):
            return []
        query = (
            sa.select(
                p.file_id,
                p.storage_key,
                f.fileId.is_not(None).label("row_exists"),
                f.storageKey.label("row_storage_key"),
                f.deletedAt.is_not(None).label("row_marked"),
                p.attempts,
                p.last_error,
                p.run_id,
                p.marked_at,
            )
            .join_from(
                self.pending,
                self.files,
                f.fileId == sa.cast(p.file_id, f.fileId.type),
                isouter=True,
            )
            .order_by(p.file_id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        entries = []
        for row in rows:
            entry = row._asdict()
            exists = bool(entry.pop("row_exists"))
            entry["row_marked"] = bool(row.row_marked) if exists else None
            entry["marked_at"] = row.marked_at.isoformat() if row.marked_at else None
            entries.append(entry)
        return entries

    def pending_count(self) -> int:
        with self.reading() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(self.pending)).scalar_one()


def _has_index_leading_with(inspector: Any, table: sa.Table, column: str) -> bool:
    indexes = inspector.get_indexes(table.name, schema=table.schema)
    pk = inspector.get_pk_constraint(table.name, schema=table.schema)
    leading = [ix["column_names"][:1] for ix in indexes] + [pk.get("constrained_columns", [])[:1]]
    return [column] in leading


def _quoted(table: sa.Table) -> str:
    name = f'"{table.name}"'
    return f'"{table.schema}".{name}' if table.schema else name


def _candidate(row: Any) -> Candidate:
    return Candidate(str(row.fileId), row.storageKey, row.sizeBytes)


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
