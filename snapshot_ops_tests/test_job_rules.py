"""End-to-end through Dagster (in process): what one cleanup run deletes and keeps.

Every test looks at the rows and the files afterwards, on PostgreSQL and on SQLite.
"""

from __future__ import annotations

import datetime as dt

import pytest

from snapshot_ops.rules import PERMANENT_TYPE

pytestmark = pytest.mark.e2e

DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)


def test_expired_unlinked_goes_everything_else_stays(world):
    expired = world.add(age=8 * DAY)
    linked = world.add(age=30 * DAY, linked=True)
    fresh = world.add(age=6 * DAY)
    permanent = world.add(age=400 * DAY, snapshot_type=PERMANENT_TYPE)

    result = world.run()

    assert result.success
    assert world.is_deleted(expired) and not world.has_file(expired)
    for kept in (linked, fresh, permanent):
        assert not world.is_deleted(kept) and world.has_file(kept)
    [log] = world.run_log()
    assert (log.status, log.deleted_count, log.error_count) == ("succeeded", 1, 0)
    assert world.pending() == []
