"""The Dagster definitions of snapshot_ops: the cleanup job, its schedule and resources."""

from dagster import Definitions, EnvVar

from snapshot_ops.jobs import snapshot_cleanup_job
from snapshot_ops.resources import SnapshotDatabase, SnapshotStorage
from snapshot_ops.schedules import build_daily_schedule, schedule_timezone

defs = Definitions(
    jobs=[snapshot_cleanup_job],
    schedules=[build_daily_schedule(schedule_timezone())],
    resources={
        "database": SnapshotDatabase(url=EnvVar("SNAPSHOT_OPS_DATABASE_URL")),
        "storage": SnapshotStorage(url=EnvVar("SNAPSHOT_OPS_STORAGE_URL")),
    },
)
