"""The cleanup's assets: what it reads, its run log, storage reclaimed per day, 30-day savings.

The lineage reads SnapshotFiles (+ OrderAttachments) -> snapshot_cleanup_runs ->
snapshot_storage_reclaimed -> snapshot_storage_savings_30d:

- `SnapshotFiles`, `OrderAttachments`: the application's tables, external (Dagster never
  materializes them).
- `snapshot_cleanup_runs`: the job's run log. Only `snapshot_cleanup_job` writes it (deleting
  files as it goes), so it is external here too: nothing on the asset side can delete a file.
- `snapshot_storage_reclaimed`: bytes and files reclaimed per day, partitioned by day in the
  schedule's timezone. Every real run of the job materializes its day's partition; a backfill
  (single run over a range of days) rebuilds each day from the run log and deletes nothing.
- `snapshot_storage_savings_30d`: the last 30 days per day, their total and the change against
  the 30 days before, computed with pandas and kept as a table for BI tools.

The job's last op calls `publish_cleanup_run`, so a run alone leaves every asset and check up
to date with no daemon or sensor. The figures themselves are computed in savings.py.
"""

import datetime as dt
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    BetaWarning,
    Config,
    DailyPartitionsDefinition,
    Failure,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
    asset_check,
)
from pydantic import Field

from snapshot_ops import cleanup, savings
from snapshot_ops.db import Catalog
from snapshot_ops.defs.alerts import FRESHNESS_LIMIT
from snapshot_ops.defs.resources import SnapshotDatabase
from snapshot_ops.errors import SnapshotOpsError
from snapshot_ops.settings import FIRST_REPORTED_DAY

GROUP = "snapshot_cleanup"
DAY = dt.timedelta(days=1)
#: Who answers for each asset (shown in the UI and its filters): the application team owns
#: its tables; the team running this job owns the cleanup and its figures.
APPLICATION_OWNERS = ["team:email-parser"]
CLEANUP_OWNERS = ["team:snapshot-ops"]
#: Dagster's metadata key for an asset's columns (shown on the asset's page).
COLUMN_SCHEMA = "dagster/column_schema"


def _columns(*columns: TableColumn) -> dict[str, TableSchema]:
    return {COLUMN_SCHEMA: TableSchema(columns=list(columns))}


