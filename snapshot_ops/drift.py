"""A read-only reconciliation of the database against the storage: drift is shown, not fixed.

`reconcile(catalog, storage)` builds the report from an open catalog and backend;
`python -m snapshot_ops.reconcile` prints it for the job's own resources.

It reports
- objects in storage that no row points at (orphans: never deleted by the cleanup, which
  only ever deletes what a marked row names),
- objects whose rows are all marked deleted and that no journal entry will delete
  (leftovers: the next cleanup run will not remove them either),
- live rows whose object is missing (lost files: the worst drift; for an order's file this
  is what the cleanup must never cause),
- journal entries still pending (the next cleanup run finishes them).

Nothing is deleted or updated: deciding what an orphan is belongs to a person, because a
listing error must never turn into a mass delete.

Keys are compared the way the store resolves them (`StorageBackend.key_matching`): on a
folder that ignores case the listing may spell a file otherwise than its row does (ntfs-3g
with ignore_case lists every name in lowercase), and it is still that row's object, so the
row's key and the listed key are compared folded (KeyMatching.fold). The examples keep each
spelling as listed (objects) or as stored (rows).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import sqlalchemy as sa

from snapshot_ops.db import Catalog
from snapshot_ops.storage import StorageBackend

#: How many example keys or ids each finding lists; all are counted.
SAMPLE = 100
ROW_BATCH = 5000


@dataclass(frozen=True)
class Finding:
    count: int
    sample: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReconcileReport:
    objects: int  # objects listed in storage
    rows: int  # rows in SnapshotFiles
    orphan_objects: Finding  # in storage, no row
    leftover_objects: Finding  # every row marked deleted, no journal entry
    missing_objects: Finding  # live rows (fileIds) whose object is not in storage
    pending_deletes: int  # journal entries the next run will finish

    @property
    def drift(self) -> bool:
        """True when anything needs a person's attention."""
        return bool(
            self.orphan_objects.count or self.leftover_objects.count or self.missing_objects.count
        )

    def to_dict(self) -> dict:
        """The report as plain JSON-ready data."""
        return {**asdict(self), "drift": self.drift}


def reconcile(catalog: Catalog, storage: StorageBackend, prefix: str = "") -> ReconcileReport:
    """Compare every row with every object under `prefix`; change nothing.

    The storage listing is held in memory as a set of keys (about 100 bytes a key, twice
    that on a store that folds names); rows are streamed in batches. Keys match as the store
    matches them (see the module docstring). Raises RowSecurityError before reading anything
    when row-level security would hide rows (Catalog.check_rows_unfiltered): a hidden row's
    object would be reported as an orphan, which a person may delete.
    """
    catalog.check_rows_unfiltered()
    fold = storage.key_matching.fold
    folded_prefix = fold(prefix)
    listed = list(storage.list_keys(prefix))
    stored = {fold(key) for key in listed}
    live_keys: set[str] = set()  # folded, as are the others
    dead_keys: set[str] = set()
    missing: list[str] = []
    missing_count = rows = 0
    f = catalog.files.c
    after = None
    while True:
        query = sa.select(f.fileId, f.storageKey, f.deletedAt).order_by(f.fileId).limit(ROW_BATCH)
        if after is not None:
            query = query.where(f.fileId > after)
        with catalog.reading() as conn:
            batch = conn.execute(query).all()
        if not batch:
            break
        after = batch[-1].fileId
        rows += len(batch)
        for row in batch:
            if not isinstance(row.storageKey, str):
                continue
            key = fold(row.storageKey)
            if not key.startswith(folded_prefix):
                continue
            if row.deletedAt is None:
                live_keys.add(key)
                if key not in stored:
                    missing_count += 1
                    if len(missing) < SAMPLE:
                        missing.append(str(row.fileId))
            elif key in stored:
                dead_keys.add(key)
    pending = {fold(key) for key in _pending_keys(catalog)}
    named = live_keys | dead_keys
    left_over = dead_keys - live_keys - pending
    orphans = sorted(key for key in listed if fold(key) not in named)
    leftovers = sorted(key for key in listed if fold(key) in left_over)
    return ReconcileReport(
        objects=len(listed),
        rows=rows,
        orphan_objects=Finding(len(orphans), orphans[:SAMPLE]),
        leftover_objects=Finding(len(leftovers), leftovers[:SAMPLE]),
        missing_objects=Finding(missing_count, missing),
        pending_deletes=len(pending),
    )


def _pending_keys(catalog: Catalog) -> set[str]:
    """Storage keys in the cleanup's journal (none if the job never ran here)."""
    table = catalog.pending
    if not sa.inspect(catalog.engine).has_table(table.name, schema=table.schema):
        return set()
    with catalog.reading() as conn:
        return set(conn.execute(sa.select(table.c.storage_key)).scalars())
