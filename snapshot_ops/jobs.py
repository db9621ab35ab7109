"""The cleanup job: four ops, each a step in the run.

identify_expired_candidates -> verify_unlinked_and_mark -> delete_storage_objects
-> record_cleanup_run

The order matters: a row is marked deleted (after its linkage is re-checked under a lock)
and committed *before* its object is deleted, never the reverse; see catalog.mark_batch.
The ops are thin: the decisions live in rules.py, catalog.py and cleanup.py.
"""


import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from dagster import (
    Config,
    Failure,
    HookContext,
    MetadataValue,
    OpExecutionContext,
    failure_hook,
    in_process_executor,
    job,
    op,
)
from pydantic import Field

from snapshot_ops import checkpoints, cleanup, valves
from snapshot_ops.catalog import CandidateSummary, Catalog
from snapshot_ops.errors import SnapshotOpsError
from snapshot_ops.resources import SnapshotDatabase, SnapshotStorage
from snapshot_ops.rules import DEFAULT_RETENTION_DAYS, Policy, check_clocks, make_policy

#: Runs carrying this tag are limited to one at a time by the run coordinator.
CONCURRENCY_TAG = "snapshot_ops/cleanup"
#: PostgreSQL's SQLSTATE for "permission denied".
PG_INSUFFICIENT_PRIVILEGE = "42501"
#: How many candidate rows a dry run lists in its metadata.
DRY_RUN_LISTING = 50


class CleanupConfig(Config):
    """Run config of a cleanup run (on the first op, carried by the plan to the others)."""

    dry_run: bool = Field(
        default=False, description="Report what would be deleted and change nothing."
    )
    retention_days: float = Field(
        default=DEFAULT_RETENTION_DAYS,
        description="Parse-session snapshots older than this many days expire (> 0).",
    )
    reference_time: str | None = Field(
        default=None,
        description=(
            "ISO 8601 instant with offset that 'older than' counts back from; default now. "
            "Schedules set it to the tick's time so a re-run deletes the same rows."
        ),
    )
    max_deletions: int = Field(
        default=100_000,
        description=(
            "Safety cap: if more rows than this are expired, the run stops before deleting "
            "anything. Raise it deliberately for a first run on a large backlog."
        ),
    )
    batch_size: int = Field(
        default=1000, description="Rows locked, marked and deleted per transaction."
    )


@dataclass(frozen=True)
class CleanupPlan:
    run_id: str
    run_at: dt.datetime
    policy: Policy
    dry_run: bool
    batch_size: int
    summary: CandidateSummary


@contextmanager
def _catalog(database: SnapshotDatabase) -> Iterator[Catalog]:
    try:
        catalog = database.open_catalog()
    except SnapshotOpsError as exc:
        raise Failure(description=str(exc)) from exc
    try:
        yield catalog
    except sa.exc.ProgrammingError as exc:
        if getattr(exc.orig, "pgcode", None) != PG_INSUFFICIENT_PRIVILEGE:
            raise
        raise Failure(
            description=(
                f"the database role lacks a privilege the job needs: {exc.orig}. It needs "
                'SELECT on "OrderAttachments" and "SnapshotFiles", UPDATE ("deletedAt") on '
                '"SnapshotFiles", and its own schema (see README, Least privilege)'
            )
        ) from exc
    finally:
        catalog.engine.dispose()


