"""Working down a backlog bigger than the cap (run config `work_down_backlog`), through the
real job on PostgreSQL and SQLite with files on disk.

- One more expired row than `max_deletions`: without the opt-in the run stops before any
  delete, naming it; with it the `max_deletions` oldest rows are marked and their files
  deleted, the newest stays live with its file, the run succeeds and reports what it left
  (`backlogLeft`, in the first step's and in record_cleanup_run's metadata); the next run
  takes the rest. Rows an order links, and young rows, stay throughout.
- Split into key ranges, the ranges share only the oldest `max_deletions` rows; and the walk
  never reaches past the oldest `max_deletions` as counted: a refused key among them is
  not replaced by a newer row.
- A dry run with the opt-in lists what a real run would take and leave, touching nothing.
- The guard: with the opt-in, a retention shorter than the latest succeeded run's, or
  (before any run succeeded) than the default 7 days, stops the run over the cap as
  before, naming both retentions; a longer one goes on.
"""

from __future__ import annotations

import pytest

from snapshot_ops_tests.support.jobs import failure_message, step_metadata
from snapshot_ops_tests.support.scenarios import DAY, state
from snapshot_ops_tests.support.world import World

CAP = 4


def backlog(world: World, expired: int) -> tuple[list[str], list[str]]:
    """`expired` expired rows, newest first (10, 11, ... days old), and rows that must stay
    (an old one an order links, a young one)."""
    rows = [world.add(age=(10 + n) * DAY) for n in range(expired)]
    keep = [world.add(age=60 * DAY, linked=True), world.add(age=2 * DAY)]
    return rows, keep


def assert_kept(world: World, keep: list[str]) -> None:
    assert all(state(world)[i] == (False, True) for i in keep)


def test_the_oldest_max_deletions_go_and_the_next_run_takes_the_rest(world):
    rows, keep = backlog(world, CAP + 1)
    newest, oldest = rows[0], rows[1:]

    stopped = world.run(max_deletions=CAP)

    assert not stopped.success
    message = failure_message(stopped)
    assert f"more than max_deletions={CAP}" in message and "work_down_backlog: true" in message
    assert all(s == (False, True) for s in state(world).values())

    first = world.run(max_deletions=CAP, work_down_backlog=True)

    assert first.success
    assert all(state(world)[i] == (True, False) for i in oldest)
    assert state(world)[newest] == (False, True)
    assert_kept(world, keep)
    assert world.pending() == []
    assert step_metadata(first, "identify_expired_candidates")["backlogLeft"] == 1
    assert step_metadata(first, "record_cleanup_run")["backlogLeft"] == 1
    log = world.run_log()[-1]
    assert (log.status, log.marked_count, log.deleted_count) == ("succeeded", CAP, CAP)

    second = world.run(max_deletions=CAP, work_down_backlog=True)

    assert second.success
    assert state(world)[newest] == (True, False)
    assert_kept(world, keep)
    assert step_metadata(second, "record_cleanup_run")["backlogLeft"] == 0
    assert world.run_log()[-1].deleted_count == 1


def test_key_ranges_share_only_the_oldest_max_deletions(world):
    rows, keep = backlog(world, CAP + 3)

    result = world.run(max_deletions=CAP, work_down_backlog=True, ranges=3)

    assert result.success
    assert [state(world)[i] for i in rows] == [(False, True)] * 3 + [(True, False)] * CAP
    assert_kept(world, keep)
    assert step_metadata(result, "record_cleanup_run")["backlogLeft"] == 3


def test_a_row_left_live_among_the_oldest_is_not_replaced_by_a_newer_one(world):
    rows, keep = backlog(world, CAP + 1)
    refused = world.add(age=30 * DAY, key="../outside.pdf", with_file=False)  # among the oldest

    result = world.run(max_deletions=CAP, work_down_backlog=True)

    assert not result.success  # the refused key is reported
    assert state(world)[refused] == (False, False)
    # The oldest CAP counted were the refused row and rows[-3:]; the two newest stay.
    assert [state(world)[i] for i in rows] == [(False, True)] * 2 + [(True, False)] * 3
    assert_kept(world, keep)
    assert step_metadata(result, "identify_expired_candidates")["backlogLeft"] == 2


def test_a_dry_run_lists_what_the_backlog_run_would_take(world):
    rows, keep = backlog(world, CAP + 1)

    result = world.run(max_deletions=CAP, work_down_backlog=True, dry_run=True)

    assert result.success
    assert all(s == (False, True) for s in state(world).values())
    assert step_metadata(result, "identify_expired_candidates")["backlogLeft"] == 1
    assert step_metadata(result, "mark_and_delete_expired")["marked"] == CAP  # rolled back


@pytest.mark.parametrize("history", [False, True], ids=["no-run-yet", "after-a-7-day-run"])
def test_a_shortened_retention_stops_a_backlog_run_untouched(world, history):
    if history:
        done = world.add(age=20 * DAY)
        assert world.run().success  # retention 7 days, within the cap
        assert state(world)[done] == (True, False)
    # Expired only under the short retention: 2 to 5 days old.
    young = [world.add(age=(2 + n) * DAY) for n in range(CAP + 1)]

    result = world.run(retention_days=1, max_deletions=CAP, work_down_backlog=True)

    assert not result.success
    message = failure_message(result)
    assert "work_down_backlog: true does not apply" in message
    assert "retention_days=1 is shorter than" in message
    expected = "the 7 days of the latest succeeded run" if history else "the default of 7 days"
    assert expected in message
    assert all(state(world)[i] == (False, True) for i in young)
    assert world.pending() == []


def test_a_longer_retention_than_the_last_run_works_the_backlog_down(world):
    done = world.add(age=40 * DAY)
    assert world.run().success
    assert state(world)[done] == (True, False)
    rows, keep = backlog(world, CAP + 1)

    result = world.run(retention_days=8, max_deletions=CAP, work_down_backlog=True)

    assert result.success
    assert [state(world)[i] for i in rows] == [(False, True)] + [(True, False)] * CAP
    assert_kept(world, keep)
