"""The Dagster definitions of snapshot_ops: the cleanup job and its schedule, the storage
assets and their checks, alerting sensors, the pruning of Dagster's run history, and the
resources."""

import os

from dagster import Definitions, EnvVar

from snapshot_ops.defs.alerts import notifiers
from snapshot_ops.defs.assets import (
    CLEANUP_RUNS,
    ORDER_ATTACHMENTS,
    SNAPSHOT_FILES,
    build_storage_assets,
)
from snapshot_ops.defs.housekeeping import prune_dagster_history_job, prune_dagster_history_schedule
from snapshot_ops.defs.jobs import snapshot_cleanup_job
from snapshot_ops.defs.resources import SnapshotDatabase, SnapshotStorage, storage_s3_resource
from snapshot_ops.defs.schedules import build_daily_schedule, schedule_timezone
from snapshot_ops.defs.sensors import failure_alert_sensors, freshness_sensor
from snapshot_ops.settings import alert_settings, unused_column_defaults

# Alerts go to Slack and/or Teams when configured, else to the log. The token and webhook
# URL are read from the environment when the code location loads and are held by the
# sensors' clients only: they are not part of any definition the UI shows.
_alert_settings = alert_settings()

storage_assets, storage_checks = build_storage_assets(schedule_timezone())

defs = Definitions(
    assets=[SNAPSHOT_FILES, ORDER_ATTACHMENTS, CLEANUP_RUNS, *storage_assets],
    asset_checks=storage_checks,
    jobs=[snapshot_cleanup_job, prune_dagster_history_job],
    schedules=[build_daily_schedule(schedule_timezone()), prune_dagster_history_schedule],
    sensors=[
        *failure_alert_sensors(_alert_settings),
        freshness_sensor(notifiers(_alert_settings)),
    ],
    resources={
        "database": SnapshotDatabase(
            url=EnvVar("SNAPSHOT_OPS_DATABASE_URL"),
            time_format=os.environ.get("SNAPSHOT_OPS_TIME_FORMAT") or "auto",
            naive_time_zone=os.environ.get("SNAPSHOT_OPS_NAIVE_TIME_ZONE") or None,
            unused_column_defaults=list(unused_column_defaults()) or None,
        ),
        "storage": SnapshotStorage(
            url=EnvVar("SNAPSHOT_OPS_STORAGE_URL"),
            # dagster-aws's S3Resource from SNAPSHOT_OPS_S3_* for an s3:// URL, else None.
            s3=storage_s3_resource(),
            # Off unless set; read at run time like the URL.
            **(
                {"max_deletes_per_second": EnvVar.int("SNAPSHOT_OPS_MAX_DELETES_PER_SECOND")}
                if os.environ.get("SNAPSHOT_OPS_MAX_DELETES_PER_SECOND")
                else {}
            ),
        ),
    },
)