@op
def identify_expired_candidates(
    context: OpExecutionContext,
    config: CleanupConfig,
    database: SnapshotDatabase,
    storage: SnapshotStorage,
) -> CleanupPlan:
    """Validate the config, check database and storage, count the expired candidates.

    Everything here is read-only against the application: a bad config, a missing table or
    column, an unreachable store or a count over the cap fails the run before anything is
    touched.
    """
    run_at = dt.datetime.now(dt.UTC)
    try:
        if config.batch_size < 1:
            raise SnapshotOpsError(f"batch_size must be at least 1, got {config.batch_size}")
        policy = make_policy(
            reference_time=config.reference_time,
            retention_days=config.retention_days,
            max_deletions=config.max_deletions,
            now=run_at,
        )
        storage.open_backend().close()  # fail now if the storage root is wrong
    except SnapshotOpsError as exc:
        raise Failure(description=f"bad configuration: {exc}") from exc

    with _catalog(database) as catalog:
        try:
            check_clocks(run_at, catalog.database_now())
        except SnapshotOpsError as exc:
            raise Failure(description=f"clock check: {exc}") from exc
        catalog.ensure_own_tables()
        summary = catalog.summarize(policy.cutoff)
        catalog.start_run(
            run_id=context.run_id, run_at=run_at, reference_time=policy.reference_time,
            cutoff=policy.cutoff, dry_run=config.dry_run, candidate_count=summary.candidates,
        )
        metadata: dict[str, object] = {
            "runAt": run_at.isoformat(),
            "cutoff": policy.cutoff.isoformat(),
            "candidates": summary.candidates,
            "knownBytes": summary.known_bytes,
            "candidatesWithoutSize": summary.unknown_size,
            "keptLinkedToOrders": summary.kept_linked,
            "dryRun": config.dry_run,
        }
        if config.dry_run:
            metadata["wouldDelete"] = MetadataValue.md(_listing(catalog, policy))
        else:
            _check_storage(catalog, storage, policy)
        context.log.info(
            f"{summary.candidates} expired parse-session snapshots (cutoff "
            f"{policy.cutoff.isoformat()}), {summary.kept_linked} expired but kept: "
            "linked to an order"
        )
        if summary.candidates > policy.max_deletions and not config.dry_run:
            message = (
                f"{summary.candidates} snapshots are expired, more than max_deletions="
                f"{policy.max_deletions}; nothing was deleted. Check the cutoff "
                f"({policy.cutoff.isoformat()}) and, if it is right, run again with a higher "
                "max_deletions (or dry_run: true to list them)."
            )
            catalog.finish_run(context.run_id, status="failed", errors=[message])
            raise Failure(description=message, metadata=metadata)
    checkpoints.reached("after_select")
    context.add_output_metadata(metadata)
    return CleanupPlan(
        run_id=context.run_id,
        run_at=run_at,
        policy=policy,
        dry_run=config.dry_run,
        batch_size=config.batch_size,
        summary=summary,
    )


def _check_storage(catalog: Catalog, storage: SnapshotStorage, policy: Policy) -> None:
    backend = storage.open_backend()
    try:
        valves.check_storage_sees_candidates(catalog, backend, policy.cutoff)
    except valves.StorageMismatch as exc:
        raise Failure(description=str(exc)) from exc
    finally:
        backend.close()


def _listing(catalog: Catalog, policy: Policy) -> str:
    lines = ["| fileId | storageKey | sizeBytes |", "|---|---|---|"]
    for batch in catalog.iter_candidates(policy.cutoff, DRY_RUN_LISTING):
        lines += [f"| {c.file_id} | {c.storage_key} | {c.size_bytes} |" for c in batch]
        break
    return "\n".join(lines)


@op
def verify_unlinked_and_mark(
    context: OpExecutionContext, plan: CleanupPlan, database: SnapshotDatabase
) -> cleanup.MarkReport:
    """Lock each batch of candidates, re-check no order links them, mark them deleted.

    The marks are committed (and journaled) before any object is deleted. In a dry run the
    same statements run and are rolled back.
    """
    with _catalog(database) as catalog:
        report = cleanup.mark_expired(
            catalog,
            plan.policy,
            run_id=plan.run_id,
            marked_at=plan.run_at,
            batch_size=plan.batch_size,
            dry_run=plan.dry_run,
        )
    verb = "would mark" if plan.dry_run else "marked"
    context.log.info(
        f"{verb} {report.marked} rows deleted; {len(report.attached_meanwhile)} were linked "
        f"to an order during the run and kept; {len(report.errors)} refused keys left live"
    )
    context.add_output_metadata(
        {
            "marked": report.marked,
            "attachedDuringRun": len(report.attached_meanwhile),
            "refusedKeys": len(report.errors),
        }
    )
    return report


