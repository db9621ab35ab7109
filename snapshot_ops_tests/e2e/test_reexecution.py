"""A re-execution of a crashed run finishes the journal and logs under its own run id.

The first run is a real `dagster job execute` process killed (SIGKILL) between marking a
batch and deleting it, in a persistent Dagster instance. The instance is told the run failed
(what run monitoring does for a dead worker), and the run is re-executed from failure with
Dagster's own ReexecutionOptions, as the UI's button and the automatic retry of the shipped
dagster.yaml do: only the failed step and those after it run, `finish_pending_deletes` is
skipped. Afterwards every journaled object is gone, the run log holds two rows (the crashed
run closed as `crashed` with what it settled, the retry's own row with the rest), and the
day's figures count each byte once.
"""

from __future__ import annotations

import signal

import pytest
from dagster import DagsterInstance, ReexecutionOptions, execute_job
from dagster._core.definitions.reconstruct import ReconstructableRepository

from snapshot_ops import savings
from snapshot_ops.defs.resources import SnapshotDatabase
from snapshot_ops_tests.support.scenarios import bulk_add, start_job, state
from snapshot_ops_tests.support.world import NOW

pytestmark = pytest.mark.e2e

EXPIRED = 30


def reexecute_from_failure(world, home, monkeypatch) -> tuple[str, str, set[str]]:
    """Report the one run in the instance at `home` failed (what run monitoring does for a
    dead worker) and re-execute it from failure in process; assert the re-execution
    succeeds. Return the crashed run's id, the re-execution's id and the step keys it ran."""
    monkeypatch.setenv("SNAPSHOT_OPS_DATABASE_URL", world.db_url)
    monkeypatch.setenv("SNAPSHOT_OPS_STORAGE_URL", world.root.as_uri())
    job = ReconstructableRepository.for_module(
        "snapshot_ops.definitions", "defs"
    ).get_reconstructable_job("snapshot_cleanup_job")
    with DagsterInstance.from_config(str(home)) as instance:
        [crashed] = instance.get_runs()
        instance.report_run_failed(crashed)
        with execute_job(
            job,
            instance,
            reexecution_options=ReexecutionOptions.from_failure(crashed.run_id, instance),
        ) as result:
            assert result.success
            retry_id = result.run_id
            executed = set(instance.get_run_by_id(retry_id).step_keys_to_execute)
    return crashed.run_id, retry_id, executed


def test_reexecution_from_failure_finishes_the_journal_under_its_own_run(
    pg_world, tmp_path, monkeypatch
):
    expired = bulk_add(pg_world, EXPIRED)
    linked = bulk_add(pg_world, 5, linked=True, label="linked")
    home = tmp_path / "home"
    process = start_job(pg_world, home, batch_size=10, SNAPSHOT_OPS_CRASH_AT="before_delete")
    output = process.communicate(timeout=300)[0]
    assert process.returncode == -signal.SIGKILL, output[-3000:]
    journaled = {p.file_id for p in pg_world.pending()}
    assert journaled and all(state(pg_world)[i] == (True, True) for i in journaled)

    crashed_id, retry_id, executed = reexecute_from_failure(pg_world, home, monkeypatch)

    assert "finish_pending_deletes" not in executed  # the path that used to skip the journal
    now = state(pg_world)
    assert all(now[i] == (True, False) for i in expired)
    assert all(now[i] == (False, True) for i in linked)
    assert pg_world.pending() == []
    first, retry = pg_world.run_log()
    assert (first.run_id, first.status) == (crashed_id, "crashed")
    assert (retry.run_id, retry.status) == (retry_id, "succeeded")
    assert first.deleted_count + retry.deleted_count == EXPIRED
    assert retry.deleted_count >= len(journaled)
    assert first.missing_count == retry.missing_count == 0
    assert first.bytes_reclaimed + retry.bytes_reclaimed == 100 * EXPIRED

    catalog = SnapshotDatabase(url=pg_world.db_url).open_catalog()
    try:
        day = savings.day_figures(catalog, NOW.date(), "UTC")
    finally:
        catalog.engine.dispose()
    assert (day.bytes_reclaimed, day.deleted_count, day.runs) == (100 * EXPIRED, EXPIRED, 2)
    assert day.failed_runs == 1  # the crashed run


def test_reexecution_from_failure_finishes_a_killed_range(pg_world, tmp_path, monkeypatch):
    """Three ranges of 10 in batches of 5: the run is killed after marking the first batch
    of range_1 and before deleting it; range_0 is done, range_2 never started. The
    re-execution finishes range_1's journaled batch, cleans the rest of range_1 and all of
    range_2, and counts each object once."""
    expired = bulk_add(pg_world, EXPIRED)
    linked = bulk_add(pg_world, 5, linked=True, label="linked")
    home = tmp_path / "home"
    process = start_job(
        pg_world,
        home,
        batch_size=5,
        SNAPSHOT_OPS_RANGES="3",
        SNAPSHOT_OPS_CRASH_AT="before_delete:3",  # range_0 handed two batches to the deleter
    )
    output = process.communicate(timeout=300)[0]
    assert process.returncode == -signal.SIGKILL, output[-3000:]
    journaled = {p.file_id for p in pg_world.pending()}
    between = state(pg_world)
    assert len(journaled) == 5 and all(between[i] == (True, True) for i in journaled)
    assert sum(s == (True, False) for s in between.values()) == 10  # range_0's

    crashed_id, retry_id, executed = reexecute_from_failure(pg_world, home, monkeypatch)

    # Dagster re-runs the killed range's step, not range_2's, which the killed run never
    # started: record_cleanup_run cleans a range that has no report.
    assert executed == {
        "mark_and_delete_expired[range_1]",
        "record_cleanup_run",
        "refresh_storage_assets",
    }
    now = state(pg_world)
    assert all(now[i] == (True, False) for i in expired)
    assert all(now[i] == (False, True) for i in linked)
    assert pg_world.pending() == []
    first, retry = pg_world.run_log()
    assert (first.run_id, first.status, first.deleted_count) == (crashed_id, "crashed", 10)
    assert (retry.run_id, retry.status, retry.deleted_count) == (retry_id, "succeeded", 20)
    assert first.missing_count == retry.missing_count == 0
    assert first.bytes_reclaimed + retry.bytes_reclaimed == 100 * EXPIRED
