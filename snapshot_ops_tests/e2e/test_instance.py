"""The production instance: the repository's dagster.yaml, on a fresh PostgreSQL database,
runs the cleanup job with `dagster job execute` (as CI does) and records the run there.

Also pins what the file promises: PostgreSQL storage for runs, event logs and schedules,
one cleanup at a time through the queued run coordinator, run monitoring and a crash-only
retry policy, and the same code location in workspace.yaml, [tool.dagster] and [tool.dg].
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from dagster import DagsterRunStatus
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from snapshot_ops.defs.jobs import CONCURRENCY_TAG
from snapshot_ops.demo import job_command
from snapshot_ops_tests.support.commands import python_module, run_command
from snapshot_ops_tests.support.operations import REPO, production_home, production_instance
from snapshot_ops_tests.support.world import NOW, World

DAY = dt.timedelta(days=1)


def test_cli_run_through_production_instance_on_postgres(
    pg_world, make_pg_database, tmp_path: Path
):
    expired = pg_world.add(age=8 * DAY)
    linked = pg_world.add(age=30 * DAY, linked=True)
    home_env = production_home(tmp_path / "home", make_pg_database("instance"))
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "ops": {
                    "identify_expired_candidates": {"config": {"reference_time": NOW.isoformat()}}
                }
            }
        )
    )
    env = dict(
        os.environ,
        **home_env,
        SNAPSHOT_OPS_DATABASE_URL=pg_world.db_url,
        SNAPSHOT_OPS_STORAGE_URL=pg_world.root.as_uri(),
    )
    run_command(job_command("-c", str(config)), env=env)

    assert pg_world.is_deleted(expired) and not pg_world.has_file(expired)
    assert not pg_world.is_deleted(linked) and pg_world.has_file(linked)

    instance = production_instance(home_env)
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        [run] = instance.get_runs()
        assert run.job_name == "snapshot_cleanup_job"
        assert run.status == DagsterRunStatus.SUCCESS
        assert run.tags[CONCURRENCY_TAG] == "true"
        # The job's own logs reached the PostgreSQL event log (managed_python_loggers).
        entries = instance.all_logs(run.run_id)
        messages = [e.message for e in entries]
        assert any("cleanup summary" in m and "'deletedCount': 1" in m for m in messages)
        # python_log_level: INFO keeps DEBUG lines (the steps' own accounts, the I/O
        # manager's) out of the event log; Dagster's events are all there whatever the level.
        debug = [
            e.user_message for e in entries if not e.is_dagster_event and e.level < logging.INFO
        ]
        assert debug == []
        assert any(e.is_dagster_event and e.level == logging.DEBUG for e in entries)
    finally:
        instance.dispose()


@pytest.mark.integration
def test_production_instance_settings(make_pg_database, tmp_path: Path):
    instance = production_instance(production_home(tmp_path / "home", make_pg_database("settings")))
    try:
        queue = instance.run_coordinator.get_run_queue_config()
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert {"key": CONCURRENCY_TAG, "limit": 1} in queue.tag_concurrency_limits
        assert instance.run_monitoring_enabled
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert not instance.run_retries_retry_on_asset_or_op_failure
        settings = instance.get_settings("python_logs")
        assert settings["managed_python_loggers"] == ["snapshot_ops"]
        assert settings["python_log_level"] == "INFO"
    finally:
        instance.dispose()


@pytest.mark.unit
def test_dagster_yaml_holds_no_connection_secrets():
    raw = yaml.safe_load((REPO / "dagster.yaml").read_text())
    db = raw["storage"]["postgres"]["postgres_db"]
    for key in ("hostname", "port", "db_name", "username", "password"):
        assert set(db[key]) == {"env"}, f"{key} must come from an environment variable"
    assert db["scheme"] == "postgresql+psycopg2"


@pytest.mark.unit
def test_one_code_location_everywhere():
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())
    [entry] = workspace["load_from"]
    module = entry["python_module"]
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]
    assert module["module_name"] == tool["dagster"]["module_name"]
    assert module["module_name"] == tool["dg"]["project"]["code_location_target_module"]
    names = {
        module["location_name"],
        tool["dagster"]["code_location_name"],
        tool["dg"]["project"]["code_location_name"],
    }
    assert names == {"snapshot_ops"}


def test_dg_checks_lists_and_launches_the_project(sqlite_url, storage_root, tmp_path: Path):
    """`dg` (dagster-dg-cli, pinned to the dagster version) finds the project from
    [tool.dg], loads its definitions and launches a cleanup run that deletes."""
    world = World(sqlite_url, storage_root)
    expired = world.add(age=8 * DAY)
    kept = world.add(age=3 * DAY)
    home = tmp_path / "dg_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = dict(
        os.environ,
        DAGSTER_HOME=str(home),
        SNAPSHOT_OPS_DATABASE_URL=world.db_url,
        SNAPSHOT_OPS_STORAGE_URL=world.root.as_uri(),
    )
    dg = str(Path(sys.executable).parent / "dg")
    config = {
        "ops": {"identify_expired_candidates": {"config": {"reference_time": NOW.isoformat()}}}
    }
    outputs = {}
    for name, args in {
        "check": ["check", "defs"],
        "list": ["list", "defs", "--json"],
        "launch": ["launch", "--job", "snapshot_cleanup_job", "--config-json", json.dumps(config)],
    }.items():
        done = run_command([dg, *args], env=env)
        outputs[name] = done.stdout + done.stderr
    assert "All definitions loaded successfully" in outputs["check"]
    assert "snapshot_cleanup_job" in outputs["list"]
    assert "daily_snapshot_cleanup" in outputs["list"]
    assert "RUN_SUCCESS" in outputs["launch"]
    assert world.is_deleted(expired) and not world.has_file(expired)
    assert not world.is_deleted(kept) and world.has_file(kept)


def test_embedded_default_needs_no_service(tmp_path: Path):
    """`make demo` runs on its own SQLite instance even with no PostgreSQL settings at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "SNAPSHOT_OPS_"))}
    done = run_command(python_module("snapshot_ops.demo", "--dir", str(tmp_path / "demo")), env=env)
    assert "RUN_SUCCESS" in done.stdout
    assert (tmp_path / "demo" / "dagster_home" / "history" / "runs.db").exists()
