"""A run passes every crash checkpoint by its exact name, in the order `checkpoints.NAMES`
gives, so a crash test that names one stops the run at the step it means (the crash tests
themselves run the job in subprocesses, where a misspelt name would only show as a run
that was never stopped)."""

from __future__ import annotations

import pytest

from snapshot_ops import checkpoints
from snapshot_ops.defs.resources import SnapshotDatabase
from snapshot_ops_tests.support.scenarios import DAY
from snapshot_ops_tests.support.world import NOW

pytestmark = pytest.mark.integration

#: The checkpoints of one batch's delete, in the order they happen on the deleter's thread.
DELETING = ("before_delete", "after_store_delete", "after_settle")


@pytest.fixture
def passed(monkeypatch):
    """The checkpoint names the run reaches, in order (each still goes to `reached`)."""
    names: list[str] = []
    reached = checkpoints.reached

    def record(name: str) -> None:
        names.append(name)
        reached(name)

    monkeypatch.setattr(checkpoints, "reached", record)
    return names


def test_a_run_with_one_batch_passes_each_checkpoint_once_in_order(world, passed):
    doomed = world.add(age=10 * DAY)
    assert world.run().success
    assert not world.has_file(doomed)
    assert set(passed) == set(checkpoints.NAMES)
    assert (passed[0], passed[-1]) == ("after_select", "before_record")
    # The batch's delete runs on the deleter's thread, beside the marking walk, whose
    # second, empty read ends it.
    assert [n for n in passed if n in DELETING] == list(DELETING)
    assert passed.count("after_mark_batch") == 2


def test_the_journal_sweep_settles_after_the_store_deleted(world, passed):
    # A row an earlier run marked and journaled but never deleted: this run's sweep does.
    doomed = world.add(age=10 * DAY)
    catalog = SnapshotDatabase(url=world.db_url).open_catalog()
    try:
        catalog.ensure_own_tables()
        catalog.start_run(
            run_id="earlier", run_at=NOW, reference_time=NOW, cutoff=NOW - 7 * DAY,
            dry_run=False, candidate_count=1,
        )  # fmt: skip
        catalog.mark_batch(
            cutoff=NOW - 7 * DAY, cursor=None, limit=10, run_id="earlier", marked_at=NOW
        )
    finally:
        catalog.engine.dispose()
    assert world.run().success
    assert not world.has_file(doomed) and world.pending() == []
    # The sweep step runs before the marking walk, which reads nothing and ends.
    assert passed == [
        "after_select", "after_store_delete", "after_settle", "after_mark_batch", "before_record",
    ]  # fmt: skip
