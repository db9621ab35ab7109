"""The cleanup job: five ops; the marking one runs as one step per key range.

identify_expired_candidates -> finish_pending_deletes -> mark_and_delete_expired[range_N]
-> record_cleanup_run -> refresh_storage_assets, with identify_expired_candidates also
splitting the candidates into key ranges, each handed to its own mark_and_delete_expired step.

The order matters: a row is marked deleted (after its linkage is re-checked under a lock)
and committed *before* its object is deleted, never the reverse; see catalog.mark_batch.
Checking the linkage and marking cannot be separate steps: they must share one
transaction, or an order could attach the file in between.
The ops are thin: the decisions live in rules.py, db/ and cleanup.py.

Ranges: the candidates are split into contiguous ranges of the marking walk's keyset order
("createdAt", "fileId") by `identify_expired_candidates` (read-only, from the count it has
just made), and each range is a Dagster dynamic output mapped to its own
`mark_and_delete_expired[range_N]` step, so the multiprocess, Celery or Kubernetes
executors can run them at once; `record_cleanup_run` collects them. Each range runs the
whole lock/re-check/mark protocol within its bounds (the first range is unbounded below,
the last above, so together they cover every key), gets a share of max_deletions (the
shares add up to it) and a share of the storage's max_deletes_per_second. The number of
ranges is SNAPSHOT_OPS_RANGES or the run config's `ranges` (default 1: one step, no
boundary query). The journal sweep of earlier runs' leftovers (`finish_pending_deletes`)
runs once per run, before any range marks.

Why five steps and not more: every step costs a run a fixed share of Dagster's own work
(about ten events written to the instance's event log: start, inputs, outputs, success,
the failure hook's verdict), which on a day with nothing to delete is most of the run's
time. So a decision that needs nothing a step of its own gives (a retry point, its own
process) is part of the step that has its inputs: splitting into ranges is part of
identifying the candidates (it only reads the count and, for more than one range, a few
keys). The steps that remain are the protocol's: identify (read-only), finish the journal
(deletes objects of rows already marked), mark and delete per range, record the run (its
own retry point: it must close the log row even after a range failed), and the assets.

Re-execution: Dagster may run any suffix of these steps again under a new run id (the UI's
"Re-execute from failure" or a selected step, and the automatic retry of a run whose worker
died). Every step that writes works under its own `context.run_id`, never the plan's (the
plan is the parent run's output), opens that run's log row if the first step did not run,
and closes the rows of runs Dagster reports ended (as `crashed`, releasing their journal
leases). A step whose predecessor did not run in this run finishes the journal itself, so
a re-execution from a `mark_and_delete_expired[range_N]` step or from
`record_cleanup_run` still deletes what a killed run left journaled (a re-executed range
also finishes the other ranges' journaled work; leases keep two steps off one entry).
Dagster does not re-run a range step the killed run never started; `record_cleanup_run`
cleans every range of the plan's `key_ranges` that has no report.

Logs: the run writes one INFO line, `record_cleanup_run`'s "cleanup summary"; warnings
stay warnings. Each step's figures are its output metadata, and its one-line account of
them is logged at DEBUG, which the shipped dagster.yaml (python_log_level: INFO) keeps out
of the event log: each line written there is one more insert on a run's critical path.
"""

import dataclasses
import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from dagster import (
    Config,
    DynamicOut,
    DynamicOutput,
    Failure,
    HookContext,
    In,
    MetadataValue,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    TableColumn,
    TableMetadataValue,
    TableRecord,
    TableSchema,
    failure_hook,
    job,
    op,
)
from pydantic import Field
from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

from snapshot_ops import checkpoints, cleanup, preflight
from snapshot_ops.db import CRASHED, FAILED, SUCCEEDED, Catalog
from snapshot_ops.db.engine import PG_INSUFFICIENT_PRIVILEGE
from snapshot_ops.defs.assets import Emit, publish_cleanup_run
from snapshot_ops.defs.executors import job_executor
from snapshot_ops.defs.resources import SnapshotDatabase, SnapshotStorage
from snapshot_ops.errors import SnapshotOpsError
from snapshot_ops.planning import CleanupPlan, KeyRange, split_key_ranges
from snapshot_ops.rules import DEFAULT_RETENTION_DAYS, Policy, check_clocks
from snapshot_ops.sentinel import Sentinel
from snapshot_ops.settings import schedule_timezone
from snapshot_ops.storage import StorageBackend

