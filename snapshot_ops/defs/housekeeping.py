"""Retention of Dagster's own history: a weekly job that deletes old finished runs.

Open-source Dagster keeps every run and its event log forever (dagster.yaml's `retention`
only covers schedule and sensor ticks). This job deletes finished runs, with their event
logs, older than `keep_days`. The cleanup's own run log (`snapshot_ops.cleanup_runs`, with
each run's runAt/deletedCount/errors) lives in the application database and is not touched.
"""

import datetime as dt

from dagster import (
    Config,
    DagsterRunStatus,
    DefaultScheduleStatus,
    OpExecutionContext,
    RunsFilter,
    ScheduleDefinition,
    in_process_executor,
    job,
    op,
)
from pydantic import Field

#: Only runs in these states are deleted; queued or running ones never are.
FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
#: Runs deleted per query, so a large backlog does not load every record at once.
PAGE = 500


class PruneConfig(Config):
    """How much of Dagster's run history to keep."""

    keep_days: float = Field(
        default=90, description="Finished runs last updated longer ago than this are deleted."
    )


@op
def prune_run_history(context: OpExecutionContext, config: PruneConfig) -> int:
    """Delete finished runs (and their event logs) older than `keep_days`; return the count."""
    if config.keep_days < 0:
        raise ValueError(f"keep_days must be 0 or more, got {config.keep_days}")
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=config.keep_days)
    runs_filter = RunsFilter(statuses=FINISHED, updated_before=cutoff)
    deleted = 0
    while True:
        records = context.instance.get_run_records(runs_filter, limit=PAGE)
        ids = [r.dagster_run.run_id for r in records if r.dagster_run.run_id != context.run_id]
        if not ids:
            break
        for run_id in ids:
            context.instance.delete_run(run_id)
        deleted += len(ids)
    context.log.info(f"deleted {deleted} finished runs last updated before {cutoff.isoformat()}")
    context.add_output_metadata({"deletedRuns": deleted, "cutoff": cutoff.isoformat()})
    return deleted


@job(
    executor_def=in_process_executor,
    description="Deletes Dagster runs and event logs older than keep_days (default 90).",
)
def prune_dagster_history_job() -> None:
    prune_run_history()


prune_dagster_history_schedule = ScheduleDefinition(
    name="weekly_prune_dagster_history",
    job=prune_dagster_history_job,
    cron_schedule="30 4 * * 0",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Sundays 04:30 UTC: delete Dagster runs and event logs older than 90 days.",
)
