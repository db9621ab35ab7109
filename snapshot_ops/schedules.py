"""The daily schedule: 03:00 in the timezone named by SNAPSHOT_OPS_TIMEZONE (default UTC)."""


import os
import zoneinfo

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    schedule,
)

from snapshot_ops.errors import ConfigError
from snapshot_ops.jobs import snapshot_cleanup_job

CRON = "0 3 * * *"


def schedule_timezone(value: str | None = None) -> str:
    """The IANA timezone the schedule runs in, checked so a typo fails at load time."""
    name = value if value is not None else os.environ.get("SNAPSHOT_OPS_TIMEZONE", "") or "UTC"
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"SNAPSHOT_OPS_TIMEZONE={name!r} is not an IANA timezone such as Europe/London"
        ) from exc
    return name


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
