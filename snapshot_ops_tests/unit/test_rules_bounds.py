"""The retention rules at their edges: every "at most", "at least" and "only if" in rules.py.

Each bound is tested on both sides (the last value accepted and the first refused), so that
moving a bound by one unit, or turning `<` into `<=`, fails a test. The reference time and
the clock check are also pinned for a worker whose local zone is not UTC. A refusal's
suggestions are fed back: each suggested reference_time is accepted and is `now` in UTC to
the second, and the clock refusal names the clock that is ahead and by how much.
"""

from __future__ import annotations

import datetime as dt
import re
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

NOW = dt.datetime(2026, 11, 29, 3, 0, tzinfo=dt.UTC)
TICK = dt.timedelta(microseconds=1)
SECOND = dt.timedelta(seconds=1)
MINUTES_5 = dt.timedelta(minutes=5)


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


# What the refusals suggest. A message's suggested reference_time must itself be accepted when
# fed back at the same `now`, and must be that `now` in UTC to the second, whatever the
# worker's zone; the clock message must say which clock is ahead and by how much.

SUGGESTED = re.compile(r"e\.g\. (\d{4}-\d\d-\d\dT[0-9:.]+[+-]\d\d:\d\d)")


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("yesterday", "not an ISO 8601 time"),
        ("2026-12-01T00:00:00", "read as UTC it is in the future"),
        ("2026-12-01T00:00:00+00:00", "is in the future"),
    ],
)
def test_a_refused_reference_time_suggests_now_in_utc_which_is_accepted(
    worker_in_tokyo, value, kind
):
    now = (NOW + dt.timedelta(microseconds=654321)).astimezone(dt.timezone(dt.timedelta(hours=1)))
    with pytest.raises(ConfigError, match=kind) as refused:
        parse_reference_time(value, now)
    message = str(refused.value)
    suggestions = SUGGESTED.findall(message)
    assert suggestions, message
    for suggested in suggestions:
        assert suggested == "2026-11-29T03:00:00+00:00"
        assert parse_reference_time(suggested, now) == NOW
    # The other way out it names: no reference time at all means now.
    assert "leave it unset to mean now" in message
    assert parse_reference_time(None, now) == now


def test_the_future_refusal_states_the_tolerance():
    with pytest.raises(ConfigError) as refused:
        parse_reference_time((NOW + FUTURE_TOLERANCE + TICK).isoformat(), NOW)
    assert f"at most {FUTURE_TOLERANCE} ahead" in str(refused.value)


@pytest.mark.parametrize(
    "naive",
    [
        dt.datetime(2026, 11, 20, 3, 0),  # well in the past
        (NOW + FUTURE_TOLERANCE).replace(tzinfo=None),  # read as UTC, the last time accepted
    ],
)
def test_a_time_without_offset_suggests_itself_in_utc_or_with_its_own_offset(naive):
    with pytest.raises(ConfigError, match="has no UTC offset") as refused:
        parse_reference_time(naive.isoformat(), NOW)
    message = str(refused.value)
    as_utc = re.search(r"if it is UTC write (\S+),", message)
    assert as_utc, message
    assert parse_reference_time(as_utc.group(1), NOW) == naive.replace(tzinfo=dt.UTC)
    own = re.search(r"otherwise add its own offset \(e\.g\. ([+-]\d\d:\d\d)\)", message)
    assert own, message
    with_offset = parse_reference_time(naive.isoformat() + own.group(1), NOW)
    assert with_offset == naive.replace(tzinfo=dt.timezone(dt.timedelta(hours=1)))


def test_a_time_without_offset_past_the_tolerance_is_refused_as_future():
    naive = (NOW + FUTURE_TOLERANCE + TICK).replace(tzinfo=None)
    with pytest.raises(ConfigError, match="read as UTC it is in the future"):
        parse_reference_time(naive.isoformat(), NOW)


@pytest.mark.parametrize(
    ("sign", "ahead"), [(1, "the worker's is ahead"), (-1, "the database's is ahead")]
)
def test_the_clock_refusal_says_which_clock_is_ahead_and_by_how_much(sign, ahead):
    skew = CLOCK_SKEW_TOLERANCE + dt.timedelta(seconds=1)  # far less than a day
    with pytest.raises(ConfigError) as refused:
        check_clocks(NOW + sign * skew, NOW)
    message = str(refused.value)
    assert f"({ahead})" in message
    assert f"differ by {skew}" in message
    assert f"more than {CLOCK_SKEW_TOLERANCE}" in message


# -- one second either side of each bound (through the job: e2e/test_run_outcomes_at_bounds.py)


def test_the_tolerances_are_five_minutes():
    assert FUTURE_TOLERANCE == MINUTES_5 and CLOCK_SKEW_TOLERANCE == MINUTES_5


def test_a_reference_time_exactly_five_minutes_ahead_is_accepted_one_second_more_refused():
    assert parse_reference_time((NOW + MINUTES_5).isoformat(), NOW) == NOW + MINUTES_5
    with pytest.raises(ConfigError, match="in the future"):
        parse_reference_time((NOW + MINUTES_5 + SECOND).isoformat(), NOW)


@pytest.mark.parametrize("sign", [1, -1])
def test_clocks_exactly_five_minutes_apart_pass_one_second_more_stops(sign):
    check_clocks(NOW, NOW + sign * MINUTES_5)
    with pytest.raises(ConfigError, match="differ by"):
        check_clocks(NOW, NOW + sign * (MINUTES_5 + SECOND))


def test_the_smallest_bounds_are_accepted_and_one_step_below_refused():
    one_second = 1 / 86400
    policy = make_policy(reference_time=None, retention_days=one_second, max_deletions=0, now=NOW)
    assert policy.cutoff == NOW - SECOND and policy.max_deletions == 0
    with pytest.raises(ConfigError, match="retention_days must be greater than 0"):
        make_policy(reference_time=None, retention_days=0, max_deletions=0, now=NOW)
    with pytest.raises(ConfigError, match="max_deletions must be 0 or more"):
        make_policy(reference_time=None, retention_days=7, max_deletions=-1, now=NOW)
