"""Retention of Dagster's own history: the pruning job deletes finished runs and their event
logs older than keep_days from the production instance on PostgreSQL, and keeps newer ones.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from dagster import DagsterInstance, RunsFilter

from snapshot_ops.defs.housekeeping import prune_dagster_history_job
from snapshot_ops_tests.support.operations import production_home, production_instance


def _prune(instance: DagsterInstance, keep_days: float) -> int:
    result = prune_dagster_history_job.execute_in_process(
        run_config={"ops": {"prune_run_history": {"config": {"keep_days": keep_days}}}},
        instance=instance,
    )
    assert result.success
    return result.output_for_node("prune_run_history")


def test_prune_deletes_old_finished_runs_and_their_logs(pg_world, make_pg_database, tmp_path):
    env = production_home(Path(tmp_path) / "home", make_pg_database("prune"))
    instance = production_instance(env)
    try:
        runs = [pg_world.run(raise_on_error=True, instance=instance).run_id for _ in range(2)]
        # Runs updated in the last day are kept.
        assert _prune(instance, keep_days=1) == 0
        assert all(instance.has_run(r) for r in runs)

        assert _prune(instance, keep_days=0) == 3  # the two cleanups and the first prune
        assert not any(instance.has_run(r) for r in runs)
        assert instance.all_logs(runs[0]) == []
        # Only the last pruning run remains.
        [left] = instance.get_run_records(RunsFilter())
        assert left.dagster_run.job_name == "prune_dagster_history_job"
        assert left.create_timestamp > dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    finally:
        instance.dispose()
