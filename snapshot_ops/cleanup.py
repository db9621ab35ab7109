"""The work of a cleanup run, free of Dagster: mark in batches, delete behind the marks.

Both loops stream from the database in bounded batches (keyset pagination), so memory
stays flat whatever the backlog. Ops in `jobs.py` call these and report what they return.

Marking is database work and deleting is storage work, so they overlap: as soon as a
batch's marks are committed, a background thread deletes that batch's objects while the
next batch is being marked. At most `MAX_BATCHES_IN_FLIGHT` batches wait between them,
which bounds memory and keeps the journal of not-yet-deleted objects short.

"Already missing" is evidence, not success: before a batch whose store answered "not
found" for some objects is settled, the run's `Sentinel` checks that the store still holds
an object it was seen to hold (or, that gone, gathers the evidence again by the rule of
snapshot_ops.sentinel). If the evidence does not hold, those entries are not settled (they
stay journaled, with the reason as their last error) and the run stops with
`StorageMismatch`: a store that went away mid-run (an unmounted volume, a dropped network
mount) never turns into rows recorded as deleted.

A batch's journal entries are written already leased to the marking run
(`Catalog.mark_batch` with `lease`), so deleting a fresh batch needs no claim of its own:
the deleter asks which of its keys a live row still names, deletes the others and settles.
Measured with `python -m bench.profile --rows 50000` (23,750 objects, 2 cores shared with
PostgreSQL): the separate claim took 1.1 s of the deleter threads' 1.7 s in the database.
Wall time did not move measurably with it (2.1-2.2 s, interleaved runs): on two cores the
step is bound by the CPU of the unlinks (about 55 us of kernel time each) and PostgreSQL's.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from snapshot_ops import checkpoints
from snapshot_ops.db import BackedOff, Catalog, PendingDelete, ReadBatch
from snapshot_ops.rules import Policy
from snapshot_ops.sentinel import Sentinel
from snapshot_ops.storage.base import Outcome, StorageBackend

log = logging.getLogger(__name__)

#: Marked batches waiting for deletion; more would only grow memory, not speed.
MAX_BATCHES_IN_FLIGHT = 2
#: Threads deleting batches at once: while one waits for the database to settle its
#: journal entries, the other keeps the store busy.
DELETER_THREADS = 2


@dataclass(frozen=True)
class MarkReport:
    marked_count: int  # rows this run marked deleted (the run log's marked_count)
    bytes_marked: int  # from "sizeBytes" where set
    attached_meanwhile: list[str]  # candidates an order linked while the run went on
    errors: list[str] = field(default_factory=list)  # refused keys, left live


@dataclass(frozen=True)
class DeleteReport:
    """What deleting journaled objects settled (summed over batches with `+`)."""

    #: Objects this run saw and removed: the run log's `deletedCount`.
    removed: int = 0
    #: Objects the store no longer held (its row is settled, nothing was freed): the run
    #: log's `alreadyMissing`, never counted as deleted.
    missing: int = 0
    bytes_reclaimed: int = 0
    errors: list[str] = field(default_factory=list)  # entries left pending for the next run
    #: Marked rows whose object was kept because a live row shares its storage key.
    kept_shared: list[str] = field(default_factory=list)
    #: Entries whose key the store refused at delete time (it can never delete it).
    refused: list[str] = field(default_factory=list)
    #: Rows made live again, their journal entries dropped (`Catalog.release_pending`):
    #: refused at delete time, or their key was changed after they were marked.
    released: list[str] = field(default_factory=list)
    #: Known failed deletes waiting out their backoff, not sent to the store by this run:
    #: reported when they failed, a warning now, not an error (see `describe_waiting`). A
    #: plain default, so a report pickled before the field existed reads it as empty.
    waiting: tuple[BackedOff, ...] = ()

    def __add__(self, other: DeleteReport) -> DeleteReport:
        return DeleteReport(
            self.removed + other.removed,
            self.missing + other.missing,
            self.bytes_reclaimed + other.bytes_reclaimed,
            self.errors + other.errors,
            self.kept_shared + other.kept_shared,
            self.refused + other.refused,
            self.released + other.released,
            # One entry once, though two steps of a re-execution both listed it.
            tuple({w.file_id: w for w in (*self.waiting, *other.waiting)}.values()),
        )


def oldest_waiting(waiting: Sequence[BackedOff]) -> BackedOff | None:
    """The entry among `waiting` whose row was marked deleted first (its object has waited
    longest), ties and unknown times by file id; None when there is none."""
    return min(
        waiting,
        key=lambda w: (w.marked_at is None, utc(w.marked_at), w.file_id),
        default=None,
    )


def describe_backed_off(entry: BackedOff) -> str:
    """One entry waiting out its backoff: file id, when marked, failures, next try, error."""
    marked = "" if entry.marked_at is None else f", marked {utc(entry.marked_at).isoformat()}"
    return (
        f"{entry.file_id}{marked}, failed {entry.attempts} time(s), next try after "
        f"{utc(entry.next_attempt_at).isoformat()}; last error: {entry.last_error}"
    )


def describe_waiting(waiting: Sequence[BackedOff]) -> str:
    """The warning a run gives for known failed deletes it did not retry: how many, and
    the oldest (`oldest_waiting`)."""
    oldest = oldest_waiting(waiting)
    if oldest is None:
        return "no failed delete is waiting out its backoff"
    return (
        f"{len(waiting)} failed delete(s) of earlier runs wait out their backoff and were not "
        f"sent to the store by this run (reported when they failed; `python -m "
        f"snapshot_ops.journal list` shows them): the oldest is {describe_backed_off(oldest)}"
    )


def utc(value: dt.datetime | None) -> dt.datetime:
    """`value` as an aware UTC instant (SQLite gives the stored UTC instants back naive);
    None as the earliest instant, for sorting."""
    if value is None:
        return dt.datetime.min.replace(tzinfo=dt.UTC)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


#: A lease covers this many times the worst single request (every attempt timing out),
#: for the size lookups, the requests of one batch that wait for a free connection, and the
#: SDKs' backoff between attempts.
LEASE_SAFETY_FACTOR = 3
#: No lease is shorter than this, whatever the timeouts (the filesystem has none).
MIN_LEASE = dt.timedelta(minutes=5)


def lease_length(
    *,
    max_attempts: int,
    connect_timeout_seconds: float,
    read_timeout_seconds: float,
    retry_backoff_seconds: float = 0.0,
) -> dt.timedelta:
    """How long a run leases the journal entries of one batch while the store deletes them.

    LEASE_SAFETY_FACTOR x max_attempts x (connect + read timeout + backoff), at least
    MIN_LEASE: with the storage defaults (snapshot_ops.storage.DEFAULTS) that is 18
    minutes. A live run's store calls for one batch end well within it; only a run that
    died holding entries makes others wait, and a later run releases those at once when
    Dagster reports that run ended (jobs.close_crashed_runs).
    """
    worst = max_attempts * (connect_timeout_seconds + read_timeout_seconds + retry_backoff_seconds)
    return max(MIN_LEASE, dt.timedelta(seconds=LEASE_SAFETY_FACTOR * worst))


def delete_entries(
    catalog: Catalog,
    storage: StorageBackend,
    *,
    run_id: str,
    lease: dt.timedelta,
    after: str | None = None,
    limit: int | None = None,
    sentinel: Sentinel | None = None,
) -> tuple[DeleteReport, str | None]:
    """Lease journal entries, delete their objects, settle the journal.

    Three steps, and no transaction on the application's database is open during the
    second: `Catalog.claim_pending` commits a lease on the entries (another run skips them
    until it ends), the store deletes (and measures, where the size is unknown) with no
    connection held, and `Catalog.settle_pending` drops or releases only the entries this
    run still holds, adding what it settled to the run's log row. The report counts exactly
    what was settled. Returns the report and the last file_id claimed (None when nothing was
    claimed). Objects the store answers missing are settled only while `sentinel` (default:
    one without a key, which gathers the evidence by the rule of snapshot_ops.sentinel)
    finds the store still holding objects; otherwise raises StorageMismatch after settling
    the rest, and those entries stay journaled.
    """
    entries, shared = catalog.claim_pending(
        run_id=run_id,
        now=_now(),
        lease=lease,
        after=after,
        limit=limit,
        key_matching=storage.key_matching,
    )
    if not entries and not shared:
        return DeleteReport(), None
    last = max(e.file_id for e in entries) if entries else None
    if shared and (last is None or max(shared) > last):
        last = max(shared)
    report = _delete_objects(
        catalog, storage, entries, run_id=run_id, sentinel=sentinel or Sentinel(catalog, storage)
    )
    checkpoints.reached("after_settle")
    if shared:
        report += DeleteReport(kept_shared=shared)
    return release_refused(catalog, report), last


def delete_marked(
    catalog: Catalog,
    storage: StorageBackend,
    entries: list[PendingDelete],
    *,
    run_id: str,
    sentinel: Sentinel | None = None,
) -> DeleteReport:
    """Delete the objects of a batch this run marked and leased at marking, then settle.

    Like `delete_entries` without the claim: the entries are already leased to `run_id`
    (`Catalog.mark_batch` with `lease`). Entries whose key a live row still names, by the
    store's way of matching keys (`StorageBackend.key_matching`: another case names the same
    file on a case-insensitive folder), are not deleted; they leave the journal in the
    settle, object kept (`kept_shared`).
    Missing objects are settled only as `delete_entries` says (raises StorageMismatch
    otherwise).
    """
    shared_keys = catalog.shared_keys([e.storage_key for e in entries], storage.key_matching)
    shared = [e.file_id for e in entries if e.storage_key in shared_keys]
    if shared:
        entries = [e for e in entries if e.storage_key not in shared_keys]
    report = _delete_objects(
        catalog,
        storage,
        entries,
        run_id=run_id,
        shared=shared,
        sentinel=sentinel or Sentinel(catalog, storage),
    )
    checkpoints.reached("after_settle")
    return release_refused(catalog, report)


def verify_key_matching(catalog: Catalog, storage: StorageBackend) -> None:
    """Raise KeyMatchingError (before anything is marked or deleted) unless the database
    can compare storage keys the way `storage` resolves them (Catalog.verify_key_matching);
    the loops below call it first, in every step process."""
    catalog.verify_key_matching(storage.key_matching, store=storage.description)


def release_refused(catalog: Catalog, report: DeleteReport) -> DeleteReport:
    """Release the rows whose key the store refused at delete time (`report.refused`).

    Such a key can never be deleted (e.g. the file became a symlink after the key was
    checked, or an entry journaled before keys were checked), so retrying it each run
    would keep its row marked forever. Its row is made live again, in its own transaction
    after the entries were settled; the run still reports the refusal as an error, and the
    next run leaves the row live while the key stays refused.
    """
    if not report.refused:
        return report
    return report + DeleteReport(released=catalog.release_pending(report.refused))


def release_stale(catalog: Catalog, *, batch_size: int) -> DeleteReport:
    """Release every journal entry whose row's storage key changed since it was marked.

    The row's owner fixed the key (the documented way out of a refused key): the journaled
    key is not the row's object any more, so it is not deleted; the row is made live and
    the run's marking step picks it up again by its new key.
    """
    released: list[str] = []
    while entries := catalog.stale_pending(limit=batch_size):
        done = catalog.release_pending([e.file_id for e in entries])
        released += done
        for entry in entries:
            if entry.file_id in done:
                log.info(
                    "released %s: its row no longer names %r", entry.file_id, entry.storage_key
                )
        if not done or len(entries) < batch_size:
            break
    return DeleteReport(released=released)


def _known_size(entry: PendingDelete) -> int | None:
    """The size in bytes its row gave the entry, or None when the row does not know it
    ("sizeBytes" NULL or negative): such an object is measured before it is deleted."""
    size = entry.size_bytes
    return None if size is None or size < 0 else size


def _delete_objects(
    catalog: Catalog,
    storage: StorageBackend,
    entries: list[PendingDelete],
    *,
    run_id: str,
    sentinel: Sentinel,
    shared: Sequence[str] = (),
) -> DeleteReport:
    """Delete (and measure) the entries' objects, then settle what the store answered.

    Objects answered missing are settled as missing only if `sentinel.doubt` finds no
    reason against it; otherwise they are settled as failed with that reason (journal
    entry kept, lease released, the next run tries again) and StorageMismatch is raised
    once the rest of the batch is settled.
    """
    if not entries and not shared:
        return DeleteReport()
    unknown = [e.storage_key for e in entries if _known_size(e) is None]
    measured = storage.sizes(unknown) if unknown else {}
    results = storage.delete_many([e.storage_key for e in entries]) if entries else []
    checkpoints.reached("after_store_delete")
    deleted: dict[str, int] = {}
    missing: list[PendingDelete] = []
    failed: dict[str, tuple[int, str]] = {}
    errors: list[str] = []
    refused: list[str] = []
    for entry, result in zip(entries, results, strict=True):
        if result.outcome is Outcome.DELETED:
            size = _known_size(entry)
            if size is None:
                size = measured.get(entry.storage_key)
            deleted[entry.file_id] = size or 0
        elif result.outcome is Outcome.MISSING:
            missing.append(entry)
        else:
            message = result.error or result.outcome.value
            failed[entry.file_id] = (entry.attempts, message)
            if result.outcome is Outcome.REFUSED:  # released by release_refused
                refused.append(entry.file_id)
                message += "; its row is live again: fix its storageKey"
            errors.append(f"{result.outcome.value} {entry.file_id}: {message}")
    # A key this very batch deleted comes back missing for its other rows (two rows sharing
    # one object): that is no sign of a store gone.
    removed_now = {e.storage_key for e in entries if e.file_id in deleted}
    doubt = sentinel.doubt(
        [e.storage_key for e in missing if e.storage_key not in removed_now],
        deleted_now=len(deleted),
    )
    if doubt is not None:
        reason = f"not found, not settled: {doubt}"
        failed.update((e.file_id, (e.attempts, reason)) for e in missing)
        missing = []
    settled = catalog.settle_pending(
        run_id=run_id,
        now=_now(),
        deleted=deleted,
        missing=[e.file_id for e in missing],
        failed=failed,
        shared=shared,
    )
    if doubt is not None:
        raise doubt
    return DeleteReport(
        settled.deleted,
        settled.missing,
        settled.bytes_reclaimed,
        errors,
        kept_shared=[i for i in shared if i in settled.file_ids],
        refused=refused,
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def finish_pending(
    catalog: Catalog,
    storage: StorageBackend,
    *,
    run_id: str,
    lease: dt.timedelta,
    batch_size: int,
    progress: Callable[[Progress], None] | None = None,
    candidates: int | None = None,
    progress_interval: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sentinel: Sentinel | None = None,
) -> DeleteReport:
    """Delete the objects of every journal entry no live run holds: what an interrupted run
    left behind, and failed deletes whose backoff is over. Entries still backing off are
    not sent to the store: they are known failures, reported by the run they failed in, and
    come back in the report's `waiting` (a warning, not an error: see Catalog.backed_off).
    Entries whose row names another key by now are released first (`release_stale`).
    `progress` is called as in `mark_and_delete` (objects deleted so far, of `candidates`).
    Raises StorageMismatch, leaving the entries of that batch and every later one pending,
    when objects come back missing and the store holds none of the objects `sentinel`
    looks for (see `delete_entries`): a store gone since the entries were marked.
    """
    sentinel = sentinel or Sentinel(catalog, storage)
    meter = _Meter(progress, candidates, interval=progress_interval, clock=clock)
    verify_key_matching(catalog, storage)
    total = release_stale(catalog, batch_size=batch_size)
    # Listed before the sweep: these are the entries it skips. An entry that fails during
    # the sweep starts backing off too, but it is reported once, by its failure.
    waiting = tuple(catalog.backed_off(_now()))
    after: str | None = None
    while True:
        report, after = delete_entries(
            catalog,
            storage,
            run_id=run_id,
            lease=lease,
            after=after,
            limit=batch_size,
            sentinel=sentinel,
        )
        if after is None:
            break
        total += report
        meter.add(deleted=report.removed, missing=report.missing)
        meter.tick()
    meter.tick(final=True)
    return total + DeleteReport(waiting=waiting)


class _BackgroundDeleter:
    """Deletes marked batches on DELETER_THREADS threads while the caller marks the next.

    `submit` blocks while MAX_BATCHES_IN_FLIGHT batches wait besides those being deleted,
    and raises the first failure of an earlier batch; `close` waits for every batch and
    returns their summed report (or raises that failure).
    """

    def __init__(
        self,
        catalog: Catalog,
        storage: StorageBackend,
        *,
        run_id: str,
        sentinel: Sentinel,
        on_done: Callable[[DeleteReport], None],
    ) -> None:
        self._work = lambda entries: _delete_batch(catalog, storage, entries, run_id, sentinel)
        self._on_done = on_done
        self._pool = ThreadPoolExecutor(DELETER_THREADS, thread_name_prefix="snapshot-deleter")
        self._slots = threading.BoundedSemaphore(DELETER_THREADS + MAX_BATCHES_IN_FLIGHT)
        self._futures: list[Future[DeleteReport]] = []

    def check(self) -> None:
        """Raise the first failure of a batch deleted so far (e.g. StorageMismatch), so the
        caller marks no further batch after it."""
        self._raise_failure()

    def submit(self, entries: list[PendingDelete]) -> None:
        self._raise_failure()
        self._slots.acquire()  # back-pressure: blocks while the pool is full
        future = self._pool.submit(self._work, entries)
        future.add_done_callback(self._done)
        self._futures.append(future)

    def _done(self, future: Future[DeleteReport]) -> None:
        self._slots.release()
        if not future.cancelled() and future.exception() is None:
            self._on_done(future.result())

    def _raise_failure(self) -> None:
        for future in self._futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                raise future.exception()  # type: ignore[misc]

    def close(self) -> DeleteReport:
        self._pool.shutdown(wait=True)
        self._raise_failure()
        return sum((f.result() for f in self._futures), DeleteReport())


def _delete_batch(
    catalog: Catalog,
    storage: StorageBackend,
    entries: list[PendingDelete],
    run_id: str,
    sentinel: Sentinel,
) -> DeleteReport:
    checkpoints.reached("before_delete")
    return delete_marked(catalog, storage, entries, run_id=run_id, sentinel=sentinel)


@dataclass(frozen=True)
class Progress:
    """Where a long marking or deleting loop stands; passed to a progress callback."""

    marked: int  # rows marked so far
    deleted: int  # objects this run removed so far
    total: int | None  # candidate rows the run expects (the plan's count); None: unknown
    elapsed_seconds: float
    missing: int = 0  # objects settled as already missing so far (not deleted)

    @property
    def _done(self) -> int:
        return max(self.marked, self.deleted + self.missing)

    @property
    def rate(self) -> float:
        """Rows done per second so far (marked, or settled for a loop that only deletes)."""
        return self._done / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the rate so far; None without a total or a rate."""
        if self.total is None or self.rate <= 0:
            return None
        return max(0.0, (self.total - self._done) / self.rate)

    def describe(self) -> str:
        of = "" if self.total is None else f" of {self.total:,}"
        eta = "" if self.eta_seconds is None else f", about {self.eta_seconds:,.0f} s left"
        missing = f" ({self.missing:,} already missing)" if self.missing else ""
        return (
            f"{self.marked:,} rows marked, {self.deleted:,} objects deleted{missing}{of} in "
            f"{self.elapsed_seconds:,.0f} s ({self.rate:,.0f} rows/s{eta})"
        )


