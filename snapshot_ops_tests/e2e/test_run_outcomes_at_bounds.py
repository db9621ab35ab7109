"""What a run does at every bound of the rules: with the value on the bound it goes as the
rule says, one step past it the other way. (The bounds as pure functions, one second either
side, are in unit/test_rules_bounds.py.)

- a reference time may be at most FUTURE_TOLERANCE (5 minutes) ahead of the worker's clock;
- the worker's and the database's clocks may differ by at most CLOCK_SKEW_TOLERANCE, either way;
- retention_days must be more than 0, max_deletions at least 0, batch_size at least 1;
- a run marks at most max_deletions rows, both in the up-front count and inside the marking
  loop, whatever the batch size;
- a run's log row keeps at most MAX_STORED_ERRORS messages but counts every error, and so
  does the step's metadata.

(The cutoff's own edge, strictly older, is in test_job_rules.py and the oracle test.)
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from snapshot_ops.cleanup import mark_and_delete
from snapshot_ops.db import MAX_STORED_ERRORS, Catalog, make_engine
from snapshot_ops.rules import (
    make_policy,
)
from snapshot_ops.storage.filesystem import FilesystemBackend
from snapshot_ops_tests.support.scenarios import DAY, bulk_add, state
from snapshot_ops_tests.support.world import NOW

SECOND = dt.timedelta(seconds=1)
MINUTES_5 = dt.timedelta(minutes=5)


def step_metadata(result, step: str) -> dict:
    """The metadata of a step's output, or of its failure."""
    for event in result.events_for_node(step):
        if event.event_type_value == "STEP_OUTPUT":
            return {k: v.value for k, v in event.step_output_data.metadata.items()}
        if event.event_type_value == "STEP_FAILURE":
            failure = event.step_failure_data.user_failure_data
            return {k: v.value for k, v in failure.metadata.items()}
    raise AssertionError(f"no output or failure for {step}")


# -- the clocks ------------------------------------------------------------------------------


def test_a_run_just_inside_the_future_edge_runs_and_just_past_it_touches_nothing(world):
    # Through the job: the wall clock is the worker's; a few seconds of test time are
    # allowed for inside the tolerance, so "past the edge" is checked with room to spare.
    file_id = world.add(age=10 * DAY, now=dt.datetime.now(dt.UTC))
    too_far = dt.datetime.now(dt.UTC) + MINUTES_5 + dt.timedelta(seconds=30)
    refused = world.run(reference_time=too_far.isoformat())
    assert not refused.success
    assert not world.is_deleted(file_id) and world.has_file(file_id)
    assert world.run_log() == []

    at_edge = dt.datetime.now(dt.UTC) + MINUTES_5 - dt.timedelta(seconds=30)
    assert world.run(reference_time=at_edge.isoformat()).success
    assert world.is_deleted(file_id) and not world.has_file(file_id)


# -- the config bounds -----------------------------------------------------------------------


def test_batch_size_one_deletes_every_candidate_and_zero_is_refused(world):
    ids = bulk_add(world, 5)
    young = world.add(age=DAY)
    refused = world.run(batch_size=0)
    assert not refused.success
    assert all(s == (False, True) for s in state(world).values())

    assert world.run(batch_size=1).success
    assert all(state(world)[i] == (True, False) for i in ids)
    assert state(world)[young] == (False, True)
    assert world.run_log()[-1].deleted_count == 5


# -- the cap ---------------------------------------------------------------------------------


def test_exactly_max_deletions_expired_runs_one_more_stops_everything(world):
    ids = bulk_add(world, 6)
    assert not world.run(max_deletions=5).success
    assert all(s == (False, True) for s in state(world).values())
    assert world.run(max_deletions=6).success
    assert all(state(world)[i] == (True, False) for i in ids)


def test_max_deletions_zero_with_nothing_expired_succeeds_and_with_one_stops(world):
    young = world.add(age=DAY)
    assert world.run(max_deletions=0).success
    old = world.add(age=10 * DAY)
    assert not world.run(max_deletions=0).success
    assert state(world)[old] == (False, True) and state(world)[young] == (False, True)


@pytest.mark.integration
@pytest.mark.parametrize(("cap", "batch_size"), [(4, 2), (1, 1), (3, 1), (2, 1000)])
def test_the_marking_loop_stops_exactly_at_the_cap(world, cap, batch_size):
    # The up-front count can be passed by rows expiring meanwhile; the loop holds on its own.
    ids = [world.add(age=(20 - n) * DAY) for n in range(6)]  # oldest first
    catalog = Catalog(make_engine(world.db_url))
    catalog.ensure_own_tables()
    backend = FilesystemBackend(str(world.root))
    policy = make_policy(
        reference_time=NOW.isoformat(), retention_days=7, max_deletions=cap, now=NOW
    )
    try:
        marked, deleted = mark_and_delete(
            catalog, backend, policy, run_id="r", marked_at=NOW, batch_size=batch_size
        )
    finally:
        backend.close()
        catalog.engine.dispose()
    assert (marked.marked_count, deleted.removed) == (cap, cap)
    assert [world.is_deleted(i) for i in ids] == [True] * cap + [False] * (6 - cap)
    assert [world.has_file(i) for i in ids] == [False] * cap + [True] * (6 - cap)


# -- errors: all counted, a bounded number kept ----------------------------------------------


def test_more_errors_than_are_stored_are_all_counted(world):
    good = bulk_add(world, 12, age=20 * DAY)  # the oldest: the storage check finds them
    count = MAX_STORED_ERRORS + 1
    for n in range(count):
        world.add(age=10 * DAY, key=f"../outside-{n}.pdf", with_file=False)

    result = world.run()

    assert not result.success
    assert all(state(world)[i] == (True, False) for i in good)
    [log] = world.run_log()
    assert log.error_count == count
    assert len(json.loads(log.errors)) == MAX_STORED_ERRORS
    assert step_metadata(result, "record_cleanup_run")["errorCount"] == count
    assert step_metadata(result, "mark_and_delete_expired")["refusedKeys"] == count


@pytest.mark.integration
@pytest.mark.parametrize("count", [MAX_STORED_ERRORS, MAX_STORED_ERRORS + 1])
def test_the_run_log_keeps_at_most_the_cap_of_messages_and_counts_all(world, count):
    catalog = Catalog(make_engine(world.db_url))
    catalog.ensure_own_tables()
    errors = [f"error {n}" for n in range(count)]
    for run_id, finish in (
        ("finished", lambda: catalog.finish_run("finished", status="failed", errors=errors)),
        ("crashed", lambda: catalog.finish_run_if_running("crashed", errors=errors)),
    ):
        catalog.start_run(
            run_id=run_id,
            run_at=NOW,
            reference_time=NOW,
            cutoff=NOW - 7 * DAY,
            dry_run=False,
            candidate_count=0,
        )
        finish()
    catalog.engine.dispose()
    for log in world.run_log():
        assert log.error_count == count
        assert json.loads(log.errors) == errors[:MAX_STORED_ERRORS]