#: Runs carrying this tag are limited to one at a time by the run coordinator.
CONCURRENCY_TAG = "snapshot_ops/cleanup"
#: How many candidate rows a dry run lists in its metadata.
DRY_RUN_LISTING = 50


class CleanupConfig(Config):
    """Run config of a cleanup run (on the first op, carried by the plan to the others)."""

    dry_run: bool = Field(
        default=False,
        description=(
            "Preview the run and change nothing: every check runs, and the run fails, its "
            "message starting 'dry run:', where the real run would stop or fail; the first "
            "step lists the rows the run would take (wouldDelete) and the keys it would "
            "refuse (wouldRefuse)."
        ),
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
            "anything (unless work_down_backlog). Raise it deliberately for a first run on a "
            "large backlog, or work the backlog down."
        ),
    )
    work_down_backlog: bool = Field(
        default=False,
        description=(
            "More rows expired than max_deletions: delete the max_deletions oldest and leave "
            "the rest to later runs, instead of stopping. Only when retention_days is no "
            "shorter than the latest succeeded run's (before any, than the default 7): a "
            "shortened retention with a backlog over the cap stops as before."
        ),
    )
    batch_size: int = Field(
        default=1000, description="Rows locked, marked and deleted per transaction."
    )
    verify_storage: bool = Field(
        default=True,
        description=(
            "No longer turns anything off: false is refused (see accept_missing_objects). "
            "Every run checks that the storage holds objects the database says it should."
        ),
    )
    accept_missing_objects: bool = Field(
        default=False,
        description=(
            "For one run launched by hand: the store does not show the objects the database "
            "names because they really were removed. The run then marks the candidates and "
            "settles the journal, reporting those objects as already missing, instead of "
            "stopping. Only used when the storage check's evidence does not hold."
        ),
    )
    ranges: int | None = Field(
        default=None,
        description=(
            "Key ranges the candidates are split into, each marked and deleted by its own "
            "step (1 to 64); unset: the deployment's SNAPSHOT_OPS_RANGES, else 1."
        ),
    )


@contextmanager
def _catalog(database: SnapshotDatabase) -> Iterator[Catalog]:
    """The execution's catalog (the resource keeps it), with the job's failures explained."""
    try:
        catalog = database.catalog()
    except SnapshotOpsError as exc:
        raise Failure(description=str(exc)) from exc
    try:
        yield catalog
    except SnapshotOpsError as exc:  # e.g. a "createdAt" whose format cannot be read for sure
        raise Failure(description=str(exc)) from exc
    except ProgrammingError as exc:
        if getattr(exc.orig, "pgcode", None) != PG_INSUFFICIENT_PRIVILEGE:
            raise
        # Row-level security refuses a query with the same SQLSTATE as a missing grant
        # (the job runs with row_security off: see db.engine.make_engine); the fixes differ.
        try:
            row_security = catalog.row_security_refusal()
        except SQLAlchemyError:
            row_security = None
        if row_security is not None:
            raise Failure(description=f"{row_security}. The database said: {exc.orig}") from exc
        raise Failure(
            description=(
                f"the database role lacks a privilege the job needs: {exc.orig}. It needs "
                'SELECT on "OrderAttachments" and "SnapshotFiles", UPDATE ("deletedAt") on '
                '"SnapshotFiles", and its own schema (see docs/safety.md, "Least privilege")'
            )
        ) from exc


