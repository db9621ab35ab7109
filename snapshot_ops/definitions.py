"""The Dagster definitions of snapshot_ops: the cleanup job, its schedule, assets, resources."""

from dagster import Definitions, EnvVar

from snapshot_ops.assets import (
    CLEANUP_RUNS,
    ORDER_ATTACHMENTS,
    SNAPSHOT_FILES,
    build_storage_assets,
)
from snapshot_ops.jobs import snapshot_cleanup_job
from snapshot_ops.resources import SnapshotDatabase, SnapshotStorage
from snapshot_ops.schedules import build_daily_schedule, schedule_timezone

storage_assets, storage_checks = build_storage_assets(schedule_timezone())

defs = Definitions(
    assets=[SNAPSHOT_FILES, ORDER_ATTACHMENTS, CLEANUP_RUNS, *storage_assets],
    asset_checks=storage_checks,
    jobs=[snapshot_cleanup_job],
    schedules=[build_daily_schedule(schedule_timezone())],
    resources={
        "database": SnapshotDatabase(url=EnvVar("SNAPSHOT_OPS_DATABASE_URL")),
        "storage": SnapshotStorage(url=EnvVar("SNAPSHOT_OPS_STORAGE_URL")),
    },
)
