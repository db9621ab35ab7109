"""Missing is evidence, not success: a run settles an object as "already missing" only while
its store still holds objects the database says it should.

A store that is not the place the database describes answers "not found" for every key: an
unmounted volume (its mount point is an empty folder), a bucket or container of another
environment, a prefix with a typo, a network mount dropped in the middle of a run. A run
that took each such answer as "already deleted" would mark every candidate, settle every
journal entry, report success and free nothing, and the real objects would stay forever
once the store came back (their rows are marked, no journal entry is left to delete them).
Objects removed by hand give the same answer for their own keys, so the candidates' keys
alone cannot tell the two apart; other live rows' objects can (db.witnesses): a store that
holds those is the right place, and the candidates' objects really are gone.

- `search`: look keys up one at a time, group after group, until one object exists.
- `Sentinel`: the key of an object a run has seen exist. Before a batch with missing
  objects is settled, it is looked up again (one lookup); if it is gone too, other live
  rows' objects are looked for; if none exists either, the batch's missing objects are not
  settled (their journal entries stay) and the run stops with `StorageMismatch`.

The start-of-run check that finds the first sentinel is preflight.check_storage_holds_objects.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from snapshot_ops.db import Catalog
from snapshot_ops.errors import SnapshotOpsError
from snapshot_ops.storage.base import StorageBackend

log = logging.getLogger(__name__)

#: Live rows of each kind looked up as witnesses (db.witnesses.Witnesses.witness_keys).
WITNESSES = 5
#: Journaled objects looked up besides (an object still there shows the store is present).
JOURNALED = 5
#: How a run config confirms that objects really are gone (preflight names it too).
ACCEPT_SETTING = "accept_missing_objects: true"
#: Keys a message shows of each group it names.
SHOWN_KEYS = 3


class StorageMismatch(SnapshotOpsError):
    """The store holds none of the objects the database says it should."""


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
        ('a.pdf', 'b.pdf') and 5 other live rows' objects ('c.pdf', ...)"."""
        parts = []
        for what, keys in self.looked.items():
            if keys:
                shown = ", ".join(repr(k) for k in keys[:SHOWN_KEYS])
                more = ", ..." if len(keys) > SHOWN_KEYS else ""
                parts.append(f"{len(keys)} {what} ({shown}{more})")
        return " and ".join(parts) if parts else "no object (the database names none)"


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
            if storage.sizes([key]).get(key) is not None:
                keys.append(key)
                return Search(key, looked)
            if not storage.refusals([key]):
                keys.append(key)
    return Search(None, looked)


#: The groups `witness_groups` looks up, as messages name them.
OTHER_LIVE_ROWS = "other live rows' objects (the newest snapshots, files orders link)"
JOURNALED_OBJECTS = "journaled objects"


def witness_groups(catalog: Catalog) -> list[KeyGroup]:
    """Live rows besides the candidates (objects the store must hold), then journaled
    objects (which it may hold: found, they show the store is there; missing, they prove
    nothing, as a run killed after its deletes leaves them so); see db.witnesses."""
    return [
        (OTHER_LIVE_ROWS, lambda: catalog.witness_keys(WITNESSES)),
        (JOURNALED_OBJECTS, lambda: catalog.journaled_keys(JOURNALED)),
    ]


class Sentinel:
    """An object a run has seen in its store, looked up again before missing objects are
    settled.

    One per step; the deleting threads share it (a lock keeps them to one lookup at a time).
    `key` is the object the start-of-run check found (the run's plan carries it; None when
    it found none or did not run). `accept_missing` is the operator's confirmation for one
    run that the store holds none of the objects (`ACCEPT_SETTING`): missing objects are
    then settled without evidence.
    """

    def __init__(
        self,
        catalog: Catalog,
        storage: StorageBackend,
        key: str | None = None,
        *,
        accept_missing: bool = False,
    ) -> None:
        self._catalog = catalog
        self._storage = storage
        self._key = key
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
        is gone, other live rows' objects and journaled ones are looked for (`search`), and
        the first found becomes the sentinel. If none exists, the store is not the one
        the run started with (unmounted, emptied, another place), unless the run accepts
        missing objects. `deleted_now` is how many objects the same batch's deletes just
        removed: when no live row names any other object (nothing to look for), that is the
        only evidence there is that the store is there, and it is taken. Never raises for
        the store's answers: a failed lookup is "not found", so a store in trouble errs
        towards keeping journal entries.
        """
        if not missing:
            return None
        if self._accept_missing:
            return None
        with self._lock:
            key = self._key
            if key is not None and self._storage.sizes([key]).get(key) is not None:
                return None
            found = search(self._storage, witness_groups(self._catalog), skip=missing)
            if found.found is not None:
                log.info(
                    "%d objects were already missing; %s still holds %r, so they are gone",
                    len(missing),
                    self._storage.description,
                    found.found,
                )
                self._key = found.found
                return None
            if deleted_now and not found.looked.get(OTHER_LIVE_ROWS):
                log.info(
                    "%d objects were already missing; no live row names another object, and "
                    "the same batch just deleted %d from %s, so they are gone",
                    len(missing),
                    deleted_now,
                    self._storage.description,
                )
                return None
            return StorageMismatch(_vanished(self._storage, missing, key, found))


def _vanished(
    storage: StorageBackend, missing: Sequence[str], sentinel: str | None, found: Search
) -> str:
    seen = (
        f"no longer holds {sentinel!r}, which this run saw there, nor any of "
        if sentinel is not None
        else "holds none of "
    )
    return (
        f"{len(missing)} objects came back already missing from {storage.description}, "
        f"and the store {seen}{found.describe()}: it looks unmounted, emptied or replaced "
        "since the run started. The run stopped before recording them as deleted: their "
        "rows stay marked and their journal entries pending, and rows not yet marked stay "
        "live. Mount the volume again (or fix SNAPSHOT_OPS_STORAGE_URL) and run again: the "
        "next run deletes them. Only if these objects really are gone (removed by hand), "
        f"run once with {ACCEPT_SETTING}."
    )
