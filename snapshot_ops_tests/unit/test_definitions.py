"""The Dagster definitions load and resolve: the job's steps, the daily schedule, its timezone."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys

import pytest
from dagster import build_schedule_context

from snapshot_ops.definitions import defs
from snapshot_ops.defs.schedules import build_daily_schedule, schedule_timezone
from snapshot_ops.errors import ConfigError
from snapshot_ops_tests.support.commands import run_command


def test_job_steps_run_in_protocol_order():
    job = defs.resolve_job_def("snapshot_cleanup_job")
    order = [node.name for node in job.graph.nodes_in_topological_order]
    protocol = [
        "identify_expired_candidates",
        "finish_pending_deletes",
        "mark_and_delete_expired",
        "record_cleanup_run",
    ]
    assert [name for name in order if name in protocol] == protocol


def test_schedule_runs_daily_at_three_in_the_configured_timezone(monkeypatch):
    monkeypatch.setenv("SNAPSHOT_OPS_TIMEZONE", "Europe/Berlin")
    schedule = build_daily_schedule(schedule_timezone())
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 3 * * *", "Europe/Berlin")
    assert defs.resolve_schedule_def("daily_snapshot_cleanup").job_name == "snapshot_cleanup_job"


def test_each_tick_cleans_as_of_its_own_time():
    schedule = build_daily_schedule("Europe/Berlin")
    tick = dt.datetime(2026, 3, 29, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    [request] = schedule.evaluate_tick(
        build_schedule_context(scheduled_execution_time=tick)
    ).run_requests
    config = request.run_config["ops"]["identify_expired_candidates"]["config"]
    assert config == {"reference_time": tick.isoformat()}
    assert request.run_key == tick.isoformat()


def test_timezone_defaults_to_utc_and_typos_are_refused(monkeypatch):
    monkeypatch.delenv("SNAPSHOT_OPS_TIMEZONE", raising=False)
    assert schedule_timezone() == "UTC"
    with pytest.raises(ConfigError, match="not an IANA timezone"):
        schedule_timezone("Europe/Berlinn")


#: Packages only some runs or views need; loading the code location must not import them.
DEFERRED_IMPORTS = (
    "pandas",  # the savings view's computation
    "numpy",
    "boto3",  # the S3 backend, only when the storage URL is s3://
    "botocore",
    "azure.storage.blob",  # the Azure backend, only when it is az://
    "dagster_celery",  # only when SNAPSHOT_OPS_EXECUTOR=celery
    "dagster_k8s",  # only when SNAPSHOT_OPS_EXECUTOR=k8s
    "slack_sdk",  # the alert clients, only for a configured Slack or Teams destination
    "dagster_slack",
    "dagster_msteams",
    "requests",
    "pyrate_limiter",  # only when a delete rate limit is set
)


def test_loading_the_definitions_leaves_optional_packages_unimported():
    """Every process that loads the code location (each run, the webserver, the daemon)
    pays for what it imports: the heavy or optional packages wait until they are used."""
    probe = (
        "import json, sys; import snapshot_ops; "
        f"print(json.dumps([m for m in {list(DEFERRED_IMPORTS)!r} if m in sys.modules]))"
    )
    # The default executor: a configured Celery or k8s one imports its package, as it must.
    env = {k: v for k, v in os.environ.items() if k != "SNAPSHOT_OPS_EXECUTOR"}
    loaded = run_command([sys.executable, "-c", probe], env=env)
    assert json.loads(loaded.stdout) == []