SNAPSHOT_FILES = AssetSpec(
    "SnapshotFiles",
    group_name="application",
    kinds={"sql"},
    owners=APPLICATION_OWNERS,
    description=(
        "The Email Parser's snapshot files (application table, written by the application). "
        "The cleanup job sets deletedAt on expired ParseSessionSnapshot rows no order links."
    ),
    # The columns the job reads (the table may have more); catalog.SNAPSHOT_COLUMNS.
    metadata=_columns(
        TableColumn("fileId", "text", description="The file's id, as OrderAttachments links it"),
        TableColumn(
            "snapshotType",
            "text",
            description="Only 'ParseSessionSnapshot' rows expire; every other type is kept",
        ),
        TableColumn("storageKey", "text", description="The object's key under the storage URL"),
        TableColumn("sizeBytes", "bigint", description="Object size in bytes, may be NULL"),
        TableColumn(
            "createdAt",
            "timestamp",
            description="Creation time: timestamp, ISO 8601 text or epoch number "
            "(SNAPSHOT_OPS_TIME_FORMAT); a row without one is never deleted",
        ),
        TableColumn(
            "deletedAt",
            "timestamp",
            description="Set by the cleanup when it marks the row deleted; the only column "
            "it writes",
        ),
    ),
)
ORDER_ATTACHMENTS = AssetSpec(
    "OrderAttachments",
    group_name="application",
    kinds={"sql"},
    owners=APPLICATION_OWNERS,
    description="Links files to orders (application table); a linked file is never deleted.",
    metadata=_columns(
        TableColumn("fileId", "text", description="A SnapshotFiles fileId an order needs"),
    ),
)
CLEANUP_RUNS = AssetSpec(
    "snapshot_cleanup_runs",
    deps=[SNAPSHOT_FILES, ORDER_ATTACHMENTS],
    group_name=GROUP,
    kinds={"sql"},
    owners=CLEANUP_OWNERS,
    description=(
        "The cleanup: snapshot_cleanup_job deletes expired parse-session snapshots and logs "
        "each run here (runAt, deletedCount, errors, bytes reclaimed). Materialized by the "
        "job's runs only; it is the one place files are deleted. Fresh while a run has "
        "logged within the last 36 hours (the job runs daily)."
    ),
    # The daemon evaluates it (PASS/FAIL on the asset's page); sensors.freshness_sensor
    # sends the alert. A run that finished with errors still logs, so it counts as fresh:
    # its failure is the failure sensor's alert.
    freshness_policy=FreshnessPolicy.time_window(fail_window=FRESHNESS_LIMIT),
    metadata=_columns(
        TableColumn("run_id", "text", description="The Dagster run id"),
        TableColumn("run_at", "timestamp", description="When the run started, UTC"),
        TableColumn(
            "reference_time", "timestamp", description="The instant the retention counts from"
        ),
        TableColumn("cutoff", "timestamp", description="Created before this: expired"),
        TableColumn("dry_run", "boolean"),
        TableColumn("status", "text", description="running, succeeded, failed or crashed"),
        TableColumn("candidate_count", "bigint"),
        TableColumn("marked_count", "bigint"),
        TableColumn(
            "deleted_count", "bigint", description="Objects the run removed (deletedCount)"
        ),
        TableColumn(
            "missing_count",
            "bigint",
            description="Objects already gone when settled (alreadyMissing), not in deleted_count",
        ),
        TableColumn("bytes_reclaimed", "bigint"),
        TableColumn("error_count", "bigint"),
        TableColumn("errors", "json", description="The run's error messages, a JSON list"),
        TableColumn("finished_at", "timestamp"),
    ),
)
RECLAIMED_KEY = AssetKey("snapshot_storage_reclaimed")
SAVINGS_KEY = AssetKey("snapshot_storage_savings_30d")
TOTAL_CHECK = "savings_total_matches_run_log"
OVERDUE_CHECK = "no_overdue_parse_session_snapshots"
BACKING_OFF_CHECK = "no_pending_deletes_backing_off"

_DAY_COLUMNS = (
    TableColumn("day", "date", description="Calendar day in the schedule's timezone"),
    TableColumn("bytes_reclaimed", "int"),
    TableColumn("files_reclaimed", "int", description="Objects the runs removed (deletedCount)"),
    TableColumn("runs", "int", description="Real runs that day (dry runs excluded)"),
    TableColumn("failed_runs", "int"),
    TableColumn("error_count", "int"),
)
#: The `days` table in the 30-day view's metadata: the view's rows, and bytes for people.
DAILY_SCHEMA = TableSchema(
    columns=[
        *_DAY_COLUMNS,
        TableColumn("reclaimed", "string", description="bytes_reclaimed in KiB/MiB/GiB"),
    ]
)
#: The columns of the table storage_savings_30d (savings.savings_table), which BI tools read.
SAVINGS_COLUMNS = _columns(
    *_DAY_COLUMNS,
    TableColumn("as_of", "date", description="The last day of the 30-day window"),
    TableColumn("timezone", "text", description="The schedule's IANA timezone"),
    TableColumn("refreshed_at", "timestamp", description="When the rows were written, UTC"),
)


def daily_partitions(timezone: str) -> DailyPartitionsDefinition:
    """One partition per calendar day in `timezone`, today's included (a run reports on it)."""
    return DailyPartitionsDefinition(
        start_date=FIRST_REPORTED_DAY.isoformat(), timezone=timezone, end_offset=1
    )


@contextmanager
def _catalog(database: SnapshotDatabase) -> Iterator[Catalog]:
    try:
        catalog = database.open_catalog()
        catalog.ensure_own_tables()  # a fresh install has no run log yet: read it as empty
    except SnapshotOpsError as exc:
        raise Failure(description=str(exc)) from exc
    try:
        yield catalog
    except SnapshotOpsError as exc:  # e.g. the backlog check: "createdAt" cannot be read
        raise Failure(description=str(exc)) from exc
    finally:
        catalog.engine.dispose()


