"""The daily schedule: 03:00 in the timezone named by SNAPSHOT_OPS_TIMEZONE (default UTC)."""

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    schedule,
)

from snapshot_ops.defs.jobs import snapshot_cleanup_job
from snapshot_ops.settings import schedule_timezone

# schedule_timezone moved to settings.py (the assets need it too); it stays importable here.
__all__ = ["CRON", "build_daily_schedule", "schedule_timezone"]

CRON = "0 3 * * *"


def build_daily_schedule(timezone: str) -> ScheduleDefinition:
    """The daily cleanup at 03:00 local time, each tick cleaning as of its scheduled time."""

    @schedule(
        name="daily_snapshot_cleanup",
        job=snapshot_cleanup_job,
        cron_schedule=CRON,
        execution_timezone=timezone,
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"Runs the snapshot cleanup daily at 03:00 {timezone}.",
    )
    def daily_snapshot_cleanup(context: ScheduleEvaluationContext) -> RunRequest:
        tick = context.scheduled_execution_time
        config = {"reference_time": tick.isoformat()} if tick is not None else {}
        return RunRequest(
            run_key=tick.isoformat() if tick is not None else None,
            run_config={"ops": {"identify_expired_candidates": {"config": config}}},
        )

    return daily_snapshot_cleanup