@op
def delete_storage_objects(
    context: OpExecutionContext,
    plan: CleanupPlan,
    marked: cleanup.MarkReport,
    database: SnapshotDatabase,
    storage: SnapshotStorage,
) -> cleanup.DeleteReport:
    """Delete the objects of all marked rows (this run's and any left by earlier runs)."""
    if plan.dry_run:
        context.log.info("dry run: no object deleted")
        return cleanup.DeleteReport(0, 0, 0)
    checkpoints.reached("before_delete")
    backend = storage.open_backend()
    try:
        with _catalog(database) as catalog:
            report = cleanup.delete_pending(catalog, backend, batch_size=plan.batch_size)
    finally:
        backend.close()
    context.log.info(
        f"deleted {report.deleted} objects from {backend.description}, {report.missing} were "
        f"already missing, {len(report.errors)} failed and stay pending; "
        f"{report.bytes_reclaimed} bytes reclaimed"
    )
    context.add_output_metadata(
        {
            "deleted": report.deleted,
            "alreadyMissing": report.missing,
            "failed": len(report.errors),
            "bytesReclaimed": report.bytes_reclaimed,
            "keptSharedKey": len(report.kept_shared),
        }
    )
    return report


@op
def record_cleanup_run(
    context: OpExecutionContext,
    plan: CleanupPlan,
    marked: cleanup.MarkReport,
    deleted: cleanup.DeleteReport,
    database: SnapshotDatabase,
) -> dict:
    """Write the run's `runAt`, `deletedCount`, `errors` and bytes reclaimed; fail on errors."""
    checkpoints.reached("before_record")
    errors = marked.errors + deleted.errors
    status = "failed" if errors else "succeeded"
    counts = {
        "marked_count": marked.marked,
        "deleted_count": deleted.deleted_count,
        "missing_count": deleted.missing,
        "bytes_reclaimed": deleted.bytes_reclaimed,
    }
    with _catalog(database) as catalog:
        catalog.finish_run(plan.run_id, status=status, errors=errors, **counts)
    summary = {
        "runAt": plan.run_at.isoformat(),
        "deletedCount": deleted.deleted_count,
        "errors": errors,
        "bytesReclaimed": deleted.bytes_reclaimed,
        "alreadyMissing": deleted.missing,
        "dryRun": plan.dry_run,
        "wouldDelete": marked.marked if plan.dry_run else 0,
    }
    context.log.info(f"cleanup summary: {summary}")
    metadata = {
        "runAt": plan.run_at.isoformat(),
        "deletedCount": deleted.deleted_count,
        "errorCount": len(errors),
        "errors": MetadataValue.json(errors[:50]),
        "bytesReclaimed": deleted.bytes_reclaimed,
    }
    if errors:
        shown = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        raise Failure(
            description=(
                f"cleanup finished its work with {len(errors)} error(s); rows and objects that "
                f"failed are left for the next run: {shown}"
            ),
            metadata=metadata,
        )
    context.add_output_metadata(metadata)
    return summary


@failure_hook(required_resource_keys={"database"})
def mark_run_failed(context: HookContext) -> None:
    """Close the run-log row of a run that crashed in a step, so it is not left 'running'."""
    error = str(context.op_exception) if context.op_exception else "step failed"
    try:
        catalog = context.resources.database.open_catalog()
    except SnapshotOpsError:
        return  # the database itself is the problem; the step's failure already says so
    try:
        catalog.ensure_own_tables()
        catalog.finish_run_if_running(context.run_id, errors=[error])
    finally:
        catalog.engine.dispose()


@job(
    executor_def=in_process_executor,  # one process: a step costs ms, not ~1 s to spawn
    tags={CONCURRENCY_TAG: "true"},
    hooks={mark_run_failed},
    description=(
        "Deletes ParseSessionSnapshot files older than the retention that no order links, "
        "marking their rows deleted first. Never deletes an OrderAttachmentSnapshot or any "
        "file linked in OrderAttachments."
    ),
)
def snapshot_cleanup_job() -> None:
    plan = identify_expired_candidates()
    marked = verify_unlinked_and_mark(plan)
    deleted = delete_storage_objects(plan, marked)
    record_cleanup_run(plan, marked, deleted)