@op(out={"plan": Out(CleanupPlan), "ranges": DynamicOut(KeyRange)})
def identify_expired_candidates(
    context: OpExecutionContext,
    config: CleanupConfig,
    database: SnapshotDatabase,
    storage: SnapshotStorage,
) -> Iterator[Output[CleanupPlan] | DynamicOutput[KeyRange]]:
    """Validate the config, check database and storage, count the expired candidates and
    split them into key ranges.

    Everything here is read-only against the application: a bad config, a missing table or
    column, an unreachable store, a store that does not show it holds the objects the
    database names (preflight.check_storage_holds_objects; the object its evidence rests on
    is the plan's sentinel) or a count over the cap fails the run before anything is
    touched. A dry run runs the same checks and fails at the same points, its message
    starting with DRY_RUN_STOP; going on, it lists the rows the real run would take
    (`_listing`). Yields the plan (`plan`, with the figures as its metadata), then each key
    range (`ranges`, a dynamic output: one mark_and_delete_expired step per range).
    """
    run_at = dt.datetime.now(dt.UTC)
    try:
        policy, ranges = preflight.check_run_settings(
            batch_size=config.batch_size,
            reference_time=config.reference_time,
            retention_days=config.retention_days,
            max_deletions=config.max_deletions,
            ranges=config.ranges,
            max_deletes_per_second=storage.max_deletes_per_second,
            now=run_at,
            verify_storage=config.verify_storage,
        )
        storage.backend()  # fail now if the storage root is wrong
    except SnapshotOpsError as exc:
        raise Failure(description=f"bad configuration: {exc}") from exc

    with _catalog(database) as catalog:
        try:
            check_clocks(run_at, catalog.database_now())
        except SnapshotOpsError as exc:
            raise Failure(description=f"clock check: {exc}") from exc
        tables = preflight.prepare_tables(catalog, storage.backend())
        if tables.missing_indexes:
            context.log.warning(
                "the application database lacks indexes that keep the cleanup's queries "
                "cheap on large tables; ask its owner to run:\n" + "\n".join(tables.missing_indexes)
            )
        close_crashed_runs(context, catalog)
        summary, undated = preflight.count_candidates(catalog, policy)
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
            **preflight.run_figures(
                run_at=run_at,
                policy=policy,
                summary=summary,
                undated=undated,
                created_format=tables.created_format,
                dry_run=config.dry_run,
            ),
            "missingIndexes": MetadataValue.md("\n".join(tables.missing_indexes) or "none"),
            "storageKeyMatching": storage.backend().key_matching.name,
        }
        # A dry run checks the store as the real run does, and stops where it would stop.
        store = _check_storage(
            catalog, storage, policy, config.accept_missing_objects, dry_run=config.dry_run
        )
        metadata["storageLookups"] = store.lookups
        metadata["storageEvidence"] = store.basis
        metadata["acceptedMissingObjects"] = store.accepted_missing
        context.log.debug(
            f"{summary.candidates} expired parse-session snapshots (cutoff "
            f"{policy.cutoff.isoformat()}), {summary.kept_linked} expired but kept: "
            "linked to an order"
        )
        guard = preflight.backlog_guard(catalog, policy) if config.work_down_backlog else None
        refusal = preflight.over_cap(
            summary, policy, work_down_backlog=config.work_down_backlog, guard=guard
        )
        if refusal is not None:
            if config.dry_run:
                refusal = f"{DRY_RUN_STOP}{refusal}"
                metadata["realRunWouldStop"] = refusal
            catalog.finish_run(context.run_id, status=FAILED, errors=[refusal])
            raise Failure(description=refusal, metadata=metadata)
        backlog = None
        if config.work_down_backlog and guard is None:
            backlog = preflight.plan_backlog(catalog, summary, policy)
        if backlog is not None:
            context.log.warning(backlog.describe())
            metadata["backlogLeft"] = backlog.left
        if config.dry_run:
            listing, refused = _listing(catalog, storage.backend(), policy, backlog)
            metadata["wouldDelete"] = listing
            metadata["wouldRefuse"] = refused
        key_ranges = split_key_ranges(
            catalog,
            summary.candidates if backlog is None else backlog.taken,
            policy,
            ranges,
            upper=None if backlog is None else backlog.upper,
        )
    metadata["keyRanges"] = MetadataValue.md("\n".join(f"- {r.describe()}" for r in key_ranges))
    checkpoints.reached("after_select")
    plan = CleanupPlan(
        run_id=context.run_id,
        run_at=run_at,
        policy=policy,
        dry_run=config.dry_run,
        batch_size=config.batch_size,
        summary=summary,
        key_ranges=tuple(key_ranges),
        sentinel=store.sentinel,
        accept_missing=store.accepted_missing,
        backlog_left=None if backlog is None else backlog.left,
    )
    yield Output(plan, "plan", metadata=metadata)
    for key_range in key_ranges:
        yield DynamicOutput(key_range, mapping_key=key_range.name, output_name="ranges")


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
    try:
        catalog.start_run(
            run_id=context.run_id,
            run_at=plan.run_at,
            reference_time=plan.policy.reference_time,
            cutoff=plan.policy.cutoff,
            dry_run=plan.dry_run,
            candidate_count=plan.summary.candidates,
        )
    except IntegrityError:
        # Another range step of this re-execution opened the row at the same instant.
        pass


