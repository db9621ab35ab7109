"""The two loops of a cleanup run, free of Dagster: mark in batches, then delete in batches.

Both stream from the database in bounded batches (keyset pagination), so memory stays flat
whatever the backlog. Ops in `jobs.py` call these and report what they return.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from snapshot_ops import checkpoints
from snapshot_ops.catalog import Catalog
from snapshot_ops.rules import Policy
from snapshot_ops.storage.base import Outcome, StorageBackend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MarkReport:
    marked: int
    bytes_marked: int  # from "sizeBytes" where set
    attached_meanwhile: list[str]  # candidates an order linked while the run went on
    errors: list[str] = field(default_factory=list)  # refused keys, left live


@dataclass(frozen=True)
class DeleteReport:
    deleted: int  # objects this run removed
    missing: int  # objects already gone: their rows count as deleted too
    bytes_reclaimed: int
    errors: list[str] = field(default_factory=list)  # entries left pending for the next run
    #: Marked rows whose object was kept because a live row shares its storage key.
    kept_shared: list[str] = field(default_factory=list)

    @property
    def deleted_count(self) -> int:
        """The seed's `deletedCount`: rows whose object is now confirmed gone."""
        return self.deleted + self.missing


def mark_expired(
    catalog: Catalog,
    policy: Policy,
    *,
    run_id: str,
    marked_at: dt.datetime,
    batch_size: int,
    dry_run: bool = False,
) -> MarkReport:
    """Tombstone every current candidate, batch by batch, at most `policy.max_deletions`."""
    marked = bytes_marked = 0
    attached: list[str] = []
    errors: list[str] = []
    cursor = None
    while marked < policy.max_deletions:
        batch = catalog.mark_batch(
            cutoff=policy.cutoff,
            cursor=cursor,
            limit=min(batch_size, policy.max_deletions - marked),
            run_id=run_id,
            marked_at=marked_at,
            dry_run=dry_run,
        )
        marked += len(batch.marked)
        bytes_marked += sum(c.size_bytes for c in batch.marked if (c.size_bytes or 0) > 0)
        attached.extend(batch.attached_meanwhile)
        errors.extend(f"refused {c.file_id}: {reason}" for c, reason in batch.refused)
        checkpoints.reached("after_mark_batch")
        if batch.cursor is None:
            break
        cursor = batch.cursor
    log.info("marked %d rows deleted (%d attached meanwhile, kept)", marked, len(attached))
    return MarkReport(marked, bytes_marked, attached, errors)


def delete_pending(catalog: Catalog, storage: StorageBackend, *, batch_size: int) -> DeleteReport:
    """Delete the objects of every journaled row; keep the journal entry of any that fail.

    Each batch holds its journal entries locked while the store works on them, so a second
    run skips them instead of deleting (and counting) the same objects twice.
    """
    deleted = missing = reclaimed = 0
    errors: list[str] = []
    kept_shared: list[str] = []
    after: str | None = None
    while True:
        with catalog.engine.connect() as conn, conn.begin():
            entries = catalog.claim_pending(conn, after, batch_size)
            if not entries:
                break
            after = entries[-1].file_id
            # An object that a live row still points at is not this row's alone to delete.
            in_use = catalog.keys_in_use(conn, [e.storage_key for e in entries])
            if in_use:
                shared = [e.file_id for e in entries if e.storage_key in in_use]
                kept_shared.extend(shared)
                catalog.settle_pending(conn, shared, {})
                entries = [e for e in entries if e.storage_key not in in_use]
            unknown = [e.storage_key for e in entries if e.size_bytes is None or e.size_bytes < 0]
            measured = storage.sizes(unknown) if unknown else {}
            results = storage.delete_many([e.storage_key for e in entries])
            checkpoints.reached("after_store_delete")
            gone: list[str] = []
            failed: dict[str, str] = {}
            for entry, result in zip(entries, results, strict=True):
                if result.outcome is Outcome.DELETED:
                    deleted += 1
                    size = entry.size_bytes
                    if size is None or size < 0:
                        size = measured.get(entry.storage_key)
                    reclaimed += size or 0
                    gone.append(entry.file_id)
                elif result.outcome is Outcome.MISSING:
                    missing += 1
                    gone.append(entry.file_id)
                else:
                    message = result.error or result.outcome.value
                    failed[entry.file_id] = message
                    errors.append(f"{result.outcome.value} {entry.file_id}: {message}")
            catalog.settle_pending(conn, gone, failed)
        checkpoints.reached("after_settle")
    log.info(
        "deleted %d objects, %d already missing, %d failed, %d bytes reclaimed, "
        "%d kept because a live row shares them",
        deleted, missing, len(errors), reclaimed, len(kept_shared),
    )
    return DeleteReport(deleted, missing, reclaimed, errors, kept_shared)