#: Seconds between two progress reports of a long loop (and one at its end).
PROGRESS_INTERVAL_SECONDS = 10.0


class _Meter:
    """Calls `report` with a Progress at most every `interval` seconds, and at the end."""

    def __init__(
        self,
        report: Callable[[Progress], None] | None,
        total: int | None,
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._report, self._total, self._clock = report, total, clock
        self._interval = PROGRESS_INTERVAL_SECONDS if interval is None else interval
        self._started = self._last = clock()
        self._lock = threading.Lock()
        self.marked = self.deleted = self.missing = 0

    def add(self, *, marked: int = 0, deleted: int = 0, missing: int = 0) -> None:
        with self._lock:
            self.marked += marked
            self.deleted += deleted
            self.missing += missing

    def tick(self, *, final: bool = False) -> None:
        if self._report is None:
            return
        now = self._clock()
        if final or now - self._last >= self._interval:
            self._last = now
            self._report(
                Progress(self.marked, self.deleted, self._total, now - self._started, self.missing)
            )


def mark_and_delete(
    catalog: Catalog,
    storage: StorageBackend | None,
    policy: Policy,
    *,
    run_id: str,
    marked_at: dt.datetime,
    batch_size: int,
    lease: dt.timedelta = MIN_LEASE,
    dry_run: bool = False,
    after: tuple[Any, Any] | None = None,
    upper: tuple[Any, Any] | None = None,
    progress: Callable[[Progress], None] | None = None,
    candidates: int | None = None,
    progress_interval: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sentinel: Sentinel | None = None,
) -> tuple[MarkReport, DeleteReport]:
    """Tombstone every current candidate (at most `policy.max_deletions`), deleting behind.

    Each batch is locked, re-checked, marked and committed by `Catalog.mark_batch` before
    its objects are handed to the deleter: a file is never deleted before its row's mark
    is durable. Keys `storage` would refuse (`StorageBackend.refusals`; the shared key
    checks without a storage) are never marked: their rows stay live and each is reported
    in the errors, every run. Each batch's journal entries are written already leased to
    `run_id` for `lease` (`Catalog.lock_and_mark`), so the deleter needs no claim. In a dry
    run the marks are rolled back and nothing is deleted.
    With `after` and `upper` (keys from `Catalog.range_boundaries`) only the candidates
    after `after` up to `upper` included are walked: one range of a run split into ranges.

    `progress`, when given, is called with a `Progress` (rows marked and objects deleted so
    far, of `candidates`) at most every `progress_interval` seconds (default
    PROGRESS_INTERVAL_SECONDS, by `clock`) and once at the end.

    Objects the store answers missing are settled only while `sentinel` (default: one
    without a key) finds the store holding objects the database says it should; otherwise
    the batch's missing entries stay journaled, no further batch is marked, and
    StorageMismatch is raised (see `delete_entries`).
    """
    marked = bytes_marked = 0
    attached: list[str] = []
    errors: list[str] = []
    meter = _Meter(progress, candidates, interval=progress_interval, clock=clock)
    if storage is not None:
        verify_key_matching(catalog, storage)
    deleter = (
        None
        if dry_run or storage is None
        else _BackgroundDeleter(
            catalog,
            storage,
            run_id=run_id,
            sentinel=sentinel or Sentinel(catalog, storage),
            on_done=lambda report: meter.add(deleted=report.removed, missing=report.missing),
        )
    )
    refusals = storage.refusals if storage is not None else None

    def read(cursor: tuple[Any, Any] | None, limit: int) -> ReadBatch:
        return catalog.read_batch(
            cutoff=policy.cutoff, cursor=cursor, limit=limit, refusals=refusals, upper=upper
        )

    # The next batch is read (and its keys checked by the store) on a reader thread while
    # the current one is locked and marked: the read takes no lock and `lock_and_mark` checks
    # every row again under its lock. Measured with `python -m bench.profile --rows 50000`:
    # the read and the check were a third of the marking loop's time, which is the step's
    # critical path (the deleting threads wait for it).
    reader = ThreadPoolExecutor(1, thread_name_prefix="snapshot-reader")
    try:
        upcoming: Future[ReadBatch] | None = reader.submit(
            read, after, min(batch_size, policy.max_deletions)
        )
        while upcoming is not None:
            current = upcoming.result()
            upcoming = None
            # At most what this batch can mark is still to be read next.
            room = policy.max_deletions - marked - len(current.passed)
            if current.cursor is not None and room > 0:
                upcoming = reader.submit(read, current.cursor, min(batch_size, room))
            if deleter is not None:
                deleter.check()  # a batch failed (e.g. the store went away): mark no more
            batch = catalog.lock_and_mark(
                current,
                cutoff=policy.cutoff,
                run_id=run_id,
                marked_at=marked_at,
                dry_run=dry_run,
                # Leased at marking to this run when it deletes them itself: no claim.
                lease=lease if deleter is not None else None,
            )
            if deleter is not None and batch.marked:
                deleter.submit(
                    [PendingDelete(c.file_id, c.storage_key, c.size_bytes, 0) for c in batch.marked]
                )
            marked += len(batch.marked)
            meter.add(marked=len(batch.marked))
            bytes_marked += sum(c.size_bytes for c in batch.marked if (c.size_bytes or 0) > 0)
            attached.extend(batch.attached_meanwhile)
            errors.extend(f"refused {c.file_id}: {reason}" for c, reason in batch.refused)
            checkpoints.reached("after_mark_batch")
            meter.tick()
            if batch.cursor is None or marked >= policy.max_deletions:
                break
            if upcoming is None:  # fewer marked than read (attached meanwhile): read on
                upcoming = reader.submit(
                    read, batch.cursor, min(batch_size, policy.max_deletions - marked)
                )
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        deleted = deleter.close() if deleter is not None else DeleteReport()
    meter.tick(final=True)
    log.info(
        "marked %d rows deleted (%d attached meanwhile, kept); deleted %d objects, "
        "%d already missing, %d failed, %d kept because a live row shares them",
        marked,
        len(attached),
        deleted.removed,
        deleted.missing,
        len(deleted.errors),
        len(deleted.kept_shared),
    )
    return MarkReport(marked, bytes_marked, attached, errors), deleted
