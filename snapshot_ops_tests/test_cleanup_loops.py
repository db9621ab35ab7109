"""The two loops below the ops: the cap holds inside the marking loop, and objects of rows
marked by a run that stopped before deleting are finished by the next run."""

from __future__ import annotations

import datetime as dt

import pytest

from snapshot_ops.catalog import Catalog, make_engine
from snapshot_ops.cleanup import mark_and_delete
from snapshot_ops.rules import make_policy
from snapshot_ops.storage.filesystem import FilesystemBackend
from snapshot_ops_tests.conftest import NOW

pytestmark = pytest.mark.integration

DAY = dt.timedelta(days=1)


def catalog_for(world) -> Catalog:
    catalog = Catalog(make_engine(world.db_url))
    catalog.ensure_own_tables()
    return catalog


def policy(max_deletions: int = 1000):
    return make_policy(
        reference_time=NOW.isoformat(), retention_days=7, max_deletions=max_deletions, now=NOW
    )


def test_marking_never_goes_past_the_cap(world):
    # Candidates can appear after the up-front count; the loop itself stops at the cap.
    ids = [world.add(age=(8 + n) * DAY) for n in range(5)]
    catalog = catalog_for(world)
    backend = FilesystemBackend(str(world.root))
    marked, deleted = mark_and_delete(
        catalog, backend, policy(max_deletions=3), run_id="r", marked_at=NOW, batch_size=2
    )
    backend.close()
    catalog.engine.dispose()
    assert marked.marked == 3 and deleted.deleted == 3
    assert sum(world.is_deleted(i) for i in ids) == 3
    assert sum(world.has_file(i) for i in ids) == 2
    # Oldest first: the keyset order is "createdAt".
    assert [world.is_deleted(i) for i in ids] == [False, False, True, True, True]


def test_marked_but_undeleted_objects_are_finished_by_the_next_run(world):
    ids = [world.add(age=10 * DAY, size=50) for _ in range(3)]
    catalog = catalog_for(world)
    # A run that marked, then stopped before any delete (no storage to delete with).
    mark_and_delete(catalog, None, policy(), run_id="crashed", marked_at=NOW, batch_size=2)
    catalog.engine.dispose()
    assert all(world.is_deleted(i) and world.has_file(i) for i in ids)
    assert len(world.pending()) == 3

    result = world.run()

    assert result.success
    assert all(world.is_deleted(i) and not world.has_file(i) for i in ids)
    assert world.pending() == []
    [log] = world.run_log()
    assert (log.deleted_count, log.bytes_reclaimed, log.marked_count) == (3, 150, 0)
