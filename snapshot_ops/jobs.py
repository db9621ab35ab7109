"""The cleanup job: five ops, each a step in the run.

identify_expired_candidates -> finish_pending_deletes -> mark_and_delete_expired
-> record_cleanup_run -> refresh_storage_assets

The order matters: a row is marked deleted (after its linkage is re-checked under a lock)
and committed *before* its object is deleted, never the reverse; see catalog.mark_batch.
Checking the linkage and marking cannot be separate steps: they must share one
transaction, or an order could attach the file in between.
The ops are thin: the decisions live in rules.py, catalog.py and cleanup.py.

Re-execution: Dagster may run any suffix of these steps again under a new run id (the UI's
"Re-execute from failure" or a selected step, and the automatic retry of a run whose worker
died). Every step that writes works under its own `context.run_id`, never the plan's (the
plan is the parent run's output), opens that run's log row if the first step did not run,
and closes the rows of runs Dagster reports ended (as `crashed`, releasing their journal
leases). A step whose predecessor did not run in this run finishes the journal itself, so
a re-execution from `mark_and_delete_expired` or `record_cleanup_run` still deletes what
a killed run left journaled.
"""

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from dagster import (
    Config,
    Failure,
    HookContext,
    MetadataValue,
    OpExecutionContext,
    TableColumn,
    TableMetadataValue,
    TableRecord,
    TableSchema,
    failure_hook,
    job,
    op,
)
from pydantic import Field
from sqlalchemy.exc import ProgrammingError, SQLAlchemyError