def _ran_in_this_run(context: OpExecutionContext, step: str) -> bool:
    """Whether op `step` (any of its mapped steps `step[...]`) is part of this run (False
    when a re-execution starts after it)."""
    keys = context.dagster_run.step_keys_to_execute
    return keys is None or any(k == step or k.startswith(f"{step}[") for k in keys)


def _finish_journal(
    context: OpExecutionContext,
    plan: CleanupPlan,
    catalog: Catalog,
    storage: SnapshotStorage,
    backend: StorageBackend,
) -> cleanup.DeleteReport:
    """finish_pending_deletes' work, under this run's id."""
    if plan.dry_run:
        return cleanup.DeleteReport()
    return cleanup.finish_pending(
        catalog,
        backend,
        run_id=context.run_id,
        lease=storage.lease(),
        batch_size=plan.batch_size,
        progress=lambda p: context.log.info(f"journal: {p.describe()}"),
        sentinel=_sentinel(plan, catalog, backend),
    )


def _sentinel(plan: CleanupPlan, catalog: Catalog, backend: StorageBackend) -> Sentinel:
    """This step's sentinel: the object the first step found (a plan pickled before plans
    carried one reads the field's default, None: the sentinel then gathers the evidence
    again, over the run's window, instead)."""
    return Sentinel(
        catalog,
        backend,
        plan.sentinel,
        window=preflight.Window.of(plan.policy),
        accept_missing=plan.accept_missing,
    )


#: How a dry run's failure starts when the real run would stop at the same point.
DRY_RUN_STOP = "dry run: a real run would stop here, touching nothing: "


def _check_storage(
    catalog: Catalog,
    storage: SnapshotStorage,
    policy: Policy,
    accept_missing: bool,
    *,
    dry_run: bool,
) -> preflight.StoreCheck:
    try:
        return preflight.check_storage_holds_objects(
            catalog,
            storage.backend(),
            preflight.Window.of(policy),
            accept_missing=accept_missing,
        )
    except preflight.StorageMismatch as exc:
        raise Failure(description=f"{DRY_RUN_STOP if dry_run else ''}{exc}") from exc


LISTING_SCHEMA = TableSchema(
    columns=[
        TableColumn("fileId", "string"),
        TableColumn("storageKey", "string"),
        TableColumn("sizeBytes", "int", description="NULL when the row has no size"),
    ]
)
REFUSED_SCHEMA = TableSchema(
    columns=[
        TableColumn("fileId", "string"),
        TableColumn("storageKey", "string"),
        TableColumn("reason", "string", description="why the store refuses the key"),
    ]
)


