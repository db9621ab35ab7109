"""What a cleanup run checks and counts before it touches anything (its first step,
`identify_expired_candidates`, reports these; it decides none of them itself).

- `check_run_settings`: the run config and the deployment's settings make a Policy and a
  number of key ranges, or the run stops naming the bad setting.
- `prepare_tables`: every row of the application's tables visible to the job's role (no
  row-level security), how "createdAt" is stored, the job's own tables at their newest
  revision, and the indexes the application database lacks.
- `count_candidates` and `over_cap`: what the rule selects now, and whether that is more
  than the run may delete.
- `check_storage_sees_candidates`: the storage holds the candidates' objects.

The storage check: a storage URL that names the wrong place (an unmounted volume's empty
mount point, a bucket of another environment) makes every object look already deleted: the
run would mark every candidate, report them all as deleted and succeed while freeing
nothing, and the real objects would be left forever. So if none of a sample of the oldest
candidates' objects exists, the run stops and says where it looked. The same sign has an
innocent cause (the oldest objects were removed by hand), so the message names both, how to
tell them apart (the reconciliation report) and how to go on (`verify_storage: false`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from snapshot_ops.db import CandidateSummary, Catalog
from snapshot_ops.errors import SnapshotOpsError
from snapshot_ops.rules import Policy, make_policy
from snapshot_ops.settings import cleanup_ranges
from snapshot_ops.storage.base import StorageBackend
from snapshot_ops.storage.ratelimit import range_rate

#: How many of the oldest candidates are looked up in storage.
SAMPLE_SIZE = 20
#: Below this many sampled candidates, all missing is plausible and does not stop a run.
MIN_SAMPLE = 10


class StorageMismatch(SnapshotOpsError):
    """The storage does not hold the objects the database says the candidates have."""


def check_storage_sees_candidates(
    catalog: Catalog, storage: StorageBackend, cutoff: dt.datetime
) -> None:
    """Raise StorageMismatch if none of the sampled candidates' objects exists.

    Looks the sample up one object at a time and stops at the first that exists, so a
    healthy run costs one lookup (one HEAD on an object store).
    """
    sample = next(catalog.iter_candidates(cutoff, SAMPLE_SIZE), [])
    if len(sample) < MIN_SAMPLE:
        return
    for candidate in sample:
        if storage.sizes([candidate.storage_key]).get(candidate.storage_key) is not None:
            return
    raise StorageMismatch(
        f"none of the {len(sample)} oldest candidates' objects exists in "
        f"{storage.description}. Nothing was deleted. Either the storage URL names the wrong "
        "place (or the store refuses the lookups, e.g. an S3 role without s3:GetObject: grant "
        "read), or the URL is right and these oldest objects were removed by hand or by "
        "another tool. To tell which: run `python -m snapshot_ops.reconcile` with the same "
        "SNAPSHOT_OPS_DATABASE_URL and SNAPSHOT_OPS_STORAGE_URL; a wrong place shows almost "
        "every live row under missing_objects, objects removed by hand show only those rows. "
        "If they were removed by hand, run once with verify_storage: false: their rows are "
        "marked deleted and counted as already missing."
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
) -> tuple[Policy, int]:
    """The run's Policy (rules.make_policy) and its number of key ranges
    (settings.cleanup_ranges: the run config's `ranges`, else SNAPSHOT_OPS_RANGES).

    Raises SnapshotOpsError naming the setting: a `batch_size` below 1, a bad reference
    time, retention or cap (make_policy), a bad number of ranges, or a
    `max_deletes_per_second` that would give a range less than one delete a second
    (storage.ratelimit.range_rate).
    """
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


def over_cap(summary: CandidateSummary, policy: Policy, *, dry_run: bool) -> str | None:
    """Why the run must stop before any delete, or None: more candidates than
    `policy.max_deletions` (a dry run only lists, so it never stops here). The message
    names the figures and the two ways on."""
    if summary.candidates <= policy.max_deletions or dry_run:
        return None
    return (
        f"{summary.candidates} snapshots are expired, more than max_deletions="
        f"{policy.max_deletions}; nothing was deleted. Check the cutoff "
        f"({policy.cutoff.isoformat()}) and, if it is right, run again with "
        f"max_deletions: {summary.candidates} (or dry_run: true to list them)."
    )


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
