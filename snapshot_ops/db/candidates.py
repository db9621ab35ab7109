"""The candidates and the lock + re-check + mark protocol.

A candidate is a live, expired, unlinked ParseSessionSnapshot row (snapshot_ops.rules).
The protocol (see `Candidates.mark_batch`): a row is marked and journaled in one transaction
that first locks it and then re-checks its linkage; only after that commit is the object
deleted, and its journal entry is removed once the store confirms it is gone
(snapshot_ops.db.journal). A crash anywhere leaves either a live row with its object, or a
marked row with a journal entry that the next run finishes.

"createdAt" and "deletedAt" are compared and written in the representation the
application stores them in (`Candidates.times`, snapshot_ops.timeformat), naive ones as
wall time in the zone snapshot_ops.naivezone settles.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from snapshot_ops.db.engine import quoted
from snapshot_ops.db.instants import UtcInstant
from snapshot_ops.db.schema import Tables
from snapshot_ops.naivezone import NaiveColumn, settle_zone
from snapshot_ops.rules import TEMPORARY_TYPE
from snapshot_ops.storage.base import check_key, refused_by
from snapshot_ops.timeformat import ColumnTimes, TimeFormat, TimeFormatError, detect


@dataclass(frozen=True)
class Candidate:
    file_id: str
    storage_key: str
    size_bytes: int | None


@dataclass(frozen=True)
class CandidateSummary:
    """Read-only figures about what a run would delete and keep (`Catalog.summarize`)."""

    candidates: int
    known_bytes: int  # bytes the candidates' rows give: the sum of their sizes above 0
    unknown_size: int  # candidates whose "sizeBytes" is NULL or negative (unknown)
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


class Candidates(Tables):
    """The candidate queries and the marking protocol of a `Catalog`."""

    # -- time columns -----------------------------------------------------------------------

    @property
    def times(self) -> ColumnTimes:
        """How "createdAt" and "deletedAt" store time, checked once per catalog.

        Every comparison with "createdAt" and every write of "deletedAt" goes through this.
        Raises TimeFormatError (naming the column, a sample value and the setting to use)
        when the live rows' "createdAt" cannot be read for sure, or when the zone of naive
        values cannot be (snapshot_ops.naivezone).
        """
        if self._times is None:
            f = self.files.c
            # The rows the rule can select, which the expiry index holds.
            live = sa.and_(f.snapshotType == TEMPORARY_TYPE, f.deletedAt.is_(None))
            with self.engine.connect() as conn:
                created = detect(
                    conn,
                    f.createdAt,
                    self._declared["createdAt"],
                    scope=live,
                    setting=self.time_format,
                    where=f'"createdAt" of {quoted(self.files)}',
                )
            deleted = self._deleted_format(created)
            naive = [
                NaiveColumn(
                    name,
                    quoted(self.files),
                    compared,
                    fmt,
                    _default_text(f[name]),
                    samples,
                    f.fileId,
                    dated=name == "createdAt",
                )
                for name, compared, fmt, samples in (
                    ("createdAt", self._created, created, live),
                    ("deletedAt", f.deletedAt, deleted, f.deletedAt.is_not(None)),
                )
                if fmt.is_naive
            ]
            if naive:
                zone = settle_zone(
                    self.reading,
                    setting=self.naive_time_zone,
                    columns=naive,
                    sqlite=self.is_sqlite,
                    unused_defaults=self.unused_column_defaults,
                )
                created, deleted = created.in_zone(zone), deleted.in_zone(zone)
            self._times = ColumnTimes(created, deleted)
        return self._times

    def _deleted_format(self, created: TimeFormat) -> TimeFormat:
        """How "deletedAt" is written: by its own type when PostgreSQL's column is a
        timestamp (naive: wall time in the zone `times` settles, whatever the session's
        TimeZone), otherwise as the application writes "createdAt": its two time columns
        share one representation."""
        declared = self._declared["deletedAt"]
        if not self.is_sqlite and isinstance(declared, sa.DateTime):
            return TimeFormat("timestamp", naive=not declared.timezone)
        if created.kind != "timestamp":
            return created
        # "createdAt" is a native PostgreSQL timestamp, so time_format is auto or timestamp
        # (timeformat.detect refuses any other) and says nothing about a non-timestamp column.
        raise TimeFormatError(
            f'"deletedAt" of {quoted(self.files)} is declared {declared}, not a timestamp '
            'like "createdAt", so how to write it is unknown; nothing was touched. Declare '
            '"deletedAt" with the type of "createdAt".'
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
                    sa.literal(marked_at, UtcInstant()),
                    sa.literal(claimed_by, sa.Text),
                    sa.literal(leased_until, UtcInstant()),
                ),
            )
            .returning(self.pending.c.file_id)
        )
        by_text = {str(i): i for i in ids}
        return {by_text[file_id] for file_id in conn.execute(journal).scalars()}


def _candidate(row: Any) -> Candidate:
    return Candidate(str(row.fileId), row.storageKey, row.sizeBytes)


def _default_text(column: sa.Column[Any]) -> str | None:
    """A reflected column's default expression as the database keeps it (None: none)."""
    default = column.server_default
    if not isinstance(default, sa.DefaultClause):
        return None
    arg = default.arg
    return arg.text if isinstance(arg, sa.TextClause) else str(arg)
