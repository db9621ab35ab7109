"""The retention policy, as pure functions: what a run may delete and when.

The rule: a `ParseSessionSnapshot` older than 7 days and not linked to an order is
temporary and may go; an `OrderAttachmentSnapshot`, or any file linked in
`OrderAttachments`, is permanent. The SQL that applies this lives in `db/candidates.py`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from snapshot_ops.errors import ConfigError

#: The only `snapshotType` value that is ever deleted (compared exactly, case included).
TEMPORARY_TYPE = "ParseSessionSnapshot"
PERMANENT_TYPE = "OrderAttachmentSnapshot"

DEFAULT_RETENTION_DAYS = 7
#: A reference time this far ahead of the worker's clock is taken as a clock or config error.
FUTURE_TOLERANCE = dt.timedelta(minutes=5)
#: The worker's and the database's clocks may differ by this much before a run refuses.
CLOCK_SKEW_TOLERANCE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Policy:
    """What one run is allowed to delete."""

    reference_time: dt.datetime  # aware, UTC
    retention: dt.timedelta
    max_deletions: int

    @property
    def cutoff(self) -> dt.datetime:
        """Rows created strictly before this instant are expired."""
        return self.reference_time - self.retention


def parse_reference_time(value: str | None, now: dt.datetime) -> dt.datetime:
    """The run's reference time in UTC: `now` when not given, else an ISO 8601 instant.

    A time without an offset is refused (it would silently mean the worker's zone), and so
    is a time more than FUTURE_TOLERANCE after `now` (a wrong clock or a typo would make
    the cutoff too late). Raises ConfigError; every value its message suggests is accepted
    by this function at the same `now`.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if value is None or value == "":
        return now.astimezone(dt.UTC)
    example = now.astimezone(dt.UTC).replace(microsecond=0).isoformat()
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ConfigError(
            f"reference_time {value!r} is not an ISO 8601 time with an offset, e.g. {example} "
            "(or leave it unset to mean now)"
        ) from exc
    if parsed.tzinfo is None:
        as_utc = parsed.replace(tzinfo=dt.UTC)
        if as_utc > now + FUTURE_TOLERANCE:
            raise ConfigError(
                f"reference_time {value!r} has no UTC offset, and read as UTC it is in the "
                f"future (now is {example}); give a past time with its offset, e.g. {example}, "
                "or leave it unset to mean now"
            )
        raise ConfigError(
            f"reference_time {value!r} has no UTC offset; if it is UTC write {as_utc.isoformat()}"
            ", otherwise add its own offset (e.g. +01:00)"
        )
    if parsed > now + FUTURE_TOLERANCE:
        raise ConfigError(
            f"reference_time {value} is in the future (now is {example}); a cutoff in the "
            "future could delete snapshots that are still within retention. Give a time at "
            f"most {FUTURE_TOLERANCE} ahead, e.g. {example}, or leave it unset to mean now"
        )
    return parsed.astimezone(dt.UTC)


def make_policy(
    *,
    reference_time: str | None,
    retention_days: float,
    max_deletions: int,
    now: dt.datetime,
) -> Policy:
    """Validate run config into a Policy, or raise ConfigError saying what to fix."""
    if not retention_days > 0:
        raise ConfigError(
            f"retention_days must be greater than 0, got {retention_days} "
            f"(the default is {DEFAULT_RETENTION_DAYS})"
        )
    if max_deletions < 0:
        raise ConfigError(
            f"max_deletions must be 0 or more, got {max_deletions} (0 allows no deletion)"
        )
    return Policy(
        reference_time=parse_reference_time(reference_time, now),
        retention=dt.timedelta(days=retention_days),
        max_deletions=max_deletions,
    )


def check_clocks(worker_now: dt.datetime, database_now: dt.datetime) -> None:
    """Refuse to run when the worker's clock and the database's disagree.

    The application stamps `createdAt` with one clock and the run counts back from another;
    a worker clock days ahead would make young snapshots look expired, so a skew larger
    than CLOCK_SKEW_TOLERANCE stops the run before anything is touched.
    """
    skew = worker_now - database_now
    if abs(skew) > CLOCK_SKEW_TOLERANCE:
        ahead = "worker's" if skew > dt.timedelta(0) else "database's"
        raise ConfigError(
            f"the worker's clock ({worker_now.isoformat()}) and the database's "
            f"({database_now.isoformat()}) differ by {abs(skew)} (the {ahead} is ahead), more "
            f"than {CLOCK_SKEW_TOLERANCE}; fix the clocks (e.g. NTP) before cleaning, a wrong "
            "clock would move the cutoff"
        )


def is_expired_temporary(
    *,
    snapshot_type: str,
    created_at: dt.datetime,
    deleted_at: dt.datetime | None,
    linked: bool,
    cutoff: dt.datetime,
) -> bool:
    """The rule for one row, stated plainly; the SQL in db/candidates.py must agree with it."""
    return (
        snapshot_type == TEMPORARY_TYPE
        and deleted_at is None
        and created_at < cutoff
        and not linked
    )