def _listing(
    catalog: Catalog,
    backend: StorageBackend,
    policy: Policy,
    backlog: preflight.Backlog | None,
) -> tuple[TableMetadataValue, TableMetadataValue]:
    """A dry run's `wouldDelete`: the first DRY_RUN_LISTING rows the real run would mark,
    in its order (the marking walk's: candidates up to the backlog's bound, keys the store
    refuses left out, as `Catalog.read_batch` leaves them out), and `wouldRefuse`: the
    first DRY_RUN_LISTING refused rows met on the way, with the reason the real run reports
    (it leaves them live and fails naming them)."""
    rows: list[TableRecord] = []
    refused: list[TableRecord] = []
    cursor = None
    taken = None if backlog is None else backlog.taken
    while len(rows) < DRY_RUN_LISTING and taken != 0:
        batch = catalog.read_batch(
            cutoff=policy.cutoff,
            cursor=cursor,
            limit=DRY_RUN_LISTING,
            refusals=backend.refusals,
            upper=None if backlog is None else backlog.upper,
        )
        rows += [
            TableRecord(
                {"fileId": str(c.file_id), "storageKey": c.storage_key, "sizeBytes": c.size_bytes}
            )
            for c in batch.passed.values()
        ]
        refused += [
            TableRecord({"fileId": str(c.file_id), "storageKey": c.storage_key, "reason": why})
            for c, why in batch.refused
        ]
        if batch.cursor is None:
            break
        cursor = batch.cursor
    return (
        MetadataValue.table(rows[:DRY_RUN_LISTING], schema=LISTING_SCHEMA),
        MetadataValue.table(refused[:DRY_RUN_LISTING], schema=REFUSED_SCHEMA),
    )


@dataclass(frozen=True)
class CleanReport:
    mark_report: cleanup.MarkReport
    delete_report: cleanup.DeleteReport
    range_index: int = 0  # the KeyRange it reports on


def _combined(reports: Sequence[CleanReport]) -> CleanReport:
    """The ranges' reports as one: counts added, lists joined in range order."""
    marks = [r.mark_report for r in reports]
    deleted = cleanup.DeleteReport()
    for report in reports:
        deleted += report.delete_report
    return CleanReport(
        cleanup.MarkReport(
            marked_count=sum(m.marked_count for m in marks),
            bytes_marked=sum(m.bytes_marked for m in marks),
            attached_meanwhile=[i for m in marks for i in m.attached_meanwhile],
            errors=[e for m in marks for e in m.errors],
        ),
        deleted,
    )


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
    with _catalog(database) as catalog, storage.deleting_backend() as backend:
        _join_run(context, catalog, plan)
        report = _finish_journal(context, plan, catalog, storage, backend)
        requests = backend.delete_requests
    context.log.debug(
        f"finished {report.removed + report.missing} pending deletes left by earlier runs "
        f"({report.missing} already missing), {len(report.errors)} still failing, "
        f"{len(report.released)} rows released (live again: key refused or changed)"
    )
    context.add_output_metadata(
        {
            "deleted": report.removed,
            "alreadyMissing": report.missing,
            "failed": len(report.errors),
            "bytesReclaimed": report.bytes_reclaimed,
            "keptSharedKey": len(report.kept_shared),
            "releasedRows": len(report.released),
            "backingOff": len(report.waiting),
            "deleteRequests": requests,
        }
    )
    return report


@op(ins={"journal_finished": In(Nothing)})
def mark_and_delete_expired(
    context: OpExecutionContext,
    plan: CleanupPlan,
    key_range: KeyRange,
    database: SnapshotDatabase,
    storage: SnapshotStorage,
) -> CleanReport:
    """Verify no order links each candidate of the range, mark it deleted, then delete its
    object.

    Batch by batch: lock the candidates, re-check OrderAttachments in a new statement,
    mark and journal the unlinked ones, commit; only then is the batch's objects' deletion
    started, in the background while the next batch is marked. Only the range's keys are
    read, and at most its share of max_deletions is marked; deletes go at most at its share
    of max_deletes_per_second. Starts after finish_pending_deletes (`journal_finished`).
    In a dry run the same statements run and are rolled back, and nothing is deleted.
    """
    with _catalog(database) as catalog:
        if not plan.dry_run:
            _join_run(context, catalog, plan)
        report = _clean_range(
            context,
            plan,
            key_range,
            catalog,
            storage,
            finish_journal=not _ran_in_this_run(context, "finish_pending_deletes"),
        )
    marked, deleted = report.mark_report, report.delete_report
    context.add_output_metadata(
        {
            "range": key_range.describe(),
            "marked": marked.marked_count,
            "attachedDuringRun": len(marked.attached_meanwhile),
            "refusedKeys": len(marked.errors),
            "deleted": deleted.removed,
            "alreadyMissing": deleted.missing,
            "failed": len(deleted.errors),
            "bytesReclaimed": deleted.bytes_reclaimed,
            "keptSharedKey": len(deleted.kept_shared),
            "releasedRows": len(deleted.released),
            # The range's backend is the execution's (storage.backend()), rate limit aside.
            "deleteRequests": storage.backend().delete_requests,
        }
    )
    return report