# -- metadata ---------------------------------------------------------------------------------


def _or_null(make: Callable[[Any], MetadataValue], value: Any) -> MetadataValue:
    """`make(value)`, or MetadataValue.null() when `value` is None (Dagster keeps the key)."""
    return MetadataValue.null() if value is None else make(value)


def reclaimed_metadata(figures: savings.DayFigures) -> dict[str, Any]:
    """A day's metadata; the numbers are plotted over the partitions in the UI."""
    start, end = savings.day_bounds(figures.day, figures.day, figures.timezone)
    return {
        "bytesReclaimed": figures.bytes_reclaimed,
        "deletedCount": figures.deleted_count,
        "errors": figures.error_count,
        "runAt": _or_null(MetadataValue.timestamp, figures.last_run_at),
        "runs": figures.runs,
        "failedRuns": figures.failed_runs,
        "alreadyMissing": figures.missing_count,
        "dryRunsIgnored": figures.dry_runs_ignored,
        "reclaimed": savings.human_bytes(figures.bytes_reclaimed),
        "dayStartsAt": start.isoformat(),
        "dayEndsAt": end.isoformat(),
    }


def savings_metadata(view: savings.SavingsView, table_name: str) -> dict[str, Any]:
    """The view's metadata: totals (plotted), the chart, the per-day table (`days`, a
    MetadataValue.table with DAILY_SCHEMA), where it is kept."""
    return {
        "totalBytes30d": view.total_bytes,
        "totalFiles30d": view.total_files,
        "previousBytes30d": view.previous_bytes,
        "previousFiles30d": view.previous_files,
        "changeBytes": view.change_bytes,
        "changePercent": _or_null(MetadataValue.float, view.change_pct),
        "reclaimed30d": savings.human_bytes(view.total_bytes),
        "asOf": view.as_of.isoformat(),
        "firstDay": view.first_day.isoformat(),
        "timezone": view.timezone,
        "chart": MetadataValue.md(savings.markdown_view(view)),
        "days": MetadataValue.table(
            [
                TableRecord({**row, "reclaimed": savings.human_bytes(int(row["bytes_reclaimed"]))})
                for row in savings.daily_records(view)
            ],
            schema=DAILY_SCHEMA,
        ),
        "dagster/table_name": table_name,
        "dagster/row_count": len(view.daily),
    }


def refresh_savings(catalog: Catalog, as_of: dt.date, timezone: str) -> dict[str, Any]:
    """Recompute the 30-day view, rewrite its table, return its metadata."""
    view = savings.compute_savings(catalog, as_of, timezone)
    table_name = savings.write_savings(catalog, view)
    return savings_metadata(view, table_name)


# -- checks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    metadata: Mapping[str, Any]


def check_savings_total(catalog: Catalog) -> CheckOutcome:
    """The stored view ends on the latest logged day and its totals equal the run log's.

    Fails if the table was edited, if a run was logged after the view was refreshed, or if
    the view ends before the day of the latest logged run (it was computed for a past day).
    """
    stored = savings.read_savings(catalog)
    if stored.empty:
        return CheckOutcome(False, "the savings table has not been written yet", {})
    as_of = max(stored["as_of"])
    timezone = str(stored["timezone"].iloc[0])
    first = as_of - dt.timedelta(days=savings.WINDOW_DAYS - 1)
    log_bytes, log_files = savings.run_log_totals(catalog, first, as_of, timezone)
    view_bytes = int(stored["bytes_reclaimed"].sum())
    view_files = int(stored["files_reclaimed"].sum())
    latest = savings.latest_reference_time(catalog)
    latest_run_day = as_of if latest is None else savings.local_day(latest, timezone)
    ends_at_latest = as_of >= latest_run_day
    passed = ends_at_latest and (view_bytes, view_files, len(stored)) == (
        log_bytes,
        log_files,
        savings.WINDOW_DAYS,
    )
    description = (
        f"view {view_bytes} bytes / {view_files} files over {len(stored)} days; run log "
        f"{log_bytes} bytes / {log_files} files for {first}..{as_of}"
    )
    if not ends_at_latest:
        description += (
            f"; the view ends on {as_of} but a run is logged for {latest_run_day}: "
            "materialize snapshot_storage_savings_30d to move it to the latest day"
        )
    return CheckOutcome(
        passed,
        description,
        {
            "viewBytes": view_bytes,
            "runLogBytes": log_bytes,
            "viewFiles": view_files,
            "runLogFiles": log_files,
            "viewDays": len(stored),
            "asOf": as_of.isoformat(),
            "latestRunDay": latest_run_day.isoformat(),
        },
    )


