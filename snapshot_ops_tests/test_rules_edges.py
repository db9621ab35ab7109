"""The retention rules at their edges: every "at most", "at least" and "only if" in rules.py.

Each bound is tested on both sides (the last value accepted and the first refused), so that
moving a bound by one unit, or turning `<` into `<=`, fails a test. The reference time and
the clock check are also pinned for a worker whose local zone is not UTC.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest

from snapshot_ops.errors import ConfigError
from snapshot_ops.rules import (
    CLOCK_SKEW_TOLERANCE,
    FUTURE_TOLERANCE,
    check_clocks,
    make_policy,
    parse_reference_time,
)

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 11, 29, 3, 0, tzinfo=dt.UTC)
TICK = dt.timedelta(microseconds=1)


@pytest.fixture
def worker_in_tokyo(monkeypatch):
    """The worker's local zone is Asia/Tokyo (UTC+9) for the test, then back."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_the_future_tolerance_is_five_minutes_inclusive():
    assert FUTURE_TOLERANCE == dt.timedelta(minutes=5)
    edge = NOW + FUTURE_TOLERANCE
    assert parse_reference_time(edge.isoformat(), NOW) == edge
    with pytest.raises(ConfigError, match="in the future"):
        parse_reference_time((edge + TICK).isoformat(), NOW)


def test_an_empty_reference_time_means_now():
    assert parse_reference_time("", NOW) == NOW


def test_now_without_a_zone_is_a_programming_error():
    with pytest.raises(ValueError, match="^now must be timezone-aware$"):
        parse_reference_time(None, NOW.replace(tzinfo=None))


@pytest.mark.parametrize("value", [None, "2026-11-29T05:00:00+02:00"])
def test_the_reference_time_is_in_utc_whatever_the_workers_zone(worker_in_tokyo, value):
    now = NOW.astimezone(dt.timezone(dt.timedelta(hours=1)))
    parsed = parse_reference_time(value, now)
    assert parsed.utcoffset() == dt.timedelta(0)
    assert parsed.isoformat() == "2026-11-29T03:00:00+00:00"


def test_a_fractional_retention_below_one_day_is_accepted():
    policy = make_policy(reference_time=None, retention_days=0.5, max_deletions=1, now=NOW)
    assert policy.cutoff == NOW - dt.timedelta(hours=12)


def test_a_deletion_cap_of_zero_is_accepted_and_kept():
    assert (
        make_policy(reference_time=None, retention_days=7, max_deletions=0, now=NOW).max_deletions
        == 0
    )
    assert (
        make_policy(reference_time=None, retention_days=7, max_deletions=10, now=NOW).max_deletions
        == 10
    )


@pytest.mark.parametrize("sign", [1, -1])
def test_clock_skew_up_to_the_tolerance_is_accepted(sign):
    assert CLOCK_SKEW_TOLERANCE == dt.timedelta(minutes=5)
    check_clocks(NOW + sign * CLOCK_SKEW_TOLERANCE, NOW)
    check_clocks(NOW, NOW)


@pytest.mark.parametrize("sign", [1, -1])
def test_clock_skew_beyond_the_tolerance_is_refused_naming_both_clocks(sign):
    worker = NOW + sign * (CLOCK_SKEW_TOLERANCE + TICK)
    with pytest.raises(ConfigError) as refused:
        check_clocks(worker, NOW)
    assert worker.isoformat() in str(refused.value)
    assert NOW.isoformat() in str(refused.value)


def test_clocks_days_apart_are_refused():
    """A skew far past the tolerance (not only at its edge) stops the run."""
    with pytest.raises(ConfigError):
        check_clocks(NOW + dt.timedelta(days=3), NOW)
    with pytest.raises(ConfigError):
        check_clocks(NOW, NOW + dt.timedelta(days=3))
