"""The command line a user and CI type: `dagster definitions validate` and
`dagster job execute -m snapshot_ops -j snapshot_cleanup_job` with only environment
variables, against the real PostgreSQL; and the README's demo."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from snapshot_ops.rules import PERMANENT_TYPE
from snapshot_ops_tests.support.commands import python_module, run_command

DAY = dt.timedelta(days=1)
JOB_EXECUTE = ("job", "execute", "-m", "snapshot_ops", "-j", "snapshot_cleanup_job")


def dagster(*args: str, env: dict[str, str], returncode: int | None = 0):
    return run_command(python_module("dagster", *args), env=env, returncode=returncode)


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    return {**os.environ, "DAGSTER_HOME": str(home), **extra}


@pytest.mark.parametrize("target", [["-m", "snapshot_ops"], ["-w", "workspace.yaml"]])
def test_definitions_validate(tmp_path, target):
    dagster("definitions", "validate", *target, env=cli_env(tmp_path))


def test_job_execute_cleans_as_of_now_with_only_environment(pg_world, tmp_path):
    now = dt.datetime.now(dt.UTC)
    expired = pg_world.add(age=8 * DAY, now=now)
    fresh = pg_world.add(age=6 * DAY, now=now)
    permanent = pg_world.add(age=80 * DAY, snapshot_type=PERMANENT_TYPE, now=now)
    env = cli_env(
        tmp_path,
        SNAPSHOT_OPS_DATABASE_URL=pg_world.db_url,  # a plain postgresql:// URL
        SNAPSHOT_OPS_STORAGE_URL=pg_world.root.as_uri(),
    )

    result = dagster(*JOB_EXECUTE, env=env)

    assert pg_world.is_deleted(expired) and not pg_world.has_file(expired)
    for kept in (fresh, permanent):
        assert not pg_world.is_deleted(kept) and pg_world.has_file(kept)
    [log] = pg_world.run_log()
    assert (log.status, log.deleted_count) == ("succeeded", 1)
    assert "'deletedCount': 1" in result.stdout + result.stderr


def test_job_execute_without_configuration_says_what_to_set(tmp_path):
    env = cli_env(tmp_path)
    env.pop("SNAPSHOT_OPS_DATABASE_URL", None)
    env.pop("SNAPSHOT_OPS_STORAGE_URL", None)
    result = dagster(*JOB_EXECUTE, env=env, returncode=None)
    assert result.returncode != 0
    assert "SNAPSHOT_OPS_DATABASE_URL" in result.stdout + result.stderr


def test_demo_deletes_the_expired_and_keeps_the_rest(tmp_path):
    result = run_command(python_module("snapshot_ops.demo", "--dir", str(tmp_path / "demo")))
    lines = [line for line in result.stdout.splitlines() if "Snapshot " in line]
    assert lines, result.stdout
    for line in lines:
        _, _, row_state, file_state, *expected = line.split()
        if expected[0] == "kept:":
            assert (row_state, file_state) == ("live", "present"), line
        else:
            assert (row_state, file_state) == ("deleted", "gone"), line