def check_overdue(catalog: Catalog, now: dt.datetime) -> CheckOutcome:
    """No parse-session snapshot is still live and unlinked a day past its retention.

    Rows with a NULL "createdAt" are counted apart (`undated`) and fail the check too: the
    job keeps them, since it cannot tell their age, so only a person can clear them.
    """
    found = savings.backlog(catalog, now, savings.latest_retention(catalog))
    description = (
        f"{found.overdue} live, unlinked ParseSessionSnapshot rows created before "
        f"{found.threshold.isoformat()} (retention {found.retention / DAY:g} days + 1 day)"
    )
    if found.undated:
        description += (
            f"; {found.undated} more have no createdAt, so no run can tell their age and "
            'none deletes them: give them a "createdAt" (or remove them by hand)'
        )
    return CheckOutcome(
        found.overdue == 0 and found.undated == 0,
        description,
        {
            "overdue": found.overdue,
            "overdueBytes": found.overdue_bytes,
            "undated": found.undated,
            "createdBefore": found.threshold.isoformat(),
            "retentionDays": found.retention / DAY,
        },
    )


def check_backing_off(catalog: Catalog, now: dt.datetime) -> CheckOutcome:
    """No journal entry is waiting out a backoff after failed deletes.

    Such an entry is a row marked deleted whose object the store kept refusing: no run
    sends it to the store until its backoff ends (1 h after its second failure, doubling,
    at most 7 days), and runs in between do not fail on it (it was reported when it
    failed). This check keeps it in sight meanwhile: it fails while any is waiting, naming
    how many and the one whose row was marked first (`cleanup.oldest_waiting`).
    """
    waiting = catalog.backed_off(now)
    oldest = cleanup.oldest_waiting(waiting)
    if oldest is None:
        return CheckOutcome(True, "no failed delete is waiting out its backoff", {"backingOff": 0})
    return CheckOutcome(
        False,
        f"{len(waiting)} journal entries wait out their backoff after failed deletes (rows "
        "marked deleted, objects still in the store); the oldest: "
        f"{cleanup.describe_backed_off(oldest)}. `python -m snapshot_ops.journal list` shows "
        "them; see docs/operations.md, The journal of pending deletes",
        {
            "backingOff": len(waiting),
            "oldestFileId": oldest.file_id,
            "oldestMarkedAt": cleanup.utc(oldest.marked_at).isoformat(),
            "oldestAttempts": oldest.attempts,
            "oldestLastError": oldest.last_error or "",
        },
    )


def _result(outcome: CheckOutcome, severity: AssetCheckSeverity) -> AssetCheckResult:
    return AssetCheckResult(
        passed=outcome.passed,
        severity=severity,
        description=outcome.description,
        metadata=dict(outcome.metadata),
    )


# -- the job's side ---------------------------------------------------------------------------


#: Where `publish_cleanup_run` sends its events: the step's event stream
#: (`context.log_event`) or, from a step that is about to fail and so would drop its logged
#: events, the instance directly (`context.instance.report_runless_asset_event`).
Emit = Callable[[AssetMaterialization | AssetCheckEvaluation], Any]