def _clean_range(
    context: OpExecutionContext,
    plan: CleanupPlan,
    key_range: KeyRange,
    catalog: Catalog,
    storage: SnapshotStorage,
    *,
    finish_journal: bool,
) -> CleanReport:
    """Mark and delete one range's candidates (after finishing the journal if asked: a
    re-execution from a range step), at the range's shares of the run's caps."""
    policy = dataclasses.replace(plan.policy, max_deletions=key_range.max_deletions)
    # A dry run opens the backend too: it asks which keys the store would refuse.
    with storage.deleting_backend(key_range.ranges) as backend:
        earlier = cleanup.DeleteReport()
        if finish_journal:
            # A re-execution from here: what the failed run left journaled is finished now.
            earlier = _finish_journal(context, plan, catalog, storage, backend)
        marked, deleted = cleanup.mark_and_delete(
            catalog,
            backend,
            policy,
            run_id=context.run_id,
            marked_at=plan.run_at,
            batch_size=plan.batch_size,
            lease=storage.lease(),
            dry_run=plan.dry_run,
            after=key_range.after,
            upper=key_range.upper,
            progress=lambda p: context.log.info(f"progress: {p.describe()}"),
            # ranges split the candidates at every k-th key, k = ceil(candidates / ranges)
            candidates=-(-plan.taken // key_range.ranges),
            sentinel=_sentinel(plan, catalog, backend),
        )
    deleted = earlier + deleted
    verb = "would mark" if plan.dry_run else "marked"
    context.log.debug(
        f"{key_range.describe()}: "
        f"{verb} {marked.marked_count} rows deleted; {len(marked.attached_meanwhile)} were linked "
        f"to an order during the run and kept; {len(marked.errors)} refused keys left live; "
        f"deleted {deleted.removed} objects, {deleted.missing} already missing, "
        f"{len(deleted.errors)} failed and stay pending; {deleted.bytes_reclaimed} bytes"
    )
    return CleanReport(marked, deleted, key_range.index)


@op
def record_cleanup_run(
    context: OpExecutionContext,
    plan: CleanupPlan,
    leftovers: cleanup.DeleteReport,
    cleaned: list[CleanReport],
    database: SnapshotDatabase,
    storage: SnapshotStorage,
) -> dict:
    """Close this run's log row with its status and errors; fail on errors.

    A range of the plan's `key_ranges` without a report in `cleaned` is cleaned here first.
    That happens only in a re-execution from failure: Dagster re-runs the range steps that
    failed or were cut short, but not those of a run killed before it started them (a
    known limitation of its dynamic re-execution, dagster-io/dagster#30077), and their
    candidates must not wait for the next run.

    Its deleted, missing and bytes counters were added batch by batch as the run settled
    journal entries (Catalog.settle_pending); they are read back here, not rewritten, so
    they are this run's own even in a re-execution whose inputs come from its parent.
    """
    checkpoints.reached("before_record")
    reported = {report.range_index for report in cleaned}
    with _catalog(database) as catalog:
        if not plan.dry_run:
            _join_run(context, catalog, plan)
        if not _ran_in_this_run(context, "mark_and_delete_expired"):
            # A re-execution from here: finish whatever is journaled before closing.
            with storage.deleting_backend() as backend:
                leftovers = leftovers + _finish_journal(context, plan, catalog, storage, backend)
        for key_range in plan.key_ranges:
            if key_range.index not in reported:
                context.log.warning(f"{key_range.describe()} has no report: cleaned here")
                cleaned = [
                    *cleaned,
                    _clean_range(context, plan, key_range, catalog, storage, finish_journal=False),
                ]
        ranges = _combined(cleaned)
        marked = ranges.mark_report
        deleted = leftovers + ranges.delete_report
        # Only this run's own failures fail it; known failures waiting out their backoff
        # (not sent to the store by this run) are a warning and the asset check
        # no_pending_deletes_backing_off, so they do not turn every later run red.
        errors = marked.errors + deleted.errors
        waiting = deleted.waiting
        status = FAILED if errors else SUCCEEDED
        counts = catalog.finish_run(
            context.run_id,
            status=status,
            errors=errors,
            **({"marked_count": marked.marked_count} if plan.dry_run else {}),
        )
    if waiting:
        context.log.warning(cleanup.describe_waiting(waiting))
    oldest = cleanup.oldest_waiting(waiting)
    summary = {
        "runAt": plan.run_at.isoformat(),
        "deletedCount": counts["deleted_count"],
        "errors": errors,
        "bytesReclaimed": counts["bytes_reclaimed"],
        "alreadyMissing": counts["missing_count"],
        "backingOff": len(waiting),
        "backlogLeft": plan.backlog_left or 0,
        "dryRun": plan.dry_run,
        "wouldDelete": marked.marked_count if plan.dry_run else 0,
    }
    context.log.info(f"cleanup summary: {summary}")
    metadata = {
        "runAt": plan.run_at.isoformat(),
        "deletedCount": counts["deleted_count"],
        "alreadyMissing": counts["missing_count"],
        "errorCount": len(errors),
        "errors": MetadataValue.json(errors[:50]),
        "bytesReclaimed": counts["bytes_reclaimed"],
        # Expired rows the cap left to later runs (work_down_backlog), counted at the start.
        "backlogLeft": plan.backlog_left or 0,
        # Known failures, not this run's: how many, and the one waiting longest.
        "backingOff": len(waiting),
        "backingOffOldest": "" if oldest is None else cleanup.describe_backed_off(oldest),
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
        ended = (
            f"dry run: a real run would finish with {len(errors)} error(s) and fail"
            if plan.dry_run
            else f"cleanup finished its work with {len(errors)} error(s)"
        )
        raise Failure(
            description=(
                f"{ended}; rows and objects that failed are left for the next run: {shown}"
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
    context.log.debug(summary)


# No outputs (`out={}`, and so no return annotation, which Dagster would read as one): an
# op's None result is still an output, one more event in the run's log.
@op(ins={"recorded": In(Nothing)}, out={})
def refresh_storage_assets(
    context: OpExecutionContext, plan: CleanupPlan, database: SnapshotDatabase
):
    """Materialize the run log, the day's storage reclaimed and the 30-day savings view.

    Runs after the run is recorded (`recorded`), so the figures include it; a dry run
    materializes nothing. Not part of record_cleanup_run: the run's log row is closed
    before this runs, so a failure here (the savings table locked, the instance refusing
    an asset event) leaves the cleanup's own outcome as recorded, and this step alone can
    be re-executed.
    """
    if plan.dry_run:
        context.log.debug("dry run: storage assets left as they are")
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
    description=(
        "Deletes ParseSessionSnapshot files older than the retention that no order links, "
        "marking their rows deleted first. Never deletes an OrderAttachmentSnapshot or any "
        "file linked in OrderAttachments."
    ),
)
def snapshot_cleanup_job() -> None:
    # The failure hook goes on the steps that can leave the run's log row open or hold
    # journal leases: all but refresh_storage_assets, which runs after the row is closed
    # and takes no lease. A hook writes an event (HOOK_SKIPPED) after every step it is on.
    closes_row = {mark_run_failed}
    plan, ranges = identify_expired_candidates.with_hooks(closes_row)()
    leftovers = finish_pending_deletes.with_hooks(closes_row)(plan)
    cleaned = ranges.map(
        lambda key_range: mark_and_delete_expired.with_hooks(closes_row)(
            plan, key_range, journal_finished=leftovers
        )
    )
    summary = record_cleanup_run.with_hooks(closes_row)(plan, leftovers, cleaned.collect())
    refresh_storage_assets(plan, recorded=summary)
