"""What a cleanup run checks and counts before it touches anything (its first step,
`identify_expired_candidates`, reports these; it decides none of them itself).

- `check_run_settings`: the run config and the deployment's settings make a Policy and a
  number of key ranges, or the run stops naming the bad setting.
- `prepare_tables`: every row of the application's tables visible to the job's role (no
  row-level security), how "createdAt" is stored, the job's own tables at their newest
  revision, and the indexes the application database lacks.
- `count_candidates` and `over_cap`: what the rule selects now, and whether that is more
  than the run may delete; with the run config `work_down_backlog`, `backlog_guard` and
  `plan_backlog` let such a run delete the oldest `max_deletions` instead of stopping.
- `check_storage_holds_objects`: the storage holds objects the database says it should.

The storage check: a storage URL that names the wrong place (an unmounted volume's empty
mount point, a bucket, container or prefix of another environment) makes every object look
already deleted: the run would mark every candidate, report them as already missing and
succeed while freeing nothing, and the real objects would be left forever. So before
marking, the run gathers the evidence that the store is the right place, by the rule of
snapshot_ops.sentinel: an object older than the retention (the oldest candidates' first,
then files orders link and journaled objects of rows that old) proves it; failing that, a
sample of younger live rows' objects spread across the retention must mostly exist (an
application writing into an unmounted volume's mount point makes the newest objects exist
there, so they alone prove nothing). A healthy run finds the first candidate's object: one
lookup. Candidates whose objects are missing while the evidence holds were removed by hand;
the run goes on and reports them as already missing. If it does not hold, whatever the
number of candidates, the run stops before marking, naming where it looked, what it found
and the ways on. The object it rests on is the run's sentinel, looked up again whenever
deletes come back missing.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from snapshot_ops.db import CandidateSummary, Catalog
from snapshot_ops.errors import ConfigError, SnapshotOpsError
from snapshot_ops.rules import DEFAULT_RETENTION_DAYS, Policy, make_policy
from snapshot_ops.sentinel import (
    ACCEPT_SETTING,
    CANDIDATES,
    Evidence,
    StorageMismatch,
    Window,
    gather,
    oldest_candidates,
)
from snapshot_ops.settings import cleanup_ranges
from snapshot_ops.storage.base import StorageBackend
from snapshot_ops.storage.ratelimit import range_rate

__all__ = ["StorageMismatch", "StoreCheck", "Window", "check_storage_holds_objects"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreCheck:
    """What `check_storage_holds_objects` found: the object its evidence rests on (the run's
    sentinel; None when none was looked for or the evidence does not hold), the lookups it
    sent, what the evidence was (`basis`, for the run's metadata), and whether the run goes
    on without evidence because its config accepts missing objects."""

    sentinel: str | None
    lookups: int
    accepted_missing: bool = False
    basis: str = "nothing to settle"


def check_storage_holds_objects(
    catalog: Catalog, storage: StorageBackend, window: Window, *, accept_missing: bool
) -> StoreCheck:
    """Gather the evidence that `storage` is the place the database describes
    (sentinel.gather, over the run's `window`): the oldest candidates' objects first.

    Nothing is looked up when there is no candidate and no journal entry (nothing would be
    settled). Raises StorageMismatch, naming where it looked, what it found and the ways
    on, when the evidence does not hold, at any number of candidates, unless
    `accept_missing` (the run config's accept_missing_objects): then the run goes on
    without a sentinel. Without a candidate (only journal entries to settle) and without
    younger live rows to sample, nothing can show the store is wrong either (a run killed
    after its deletes leaves journaled objects missing too): the run goes on, and the
    sentinel judges each batch of the journal that comes back missing by the same rule.
    """
    candidates = oldest_candidates(catalog, window.cutoff)
    if not candidates and not catalog.journaled_keys(1):
        return StoreCheck(None, 0)
    evidence = gather(catalog, storage, window, candidates=lambda: candidates)
    if evidence.holds:
        if evidence.proof.found is None:
            log.info(
                "%s holds none of %s, but %s: they were removed by hand",
                storage.description,
                evidence.proof.describe(),
                evidence.verdict(),
            )
        return StoreCheck(evidence.sentinel, evidence.lookups, basis=evidence.verdict())
    if not evidence.proof.looked.get(CANDIDATES) and not evidence.sample:
        # Only journaled objects, or keys the store refuses (those rows are never marked).
        return StoreCheck(None, evidence.lookups, basis="nothing to judge by")
    if accept_missing:
        log.warning(
            "%s does not show it holds the objects the database names (%s); going on as the "
            "run config says (%s): their rows are marked deleted and reported as already "
            "missing",
            storage.description,
            evidence.describe(),
            ACCEPT_SETTING,
        )
        return StoreCheck(
            None, evidence.lookups, accepted_missing=True, basis=f"accepted: {ACCEPT_SETTING}"
        )
    raise StorageMismatch(mismatch_message(storage, evidence))


def mismatch_message(storage: StorageBackend, evidence: Evidence) -> str:
    """The start-of-run stop: where the check looked, what it found, and the ways on."""
    holds = "holds none of" if not evidence.present else "does not hold"
    return (
        f"the storage {holds} the objects the database says it should: looked in "
        f"{storage.description} for {evidence.describe()}. Objects of rows younger than "
        "the retention cannot vouch for the store alone: an application that writes while "
        "a volume is not mounted makes new objects in the bare mount point. Nothing was "
        "marked or deleted: marking now would record every candidate as already deleted "
        "while its object, wherever it really is, stayed forever. If a volume is not "
        "mounted there, mount it; if SNAPSHOT_OPS_STORAGE_URL names the wrong folder, "
        "bucket, container or prefix, fix it; if the store refuses lookups, grant read "
        "(s3:GetObject; Azure blobs/read). Then run again. Only if these objects really are "
        f"gone (removed by hand), run once with {ACCEPT_SETTING}: their rows are marked "
        "deleted and reported as already missing. `python -m snapshot_ops.reconcile` with "
        "the same SNAPSHOT_OPS_DATABASE_URL and SNAPSHOT_OPS_STORAGE_URL lists what the "
        "store holds against the rows."
    )


#: Why the run config `verify_storage: false` is refused (it once turned the storage check off).
NO_VERIFY_STORAGE = (
    "verify_storage: false is no longer accepted: it turned off every check that the store "
    "holds the objects the database names, so a run against an unmounted volume or a wrong "
    "bucket or prefix would mark every candidate and delete nothing. Leave it out. If objects "
    f"were removed by hand and the store holds none of them, run once with {ACCEPT_SETTING}; "
    "if the store refuses lookups, grant read (s3:GetObject; Azure blobs/read)."
)


def check_run_settings(
    *,
    batch_size: int,
    reference_time: str | None,
    retention_days: int,
    max_deletions: int,
    ranges: int | None,
    max_deletes_per_second: float | None,
    now: dt.datetime,
    verify_storage: bool = True,
) -> tuple[Policy, int]:
    """The run's Policy (rules.make_policy) and its number of key ranges
    (settings.cleanup_ranges: the run config's `ranges`, else SNAPSHOT_OPS_RANGES).

    Raises SnapshotOpsError naming the setting: a `batch_size` below 1, a bad reference
    time, retention or cap (make_policy), a bad number of ranges, a
    `max_deletes_per_second` that would give a range less than one delete a second
    (storage.ratelimit.range_rate), or `verify_storage: false` (`NO_VERIFY_STORAGE`).
    """
    if not verify_storage:
        raise ConfigError(NO_VERIFY_STORAGE)
    if batch_size < 1:
        raise SnapshotOpsError(
            f"batch_size must be at least 1, got {batch_size} (the default is 1000)"
        )
    policy = make_policy(
        reference_time=reference_time,
        retention_days=retention_days,
        max_deletions=max_deletions,
        now=now,
    )
    count = cleanup_ranges(ranges)
    if max_deletes_per_second is not None:
        range_rate(max_deletes_per_second, count)  # refuses a share below 1/s
    return policy, count


@dataclass(frozen=True)
class PreparedTables:
    """What `prepare_tables` found: how "createdAt" is stored (described, e.g. for the
    run's metadata) and the CREATE INDEX statements the application database lacks."""

    created_format: str
    missing_indexes: list[str]


def prepare_tables(catalog: Catalog, storage: StorageBackend | None = None) -> PreparedTables:
    """Check that row-level security hides no row of the application's tables from the
    job's role (Catalog.check_rows_unfiltered: raises RowSecurityError), how "createdAt" is
    stored (raises TimeFormatError when it cannot be read for sure), that the database
    compares storage keys as `storage` resolves them (Catalog.verify_key_matching: raises
    KeyMatchingError), bring the job's own tables to their newest revision
    (Catalog.ensure_own_tables), then read the index advice for that way of comparing keys
    (Catalog.missing_indexes). The checks come first: a refusal leaves nothing written."""
    catalog.check_rows_unfiltered()
    times = catalog.times
    matching = None if storage is None else storage.key_matching
    if storage is not None:
        catalog.verify_key_matching(storage.key_matching, store=storage.description)
    catalog.ensure_own_tables()
    return PreparedTables(times.created.describe(), catalog.missing_indexes(matching))


def count_candidates(catalog: Catalog, policy: Policy) -> tuple[CandidateSummary, int]:
    """What the rule selects now (Catalog.summarize) and how many live, unlinked
    ParseSessionSnapshot rows have no "createdAt" (kept: the rule cannot date them)."""
    return catalog.summarize(policy.cutoff), catalog.count_undated()


#: How a run config opts in to working a backlog down (named by the messages).
BACKLOG_SETTING = "work_down_backlog: true"


def over_cap(
    summary: CandidateSummary,
    policy: Policy,
    *,
    work_down_backlog: bool = False,
    guard: str | None = None,
) -> str | None:
    """Why the run must stop before any delete, or None: more candidates than
    `policy.max_deletions`, unless the run works down a backlog (`work_down_backlog`) and
    `backlog_guard` found nothing against it (`guard` is its answer). A dry run stops here
    too (its message says so): it previews the real run, stops included. The message
    names the figures and the ways on."""
    if summary.candidates <= policy.max_deletions:
        return None
    if work_down_backlog:
        if guard is None:
            return None
        return (
            f"{summary.candidates} snapshots are expired, more than max_deletions="
            f"{policy.max_deletions}, and {BACKLOG_SETTING} does not apply: {guard}. "
            "Nothing was deleted."
        )
    return (
        f"{summary.candidates} snapshots are expired, more than max_deletions="
        f"{policy.max_deletions}; nothing was deleted. Check the cutoff "
        f"({policy.cutoff.isoformat()}) and, if it is right, run again with "
        f"max_deletions: {summary.candidates}, or with {BACKLOG_SETTING} to delete the "
        f"{policy.max_deletions} oldest per run until the backlog is gone (dry_run: true "
        "with either lists what that run would delete)."
    )


def backlog_guard(catalog: Catalog, policy: Policy) -> str | None:
    """Why this run may not work down a backlog bigger than its cap, or None.

    The cap stops a wrong cutoff from deleting a day's worth of rows that are not expired;
    working down a backlog lifts that stop, so it is allowed only where a wrong cutoff is
    not the likely cause. The cutoff is `reference_time - retention`: the reference time
    cannot be more than 5 minutes ahead, the clocks are checked and "createdAt" is read for
    sure (the checks before this), which leaves the retention. So the run's retention must
    be no shorter than the latest succeeded run's (`Catalog.succeeded_retention`), or,
    before any run succeeded, than the default (DEFAULT_RETENTION_DAYS days). A shortened
    retention with more candidates than the cap stops as before; a deliberate change goes
    through `max_deletions` (or through steps, see docs/operations.md).
    """
    known = catalog.succeeded_retention()
    reference = dt.timedelta(days=DEFAULT_RETENTION_DAYS) if known is None else known
    if policy.retention >= reference:
        return None
    source = (
        f"the default of {DEFAULT_RETENTION_DAYS} days (no run has succeeded yet)"
        if known is None
        else f"the {_days(known)} of the latest succeeded run"
    )
    return (
        f"retention_days={_days(policy.retention, unit=False)} is shorter than {source}, and "
        "a shortened retention is how a wrong cutoff looks; if it is meant, run with "
        "max_deletions at the number expired, or lower retention_days step by step (each "
        "run within the cap)"
    )


def _days(span: dt.timedelta, *, unit: bool = True) -> str:
    days = f"{span / dt.timedelta(days=1):g}"
    return f"{days} days" if unit else days


@dataclass(frozen=True)
class Backlog:
    """How a run working down a backlog bigger than its cap is bounded (`plan_backlog`):
    it marks the candidates up to `upper` included, the oldest `max_deletions` in the
    marking walk's keyset order ("createdAt", "fileId"), and leaves `left` of those it
    counted to later runs (None `upper`: a cap of 0, which marks nothing)."""

    upper: tuple[Any, Any] | None
    taken: int
    left: int

    def describe(self) -> str:
        """The run's warning: what it takes, up to which key, and what it leaves."""
        up_to = "" if self.upper is None else f" (created up to {self.upper[0]})"
        return (
            f"working down a backlog ({BACKLOG_SETTING}): this run deletes the {self.taken} "
            f"oldest expired snapshots{up_to} and leaves {self.left} for later runs"
        )


def plan_backlog(catalog: Catalog, summary: CandidateSummary, policy: Policy) -> Backlog | None:
    """The bound of a run that works down a backlog: the key of the `policy.max_deletions`-th
    candidate, oldest first (Catalog.range_boundaries, read without locks), and how many
    candidates it leaves; None when the candidates fit under the cap (or no longer reach
    it). Only for a run whose `backlog_guard` found nothing against it."""
    taken = policy.max_deletions
    if summary.candidates <= taken:
        return None
    if taken == 0:
        return Backlog(None, 0, summary.candidates)
    bound = catalog.range_boundaries(policy.cutoff, every=taken, most=1)
    if not bound:
        return None
    return Backlog(bound[0], taken, summary.candidates - taken)


def run_figures(
    *,
    run_at: dt.datetime,
    policy: Policy,
    summary: CandidateSummary,
    undated: int,
    created_format: str,
    dry_run: bool,
) -> dict[str, object]:
    """The first step's figures, named as the run's metadata shows them (sizes in bytes,
    instants in ISO 8601)."""
    return {
        "runAt": run_at.isoformat(),
        "cutoff": policy.cutoff.isoformat(),
        "candidates": summary.candidates,
        "knownBytes": summary.known_bytes,
        "candidatesWithoutSize": summary.unknown_size,
        "keptLinkedToOrders": summary.kept_linked,
        "createdAtFormat": created_format,
        "keptWithoutCreatedAt": undated,
        "dryRun": dry_run,
    }