def publish_cleanup_run(
    emit: Emit,
    catalog: Catalog,
    *,
    run_id: str,
    reference_time: dt.datetime,
    timezone: str,
    now: dt.datetime | None = None,
) -> str:
    """Materialize, for a cleanup run, the run log, its day's figures and the 30-day view.

    The day's figures are rebuilt from the whole run log of that day (exactly as a backfill
    does), so a second run on the same day, or a later backfill, gives the same numbers.
    The 30-day view is refreshed for the window ending on the latest day (today in
    `timezone` at `now`, default the wall clock), never on the run's own day: a run for a
    past day changes that day's row only. The checks are evaluated here too, so they are
    current after every run: the backlog check as of the latest logged run's reference
    time (this run's, unless a later run is logged). Returns a one-line summary.
    """
    now = dt.datetime.now(dt.UTC) if now is None else now
    day = savings.local_day(reference_time, timezone)
    as_of = savings.latest_day(catalog, timezone, now)
    latest = savings.latest_reference_time(catalog)
    judged_at = reference_time if latest is None else max(reference_time, latest)
    figures = savings.day_figures(catalog, day, timezone)
    emit(
        AssetMaterialization(
            asset_key=CLEANUP_RUNS.key,
            description="run logged by snapshot_cleanup_job",
            metadata={"runId": run_id, "day": day.isoformat(), "runsThatDay": figures.runs},
        )
    )
    if day >= FIRST_REPORTED_DAY:
        emit(
            AssetMaterialization(
                asset_key=RECLAIMED_KEY,
                partition=day.isoformat(),
                metadata=reclaimed_metadata(figures),
            )
        )
    emit(
        AssetMaterialization(
            asset_key=SAVINGS_KEY, metadata=refresh_savings(catalog, as_of, timezone)
        )
    )
    checks = (
        (SAVINGS_KEY, TOTAL_CHECK, check_savings_total(catalog), AssetCheckSeverity.ERROR),
        # As of the latest run's reference time: what the runs left behind, not the wall
        # clock (and not a past day a run was started for).
        (
            SNAPSHOT_FILES.key,
            OVERDUE_CHECK,
            check_overdue(catalog, judged_at),
            AssetCheckSeverity.WARN,
        ),
        # As of the wall clock: backoffs run on it.
        (
            CLEANUP_RUNS.key,
            BACKING_OFF_CHECK,
            check_backing_off(catalog, now),
            AssetCheckSeverity.WARN,
        ),
    )
    for key, name, outcome, severity in checks:
        emit(
            AssetCheckEvaluation(
                asset_key=key,
                check_name=name,
                passed=outcome.passed,
                severity=severity,
                description=outcome.description,
                metadata=dict(outcome.metadata),
            )
        )
    return (
        f"{day} ({timezone}): {figures.bytes_reclaimed} bytes, {figures.deleted_count} files "
        f"reclaimed over {figures.runs} run(s); 30-day view refreshed, ending {as_of}"
    )


# -- the asset definitions --------------------------------------------------------------------


def as_of_refusal(given: str, latest: dt.date) -> str:
    """Why a savings materialization with `as_of` other than the latest day is refused."""
    return (
        f"as_of {given!r} is not the latest day: the 30-day view (and the table dashboards "
        f"read) always ends on the latest day, {latest.isoformat()} in the schedule's "
        "timezone, so it never moves back. Leave as_of unset (or give "
        f"{latest.isoformat()}); a past day's own figures are the snapshot_storage_reclaimed "
        "partition of that day."
    )


class SavingsConfig(Config):
    """Run config of a materialization of the 30-day view."""

    as_of: str | None = Field(
        default=None,
        description="Leave unset: the window always ends on the latest day (today in the "
        "schedule's timezone). If given, it must be that day, YYYY-MM-DD.",
    )


