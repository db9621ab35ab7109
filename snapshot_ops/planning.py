"""The plan of a cleanup run: its settings, figures and key ranges, as the first step decides
them and the later steps follow them.

`split_key_ranges` cuts the candidates into contiguous key ranges, one
`mark_and_delete_expired` step each, and shares the run's max_deletions among them
(`share_deletions`); `CleanupPlan` carries all of it from the first step to the others.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from snapshot_ops.db import CandidateSummary, Catalog
from snapshot_ops.rules import Policy


@dataclass(frozen=True)
class KeyRange:
    """One contiguous range of the candidates' keyset order ("createdAt", "fileId").

    Bounds are keys as `Catalog.range_boundaries` returns them ("createdAt" as stored):
    the range holds the keys after `after` (None: from the first) up to `upper` included
    (None: to the last), so a run's ranges cover every key exactly once.
    """

    index: int
    ranges: int  # how many ranges the run has
    after: tuple[Any, Any] | None
    upper: tuple[Any, Any] | None
    max_deletions: int  # this range's share of the run's max_deletions

    @property
    def name(self) -> str:
        """The mapping key: the step is `mark_and_delete_expired[<name>]`."""
        return f"range_{self.index}"

    def describe(self) -> str:
        after = "the first key" if self.after is None else f"after {self.after}"
        upper = "the last key" if self.upper is None else f"{self.upper} included"
        return f"{self.name} ({self.index + 1} of {self.ranges}): {after} up to {upper}"


def share_deletions(max_deletions: int, counts: Sequence[int]) -> list[int]:
    """Each range's share of `max_deletions`, given its candidates counted at the split.

    Each range may mark its own candidates plus an equal part of the headroom
    (max_deletions - sum(counts); the remainder to the last range), so the shares add up to
    exactly `max_deletions` and no range is stopped short of what it held when counted.
    When the counts already pass the cap (no run splits such counts: over the cap a run
    stops, dry runs included, or splits only the oldest max_deletions), the last ranges
    give up the excess.
    """
    headroom = max(0, max_deletions - sum(counts))
    shares = [count + headroom // len(counts) for count in counts]
    shares[-1] += headroom % len(counts)
    excess = sum(shares) - max_deletions
    for i in reversed(range(len(shares))):
        cut = min(excess, shares[i])
        shares[i] -= cut
        excess -= cut
    return shares


def split_key_ranges(
    catalog: Catalog,
    candidates: int,
    policy: Policy,
    ranges: int,
    *,
    upper: tuple[Any, Any] | None = None,
) -> list[KeyRange]:
    """Split the `candidates` (as counted) into at most `ranges` contiguous key ranges, one
    step each.

    Read-only: the boundaries are every k-th candidate's key in keyset order, k =
    `candidates` divided by the ranges, rounded up (`range_boundaries`). One range (the
    default), or fewer candidates than two ranges need, reads nothing and gives a single
    range covering every key up to `upper` (None: every key; a run working down a backlog
    passes its Backlog.upper, with `candidates` the oldest ones it takes). Each range gets
    its share of `policy.max_deletions` (`share_deletions`).
    """
    every = math.ceil(candidates / ranges) if candidates else 1
    most = min(ranges - 1, max(0, (candidates - 1) // every))
    bounds: list[tuple[Any, Any]] = []
    if most > 0:
        bounds = catalog.range_boundaries(policy.cutoff, every=every, most=most)
    counts = [every] * len(bounds) + [max(0, candidates - every * len(bounds))]
    shares = share_deletions(policy.max_deletions, counts)
    edges: list[tuple[Any, Any] | None] = [None, *bounds, upper]
    return [KeyRange(i, len(counts), edges[i], edges[i + 1], shares[i]) for i in range(len(counts))]


@dataclass(frozen=True)
class CleanupPlan:
    run_id: str
    run_at: dt.datetime
    policy: Policy
    dry_run: bool
    batch_size: int
    summary: CandidateSummary
    #: The candidates' key ranges, one mark_and_delete_expired step each (see split_key_ranges).
    key_ranges: tuple[KeyRange, ...] = ()
    #: Storage key of an object the first step saw in the store (preflight's check), which
    #: the later steps look up again before settling objects as already missing; None: none.
    sentinel: str | None = None
    #: The run config accepted a store holding none of the objects (accept_missing_objects)
    #: and the check found none: missing objects are settled without evidence.
    accept_missing: bool = False
    #: Working down a backlog bigger than max_deletions (run config work_down_backlog): the
    #: candidates counted that this run leaves for later runs (the newest ones); None when
    #: the run takes every candidate.
    backlog_left: int | None = None

    @property
    def taken(self) -> int:
        """The candidates this run sets out to mark: all it counted, but those it leaves."""
        return self.summary.candidates - (self.backlog_left or 0)
