"""Missing is evidence, not success: a run settles an object as "already missing" only while
its store shows that it is the place the database describes.

A store that is not that place answers "not found" for every key: an unmounted volume (its
mount point is an empty folder), a bucket or container of another environment, a prefix
with a typo, a network mount dropped in the middle of a run. A run that took each such
answer as "already deleted" would mark every candidate, settle every journal entry, report
success and free nothing, and the real objects would stay forever once the store came back
(their rows are marked, no journal entry is left to delete them). Objects removed by hand
give the same answer for their own keys, so the candidates' keys alone cannot tell the two
apart when they are missing; other rows' objects can (db.witnesses), if they cannot have
been written since the store went away: an application that goes on writing while its
volume is not mounted writes its new objects into the bare mount point, where they exist.

The rule (`gather`), in two parts:

- **An object older than the retention proves it.** The application writes an object when
  it creates its row, so no outage shorter than the retention can have written the object
  of a row created before the run's cutoff. Looked up one at a time until one exists: the
  oldest candidates' objects (up to CANDIDATE_LOOKUPS), objects orders link whose rows are
  older than the cutoff (up to LINKED), journaled objects whose rows are (up to JOURNALED).
  A healthy store holds the first candidate's: one lookup.
- **Otherwise a sample of younger live rows' objects must mostly exist.** One live
  parse-session snapshot from each of STRATA equal spans between the cutoff and the
  reference time (the oldest of each), and the objects orders link that are younger than
  the cutoff: at least MIN_WITNESSES of them must exist, and at least two thirds
  (WITNESS_SHARE) of those looked up. Objects written during an outage are the newest
  rows', a minority of a sample spread across the retention unless the outage lasted most
  of it; a few objects removed by hand leave the majority standing. A sample with fewer
  witnesses than that does not show the store is there.

The cost: a healthy run, one lookup; a run whose oldest candidates' objects were removed by
hand, up to CANDIDATE_LOOKUPS + LINKED + JOURNALED + STRATA lookups (40), once, and the
STRATA short indexed reads of the sample. What it cannot tell apart (docs/safety.md, known
limits): an outage longer than most of the retention, and objects of old rows left in a
mount point before a volume was mounted over it.

- `search`: look keys up one at a time, group after group, until one object exists.
- `gather`: the rule above, as `Evidence`.
- `Sentinel`: the key of an object a run has seen exist. Before a batch with missing
  objects is settled, it is looked up again (one lookup); if it is gone too, `gather` is
  asked again; if the evidence does not hold, the batch's missing objects are not settled
  (their journal entries stay) and the run stops with `StorageMismatch`.

The start-of-run check is preflight.check_storage_holds_objects.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from snapshot_ops.db import Catalog
from snapshot_ops.errors import SnapshotOpsError
from snapshot_ops.rules import DEFAULT_RETENTION_DAYS, Policy
from snapshot_ops.storage.base import StorageBackend

log = logging.getLogger(__name__)

#: The oldest candidates' objects looked up first (a healthy store holds the first).
CANDIDATE_LOOKUPS = 20
#: Files orders link looked up (those older than the cutoff as proof, the rest sampled).
LINKED = 5
#: Journaled objects of rows older than the cutoff looked up as proof.
JOURNALED = 5
#: Equal spans of the retention window sampled for one younger live snapshot each.
STRATA = 10
#: A sample of younger live rows' objects shows the store is there when at least this
#: many of them exist...
MIN_WITNESSES = 3
#: ...and at least this share of those looked up.
WITNESS_SHARE = Fraction(2, 3)
#: How a run config confirms that objects really are gone (preflight names it too).
ACCEPT_SETTING = "accept_missing_objects: true"
#: Keys a message shows of each group it names.
SHOWN_KEYS = 3


class StorageMismatch(SnapshotOpsError):
    """The store does not show that it holds the objects the database says it should."""


@dataclass(frozen=True)
class Window:
    """The ages the evidence is judged by: a row created before `cutoff` is older than the
    retention (its object proves the store); the younger rows are sampled between `cutoff`
    and `end` (the run's reference time), the last span open above. Aware instants."""

    cutoff: dt.datetime
    end: dt.datetime

    @classmethod
    def of(cls, policy: Policy) -> Window:
        """The run's own window: its cutoff and reference time."""
        return cls(policy.cutoff, policy.reference_time)

    @classmethod
    def ending(cls, end: dt.datetime, days: float = DEFAULT_RETENTION_DAYS) -> Window:
        """The window of a `days` retention up to `end` (for callers without a policy)."""
        return cls(end - dt.timedelta(days=days), end)

    def strata(self, count: int) -> list[dt.datetime]:
        """The lower bounds of `count` equal spans from `cutoff` to `end`, oldest first."""
        step = (self.end - self.cutoff) / count
        return [self.cutoff + i * step for i in range(count)]


#: A group of keys to look up: what they are (for messages) and how to read them. The
#: reading is deferred, so a group costs nothing when an earlier one found an object.
KeyGroup = tuple[str, Callable[[], Sequence[str]]]


@dataclass(frozen=True)
class Search:
    """What `search` looked up: the first key whose object exists (None: none did) and,
    per group that was read, its keys in the order they were looked up."""

    found: str | None
    looked: dict[str, list[str]] = field(default_factory=dict)

    @property
    def lookups(self) -> int:
        """Lookups sent to the store (one per key looked up)."""
        return sum(len(keys) for keys in self.looked.values())

    def describe(self) -> str:
        """The groups and a few of their keys, e.g. "2 expired candidates' objects
        ('a.pdf', 'b.pdf') and 1 file orders link older than the retention ('c.pdf')"."""
        parts = [
            f"{len(keys)} {what} ({_shown(keys)})" for what, keys in self.looked.items() if keys
        ]
        return " and ".join(parts) if parts else "no object older than the retention"


def _shown(keys: Sequence[str]) -> str:
    more = ", ..." if len(keys) > SHOWN_KEYS else ""
    return ", ".join(repr(k) for k in keys[:SHOWN_KEYS]) + more


def search(
    storage: StorageBackend, groups: Sequence[KeyGroup], *, skip: Sequence[str] = ()
) -> Search:
    """Look the groups' keys up one at a time, in order, until an object exists.

    A group's keys are read only when every group before it found nothing, and a key is
    looked up once (keys in `skip`, or in an earlier group, are passed over). So a store
    that holds the first key costs one lookup (one stat, one HEAD). A key the store cannot
    look up counts as not found (`StorageBackend.sizes` gives None), except one it refuses
    (`StorageBackend.refusals`: a symlink, a folder, an unsafe key): that row is never
    marked nor settled, and its object proves nothing either way, so it is left out.
    """
    seen = set(skip)
    looked: dict[str, list[str]] = {}
    for what, read in groups:
        keys = looked.setdefault(what, [])
        for key in read():
            if key in seen:
                continue
            seen.add(key)
            exists = _exists(storage, key)
            if exists is not None:
                keys.append(key)
            if exists:
                return Search(key, looked)
    return Search(None, looked)


def _exists(storage: StorageBackend, key: str) -> bool | None:
    """Whether the store holds `key`'s object; None for a key it refuses (proves nothing)."""
    if storage.sizes([key]).get(key) is not None:
        return True
    return None if storage.refusals([key]) else False


#: The groups `gather` looks up, as messages name them.
CANDIDATES = "expired candidates' objects (oldest first)"
OLD_LINKED = "files orders link, older than the retention"
JOURNALED_OBJECTS = "journaled objects older than the retention"
YOUNGER_ROWS = "objects of younger live rows, sampled across the retention"


@dataclass(frozen=True)
class Evidence:
    """What `gather` found: `proof`, the objects older than the retention it looked up (and
    the first that exists); `sample`, the younger live rows' objects it looked up when none
    did (oldest first), and `present`, those of them that exist."""

    proof: Search
    sample: tuple[str, ...] = ()
    present: tuple[str, ...] = ()

    @property
    def sample_vouches(self) -> bool:
        """At least MIN_WITNESSES of the sample exist, and at least WITNESS_SHARE of it."""
        found = len(self.present)
        return found >= MIN_WITNESSES and found >= WITNESS_SHARE * len(self.sample)

    @property
    def holds(self) -> bool:
        """The store shows it is the place the database describes."""
        return self.proof.found is not None or self.sample_vouches

    @property
    def sentinel(self) -> str | None:
        """The object to look up again later: the old one found, else the oldest of the
        sample that exists when the sample vouches; None when the evidence does not hold."""
        if self.proof.found is not None:
            return self.proof.found
        return self.present[0] if self.sample_vouches else None

    @property
    def lookups(self) -> int:
        """Lookups sent to the store."""
        return self.proof.lookups + len(self.sample)

    @property
    def named_live_objects(self) -> bool:
        """Whether any live row's object was looked up (journaled ones are not live)."""
        looked = self.proof.looked
        return bool(looked.get(CANDIDATES) or looked.get(OLD_LINKED) or self.sample)

    def describe(self) -> str:
        """Where `gather` looked and what it found, for messages, e.g. "3 expired
        candidates' objects (oldest first) ('a.pdf', ...), and none exists; of 2 objects
        of younger live rows, sampled across the retention ('c.pdf', 'd.pdf'), 1 exists,
        where at least 3, and two thirds of those sampled, must"."""
        if self.proof.found is not None:
            return f"{self.proof.describe()}, and {self.proof.found!r} exists"
        old = f"{self.proof.describe()}, and none exists"
        if not self.sample:
            return f"{old}; no younger live row names an object"
        found = len(self.present)
        return (
            f"{old}; of {len(self.sample)} {YOUNGER_ROWS} ({_shown(self.sample)}), {found} "
            f"{'exists' if found == 1 else 'exist'}, where at least {MIN_WITNESSES}, and "
            "two thirds of those sampled, must"
        )

    def verdict(self) -> str:
        """What the store was judged by, e.g. for the run's metadata."""
        if self.proof.found is not None:
            return f"an object older than the retention exists ({self.proof.found!r})"
        return f"{len(self.present)} of {len(self.sample)} {YOUNGER_ROWS} exist" + (
            "" if self.sample_vouches else ", too few"
        )


def oldest_candidates(catalog: Catalog, cutoff: dt.datetime) -> list[str]:
    """The storage keys of the oldest CANDIDATE_LOOKUPS candidates, oldest first."""
    return [c.storage_key for c in next(catalog.iter_candidates(cutoff, CANDIDATE_LOOKUPS), [])]


def gather(
    catalog: Catalog,
    storage: StorageBackend,
    window: Window,
    *,
    candidates: Callable[[], Sequence[str]] | None = None,
    skip: Sequence[str] = (),
) -> Evidence:
    """The evidence that `storage` is the place the database describes (the rule in the
    module docstring): objects older than the retention one at a time until one exists,
    `candidates` first (default: the oldest candidates, `oldest_candidates`); if none
    does, the sample of younger live rows' objects, every one looked up. Keys in `skip`
    (those the caller just found missing) are not looked up. Reads only; a failed lookup
    is "not found" (`search`).
    """
    read: dict[str, list[tuple[str, bool]]] = {}

    def read_linked() -> list[tuple[str, bool]]:  # read once, by whichever part needs it
        if "linked" not in read:
            read["linked"] = catalog.linked_keys(window.cutoff, LINKED)
        return read["linked"]

    proof = search(
        storage,
        [
            (CANDIDATES, candidates or (lambda: oldest_candidates(catalog, window.cutoff))),
            (OLD_LINKED, lambda: [key for key, old in read_linked() if old]),
            (
                JOURNALED_OBJECTS,
                lambda: catalog.journaled_keys(JOURNALED, created_before=window.cutoff),
            ),
        ],
        skip=skip,
    )
    if proof.found is not None:
        return Evidence(proof)
    seen = set(skip).union(*proof.looked.values())
    sampled = catalog.sampled_keys(window.strata(STRATA))
    sample: list[str] = []
    present: list[str] = []
    for key in dict.fromkeys([*sampled, *(key for key, old in read_linked() if not old)]):
        if key in seen:
            continue
        exists = _exists(storage, key)
        if exists is not None:
            sample.append(key)
        if exists:
            present.append(key)
    return Evidence(proof, tuple(sample), tuple(present))


class Sentinel:
    """An object a run has seen in its store, looked up again before missing objects are
    settled.

    One per step; the deleting threads share it (a lock keeps them to one lookup at a time).
    `key` is the object the start-of-run check found (the run's plan carries it; None when
    it found none or did not run). `window` is the run's (`Window.of` its policy; default:
    the default retention back from now). `accept_missing` is the operator's confirmation
    for one run that the store holds none of the objects (`ACCEPT_SETTING`): missing
    objects are then settled without evidence.
    """

    def __init__(
        self,
        catalog: Catalog,
        storage: StorageBackend,
        key: str | None = None,
        *,
        window: Window | None = None,
        accept_missing: bool = False,
    ) -> None:
        self._catalog = catalog
        self._storage = storage
        self._key = key
        self._window = window or Window.ending(dt.datetime.now(dt.UTC))
        self._accept_missing = accept_missing
        self._lock = threading.Lock()

    @property
    def key(self) -> str | None:
        """The object last seen to exist (None: none yet)."""
        return self._key

    def doubt(self, missing: Sequence[str], *, deleted_now: int = 0) -> StorageMismatch | None:
        """Why the objects of `missing` (keys the store just answered "not found" for) must
        not be settled as already gone, or None when they may.

        None at once for no keys. Otherwise the sentinel is looked up (one lookup); if it
        is gone, the evidence is gathered again by the same rule as at the start of the run
        (`gather`, the missing keys left out), and the object it rests on becomes the
        sentinel. If it does not hold, the store is not the one the run started with
        (unmounted, emptied, another place), unless the run accepts missing objects.
        `deleted_now` is how many objects the same batch's deletes just removed: when no
        live row names any other object (nothing to look for), that is the only evidence
        there is that the store is there, and it is taken. Never raises for the store's
        answers: a failed lookup is "not found", so a store in trouble errs towards keeping
        journal entries.
        """
        if not missing:
            return None
        if self._accept_missing:
            return None
        with self._lock:
            key = self._key
            if key is not None and self._storage.sizes([key]).get(key) is not None:
                return None
            evidence = gather(self._catalog, self._storage, self._window, skip=missing)
            if evidence.holds:
                log.info(
                    "%d objects were already missing; %s still holds %r (%s), so they are gone",
                    len(missing),
                    self._storage.description,
                    evidence.sentinel,
                    evidence.verdict(),
                )
                self._key = evidence.sentinel
                return None
            if deleted_now and not evidence.named_live_objects:
                log.info(
                    "%d objects were already missing; no live row names another object, and "
                    "the same batch just deleted %d from %s, so they are gone",
                    len(missing),
                    deleted_now,
                    self._storage.description,
                )
                return None
            return StorageMismatch(_vanished(self._storage, missing, key, evidence))


def _vanished(
    storage: StorageBackend, missing: Sequence[str], sentinel: str | None, evidence: Evidence
) -> str:
    seen = (
        f"no longer holds {sentinel!r}, which this run saw there; it looked for "
        if sentinel is not None
        else "does not show it is the right place: it looked for "
    )
    return (
        f"{len(missing)} objects came back already missing from {storage.description}, "
        f"and the store {seen}{evidence.describe()}: it looks "
        "unmounted, emptied or replaced since the run started (objects written since, by "
        "an application writing into an unmounted volume's mount point, do not count). The "
        "run stopped before recording them as deleted: their rows stay marked and their "
        "journal entries pending, and rows not yet marked stay live. Mount the volume again "
        "(or fix SNAPSHOT_OPS_STORAGE_URL) and run again: the next run deletes them. Only if "
        f"these objects really are gone (removed by hand), run once with {ACCEPT_SETTING}."
    )