from snapshot_ops import checkpoints, cleanup, valves
from snapshot_ops.assets import Emit, publish_cleanup_run
from snapshot_ops.catalog import CRASHED, FAILED, SUCCEEDED, CandidateSummary, Catalog
from snapshot_ops.errors import SnapshotOpsError
from snapshot_ops.resources import SnapshotDatabase, SnapshotStorage
from snapshot_ops.rules import DEFAULT_RETENTION_DAYS, Policy, check_clocks, make_policy
from snapshot_ops.settings import job_executor, schedule_timezone

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
    verify_storage: bool = Field(
        default=True,
        description=(
            "Before marking, check that the storage holds the oldest candidates' objects "
            "(stops a run pointed at the wrong folder, bucket or prefix). Needs read access "
            "to objects (s3:GetObject for a HEAD on S3)."
        ),
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
    except SnapshotOpsError as exc:  # e.g. a "createdAt" whose format cannot be read for sure
        raise Failure(description=str(exc)) from exc
    except ProgrammingError as exc:
        if getattr(exc.orig, "pgcode", None) != PG_INSUFFICIENT_PRIVILEGE:
            raise
        raise Failure(
            description=(
                f"the database role lacks a privilege the job needs: {exc.orig}. It needs "
                'SELECT on "OrderAttachments" and "SnapshotFiles", UPDATE ("deletedAt") on '
                '"SnapshotFiles", and its own schema (see docs/safety.md, "Least privilege")'
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
            raise SnapshotOpsError(
                f"batch_size must be at least 1, got {config.batch_size} (the default is 1000)"
            )
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
        times = catalog.times  # how createdAt is stored, checked before anything else
        catalog.ensure_own_tables()
        advice = catalog.missing_indexes()
        if advice:
            context.log.warning(
                "the application database lacks indexes that keep the cleanup's queries "
                "cheap on large tables; ask its owner to run:\n" + "\n".join(advice)
            )
        close_crashed_runs(context, catalog)
        summary = catalog.summarize(policy.cutoff)
        undated = catalog.count_undated()
        if undated:
            context.log.warning(
                f'{undated} live, unlinked ParseSessionSnapshot rows have no "createdAt": the '
                "job cannot tell their age and keeps them (they are never deleted). Give them "
                'a "createdAt" so the retention rule applies, or remove them by hand.'
            )
        catalog.start_run(
            run_id=context.run_id,
            run_at=run_at,
            reference_time=policy.reference_time,
            cutoff=policy.cutoff,
            dry_run=config.dry_run,
            candidate_count=summary.candidates,
        )
        metadata: dict[str, object] = {
            "runAt": run_at.isoformat(),
            "cutoff": policy.cutoff.isoformat(),
            "candidates": summary.candidates,
            "knownBytes": summary.known_bytes,
            "candidatesWithoutSize": summary.unknown_size,
            "keptLinkedToOrders": summary.kept_linked,
            "createdAtFormat": times.created.describe(),
            "keptWithoutCreatedAt": undated,
            "dryRun": config.dry_run,
            "missingIndexes": MetadataValue.md("\n".join(advice) or "none"),
        }
        if config.dry_run:
            metadata["wouldDelete"] = _listing(catalog, policy)
        elif config.verify_storage:
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
                f"({policy.cutoff.isoformat()}) and, if it is right, run again with "
                f"max_deletions: {summary.candidates} (or dry_run: true to list them)."
            )
            catalog.finish_run(context.run_id, status=FAILED, errors=[message])
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


def close_crashed_runs(context: OpExecutionContext, catalog: Catalog) -> list[str]:
    """Close the log rows left `running` by runs the Dagster instance reports ended.

    Such a run's worker died (killed, out of memory) before it could close its row. Its row
    becomes `crashed` (keeping the counts its settled batches added) and its journal leases
    are released, so this run can finish those entries now instead of when the lease ends.
    A run the instance does not know (another Dagster deployment) is left to its lease.
    Returns the run ids closed.
    """
    ended = []
    for run_id in catalog.running_runs(besides=context.run_id):
        run = context.instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            ended.append((run_id, run.status.value))
    for run_id, status in ended:
        catalog.close_crashed_runs(
            [run_id],
            reason=(
                f"{CRASHED}: the Dagster run ended ({status}) without recording its end; "
                f"closed by run {context.run_id}. Its counts are what it settled before it "
                "ended; what it left journaled is finished by a later run"
            ),
        )
    if ended:
        context.log.warning(f"closed the log rows of ended runs as crashed: {ended}")
    return [run_id for run_id, _ in ended]


def _join_run(context: OpExecutionContext, catalog: Catalog, plan: CleanupPlan) -> None:
    """Make sure this Dagster run has its own log row (a re-execution skips the first step)
    and that ended runs' rows are closed."""
    close_crashed_runs(context, catalog)
    catalog.start_run(
        run_id=context.run_id,
        run_at=plan.run_at,
        reference_time=plan.policy.reference_time,
        cutoff=plan.policy.cutoff,
        dry_run=plan.dry_run,
        candidate_count=plan.summary.candidates,
    )


def _ran_in_this_run(context: OpExecutionContext, step: str) -> bool:
    """Whether `step` is part of this run (False when a re-execution starts after it)."""
    keys = context.dagster_run.step_keys_to_execute
    return keys is None or step in keys


def _finish_journal(
    context: OpExecutionContext,
    plan: CleanupPlan,
    catalog: Catalog,
    storage: SnapshotStorage,
) -> cleanup.DeleteReport:
    """finish_pending_deletes' work, under this run's id."""
    if plan.dry_run:
        return cleanup.DeleteReport()
    backend = storage.open_backend()
    try:
        return cleanup.finish_pending(
            catalog,
            backend,
            run_id=context.run_id,
            lease=storage.lease(),
            batch_size=plan.batch_size,
        )
    finally:
        backend.close()


def _check_storage(catalog: Catalog, storage: SnapshotStorage, policy: Policy) -> None:
    backend = storage.open_backend()
    try:
        valves.check_storage_sees_candidates(catalog, backend, policy.cutoff)
    except valves.StorageMismatch as exc:
        raise Failure(description=str(exc)) from exc
    finally:
        backend.close()


LISTING_SCHEMA = TableSchema(
    columns=[
        TableColumn("fileId", "string"),
        TableColumn("storageKey", "string"),
        TableColumn("sizeBytes", "int", description="NULL when the row has no size"),
    ]
)


def _listing(catalog: Catalog, policy: Policy) -> TableMetadataValue:
    """A dry run's `wouldDelete`: the first DRY_RUN_LISTING candidates, as a table."""
    rows: list[TableRecord] = []
    for batch in catalog.iter_candidates(policy.cutoff, DRY_RUN_LISTING):
        rows = [
            TableRecord(
                {"fileId": c.file_id, "storageKey": c.storage_key, "sizeBytes": c.size_bytes}
            )
            for c in batch
        ]
        break
    return MetadataValue.table(rows, schema=LISTING_SCHEMA)


@dataclass(frozen=True)
class CleanReport:
    marked: cleanup.MarkReport
    deleted: cleanup.DeleteReport


@op
def finish_pending_deletes(
    context: OpExecutionContext,
    plan: CleanupPlan,
    database: SnapshotDatabase,
    storage: SnapshotStorage,
) -> cleanup.DeleteReport:
    """Delete the objects of rows an earlier run marked but could not delete (or crashed on).

    Their rows are already marked deleted; only the journal says their objects may remain.
    """
    if plan.dry_run:
        return cleanup.DeleteReport()
    with _catalog(database) as catalog:
        _join_run(context, catalog, plan)
        report = _finish_journal(context, plan, catalog, storage)
    context.log.info(
        f"finished {report.deleted_count} pending deletes left by earlier runs "
        f"({report.missing} already missing), {len(report.errors)} still failing, "
        f"{len(report.released)} rows released (live again: key refused or changed)"
    )
    context.add_output_metadata(
        {
            "deleted": report.deleted,
            "alreadyMissing": report.missing,
            "failed": len(report.errors),
            "bytesReclaimed": report.bytes_reclaimed,
            "keptSharedKey": len(report.kept_shared),
            "releasedRows": len(report.released),
        }
    )
    return report


@op
def mark_and_delete_expired(
    context: OpExecutionContext,
    plan: CleanupPlan,
    leftovers: cleanup.DeleteReport,
    database: SnapshotDatabase,
    storage: SnapshotStorage,
) -> CleanReport:
    """Verify no order links each candidate, mark it deleted, then delete its object.

    Batch by batch: lock the candidates, re-check OrderAttachments in a new statement,
    mark and journal the unlinked ones, commit; only then is the batch's objects' deletion
    started, in the background while the next batch is marked. In a dry run the same
    statements run and are rolled back, and nothing is deleted.
    """
    with _catalog(database) as catalog:
        if not plan.dry_run:
            _join_run(context, catalog, plan)
        earlier = cleanup.DeleteReport()
        if not _ran_in_this_run(context, "finish_pending_deletes"):
            # A re-execution from here: what the failed run left journaled is finished now.
            earlier = _finish_journal(context, plan, catalog, storage)
        backend = storage.open_backend()  # a dry run too: it asks which keys it would refuse
        try:
            marked, deleted = cleanup.mark_and_delete(
                catalog,
                backend,
                plan.policy,
                run_id=context.run_id,
                marked_at=plan.run_at,
                batch_size=plan.batch_size,
                lease=storage.lease(),
                dry_run=plan.dry_run,
            )
        finally:
            backend.close()
    deleted = earlier + deleted
    verb = "would mark" if plan.dry_run else "marked"
    context.log.info(
        f"{verb} {marked.marked} rows deleted; {len(marked.attached_meanwhile)} were linked "
        f"to an order during the run and kept; {len(marked.errors)} refused keys left live; "
        f"deleted {deleted.deleted} objects, {deleted.missing} already missing, "
        f"{len(deleted.errors)} failed and stay pending; {deleted.bytes_reclaimed} bytes"
    )
    context.add_output_metadata(
        {
            "marked": marked.marked,
            "attachedDuringRun": len(marked.attached_meanwhile),
            "refusedKeys": len(marked.errors),
            "deleted": deleted.deleted,
            "alreadyMissing": deleted.missing,
            "failed": len(deleted.errors),
            "bytesReclaimed": deleted.bytes_reclaimed,
            "keptSharedKey": len(deleted.kept_shared),
            "releasedRows": len(deleted.released),
        }
    )
    return CleanReport(marked, deleted)


@op
def record_cleanup_run(
    context: OpExecutionContext,
    plan: CleanupPlan,
    leftovers: cleanup.DeleteReport,
    cleaned: CleanReport,
    database: SnapshotDatabase,
    storage: SnapshotStorage,
) -> dict:
    """Close this run's log row with its status and errors; fail on errors.

    Its deleted, missing and bytes counters were added batch by batch as the run settled
    journal entries (Catalog.settle_pending); they are read back here, not rewritten, so
    they are this run's own even in a re-execution whose inputs come from its parent.
    """
    checkpoints.reached("before_record")
    marked = cleaned.marked
    deleted = leftovers + cleaned.deleted
    with _catalog(database) as catalog:
        if not plan.dry_run:
            _join_run(context, catalog, plan)
        if not _ran_in_this_run(context, "mark_and_delete_expired"):
            # A re-execution from here: finish whatever is journaled before closing.
            deleted = deleted + _finish_journal(context, plan, catalog, storage)
        errors = marked.errors + deleted.errors
        status = FAILED if errors else SUCCEEDED
        counts = catalog.finish_run(
            context.run_id,
            status=status,
            errors=errors,
            **({"marked_count": marked.marked} if plan.dry_run else {}),
        )
    summary = {
        "runAt": plan.run_at.isoformat(),
        "deletedCount": counts["deleted_count"],
        "errors": errors,
        "bytesReclaimed": counts["bytes_reclaimed"],
        "alreadyMissing": counts["missing_count"],
        "dryRun": plan.dry_run,
        "wouldDelete": marked.marked if plan.dry_run else 0,
    }
    context.log.info(f"cleanup summary: {summary}")
    metadata = {
        "runAt": plan.run_at.isoformat(),
        "deletedCount": counts["deleted_count"],
        "errorCount": len(errors),
        "errors": MetadataValue.json(errors[:50]),
        "bytesReclaimed": counts["bytes_reclaimed"],
    }
    if errors:
        if not plan.dry_run:
            # refresh_storage_assets will not run after this failure, but what the run did
            # reclaim is real and counts; a database error here must not hide the run's errors.
            try:
                # Events logged by a failing step are dropped, so report them to the instance.
                _publish(context, database, plan, context.instance.report_runless_asset_event)
            except SQLAlchemyError as exc:
                context.log.warning(f"storage assets not refreshed: {exc}")
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


def _publish(
    context: OpExecutionContext, database: SnapshotDatabase, plan: CleanupPlan, emit: Emit
) -> None:
    with _catalog(database) as catalog:
        summary = publish_cleanup_run(
            emit,
            catalog,
            run_id=context.run_id,
            reference_time=plan.policy.reference_time,
            timezone=schedule_timezone(),
        )
    context.log.info(summary)


@op
def refresh_storage_assets(
    context: OpExecutionContext, plan: CleanupPlan, summary: dict, database: SnapshotDatabase
) -> None:
    """Materialize the run log, the day's storage reclaimed and the 30-day savings view.

    Runs after the run is recorded, so the figures include it; a dry run materializes nothing.
    """
    if plan.dry_run:
        context.log.info("dry run: storage assets left as they are")
        return
    _publish(context, database, plan, context.log_event)


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
        catalog.release_leases(context.run_id)  # any other run may finish them at once
    finally:
        catalog.engine.dispose()


@job(
    executor_def=job_executor(),  # SNAPSHOT_OPS_EXECUTOR; default in_process (a step costs ms)
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
    leftovers = finish_pending_deletes(plan)
    cleaned = mark_and_delete_expired(plan, leftovers)
    summary = record_cleanup_run(plan, leftovers, cleaned)
    refresh_storage_assets(plan, summary)
