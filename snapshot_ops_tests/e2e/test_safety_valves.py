"""Safety valves: a run refuses to start when the clock or the config would make the cutoff
absurd, and stops before deleting anything when more rows than the cap are expired. Also:
the bytes a run reports freed are the bytes the disk got back. (A storage URL naming the
wrong place: test_missing_objects.py.)

Each case asserts that nothing was touched: the rows are live and the files are there.
"""

from __future__ import annotations

import datetime as dt

import pytest

from snapshot_ops.db import Catalog
from snapshot_ops.errors import ConfigError
from snapshot_ops.rules import check_clocks
from snapshot_ops_tests.support.jobs import failure_message
from snapshot_ops_tests.support.scenarios import DAY, bulk_add, state


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"retention_days": 0}, "retention_days must be greater than 0"),
        ({"retention_days": -7}, "retention_days must be greater than 0"),
        ({"retention_days": float("nan")}, "retention_days must be greater than 0"),
        ({"reference_time": "2099-01-01T00:00:00+00:00"}, "in the future"),
        ({"max_deletions": -1}, "max_deletions must be 0 or more"),
    ],
)
def test_absurd_config_is_refused_with_nothing_touched(world, config, message):
    expired = world.add(age=30 * DAY)
    young = world.add(age=1 * DAY)
    result = world.run(**config)
    assert not result.success
    assert message in failure_message(result)
    assert state(world) == {expired: (False, True), young: (False, True)}


@pytest.mark.parametrize("skew", [dt.timedelta(days=3), -dt.timedelta(hours=1)])
def test_worker_clock_disagreeing_with_the_database_stops_the_run(world, monkeypatch, skew):
    # The worker's clock is the one that is wrong here; the database's is taken as truth.
    real = Catalog.database_now
    monkeypatch.setattr(Catalog, "database_now", lambda self: real(self) - skew)
    expired = world.add(age=30 * DAY)
    result = world.run()
    assert not result.success
    assert "clock" in failure_message(result)
    assert state(world) == {expired: (False, True)}


def test_clocks_within_tolerance_pass_and_beyond_fail():
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    check_clocks(now, now + dt.timedelta(minutes=4))
    check_clocks(now, now - dt.timedelta(minutes=4))
    with pytest.raises(ConfigError, match="differ by"):
        check_clocks(now, now - dt.timedelta(minutes=6))


def test_the_cap_stops_a_run_before_any_delete(world):
    ids = [world.add(age=30 * DAY) for _ in range(5)]
    result = world.run(max_deletions=4)
    assert not result.success
    assert "max_deletions=4" in failure_message(result)
    assert all(s == (False, True) for s in state(world).values())
    assert world.pending() == []
    assert len(ids) == 5


def test_bytes_reclaimed_equal_the_bytes_freed_on_disk(world):
    bulk_add(world, 7, size=321)
    world.add(age=30 * DAY, size=None)  # measured before deleting
    world.add(age=30 * DAY, size=-5)  # measured too
    world.add(age=30 * DAY, with_file=False, size=999)  # already missing: frees nothing
    world.add(age=1 * DAY, size=50)  # young: stays

    def disk_bytes() -> int:
        return sum(p.stat().st_size for p in world.root.rglob("*") if p.is_file())

    before = disk_bytes()
    assert world.run(batch_size=4).success
    [log] = world.run_log()
    assert log.bytes_reclaimed == before - disk_bytes() == 7 * 321 + 10 + 10