def _reclaimed_asset(timezone: str) -> AssetsDefinition:
    @asset(
        key=RECLAIMED_KEY,
        deps=[CLEANUP_RUNS],
        partitions_def=daily_partitions(timezone),
        # A backfill of any range is one short run: each day is one small query.
        backfill_policy=BackfillPolicy.single_run(),
        output_required=False,
        group_name=GROUP,
        owners=CLEANUP_OWNERS,
        kinds={"pandas"},
        description=(
            "Storage reclaimed by the cleanup per day (bytesReclaimed, deletedCount, errors, "
            f"runAt), days in {timezone}. Materialized by every real cleanup run; a backfill "
            "rebuilds days from the run log and deletes nothing."
        ),
    )
    def snapshot_storage_reclaimed(
        context: AssetExecutionContext, database: SnapshotDatabase
    ) -> Iterator[AssetMaterialization]:
        """Rebuild each selected day's figures from the run log (read-only on the app)."""
        with _catalog(database) as catalog:
            for key in context.partition_keys:
                figures = savings.day_figures(catalog, dt.date.fromisoformat(key), timezone)
                # One event per day, so each partition carries its own numbers.
                yield AssetMaterialization(
                    asset_key=RECLAIMED_KEY, partition=key, metadata=reclaimed_metadata(figures)
                )

    return snapshot_storage_reclaimed


def build_storage_assets(
    timezone: str,
) -> tuple[list[AssetsDefinition], list[AssetChecksDefinition]]:
    """The two computed assets and their checks, with days counted in `timezone`."""

    with warnings.catch_warnings():
        # backfill_policy is marked beta; without this every CLI call prints the warning.
        warnings.simplefilter("ignore", BetaWarning)
        reclaimed = _reclaimed_asset(timezone)

    @asset(
        key=SAVINGS_KEY,
        deps=[reclaimed],
        group_name=GROUP,
        owners=CLEANUP_OWNERS,
        kinds={"pandas", "table"},
        metadata=SAVINGS_COLUMNS,
        description=(
            "Storage savings from snapshot cleanup over the last 30 days: bytes and files per "
            "day (zero on days without a run), the total and the change against the previous "
            "30 days. Also kept as the table storage_savings_30d in the job's schema."
        ),
    )
    def snapshot_storage_savings_30d(
        config: SavingsConfig, database: SnapshotDatabase
    ) -> MaterializeResult:
        """Recompute the 30-day view ending on the latest day and rewrite its table."""
        with _catalog(database) as catalog:
            as_of = savings.latest_day(catalog, timezone, dt.datetime.now(dt.UTC))
            if config.as_of and config.as_of != as_of.isoformat():
                raise Failure(description=as_of_refusal(config.as_of, as_of))
            return MaterializeResult(metadata=refresh_savings(catalog, as_of, timezone))

    @asset_check(
        asset=SAVINGS_KEY,
        name=TOTAL_CHECK,
        description="The view's 30-day totals equal the sum of the run log over the same days.",
    )
    def savings_total_matches_run_log(database: SnapshotDatabase) -> AssetCheckResult:
        with _catalog(database) as catalog:
            return _result(check_savings_total(catalog), AssetCheckSeverity.ERROR)

    @asset_check(
        asset=SNAPSHOT_FILES.key,
        name=OVERDUE_CHECK,
        description=(
            "No ParseSessionSnapshot older than the retention + 1 day is still live and not "
            "linked to an order; if there is, the cleanup is falling behind."
        ),
    )
    def no_overdue_parse_session_snapshots(database: SnapshotDatabase) -> AssetCheckResult:
        with _catalog(database) as catalog:
            outcome = check_overdue(catalog, dt.datetime.now(dt.UTC))
        return _result(outcome, AssetCheckSeverity.WARN)

    @asset_check(
        asset=CLEANUP_RUNS.key,
        name=BACKING_OFF_CHECK,
        description=(
            "No row the cleanup marked deleted is waiting out a backoff because the store kept "
            "failing its object's delete; if one is, its object is still in the store and no "
            "run retries it before the backoff ends."
        ),
    )
    def no_pending_deletes_backing_off(database: SnapshotDatabase) -> AssetCheckResult:
        with _catalog(database) as catalog:
            outcome = check_backing_off(catalog, dt.datetime.now(dt.UTC))
        return _result(outcome, AssetCheckSeverity.WARN)

    return (
        [reclaimed, snapshot_storage_savings_30d],
        [
            savings_total_matches_run_log,
            no_overdue_parse_session_snapshots,
            no_pending_deletes_backing_off,
        ],
    )
