"""The retention policy as pure functions: the cutoff, and the config that is refused."""

from __future__ import annotations

import datetime as dt

import pytest

from snapshot_ops.errors import ConfigError
from snapshot_ops.rules import (
    PERMANENT_TYPE,
    TEMPORARY_TYPE,
    is_expired_temporary,
    make_policy,
    parse_reference_time,
)

NOW = dt.datetime(2026, 11, 29, 3, 0, tzinfo=dt.UTC)


def test_cutoff_is_reference_time_minus_retention():
    policy = make_policy(
        reference_time="2026-11-20T03:00:00+01:00", retention_days=7, max_deletions=10, now=NOW
    )
    assert policy.reference_time == dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)
    assert policy.cutoff == dt.datetime(2026, 11, 13, 2, 0, tzinfo=dt.UTC)


def test_reference_time_defaults_to_now():
    assert make_policy(reference_time=None, retention_days=7, max_deletions=1, now=NOW).cutoff == (
        NOW - dt.timedelta(days=7)
    )


@pytest.mark.parametrize("days", [0, -1, -0.5])
def test_retention_must_be_positive(days):
    with pytest.raises(ConfigError, match="retention_days must be greater than 0"):
        make_policy(reference_time=None, retention_days=days, max_deletions=1, now=NOW)


def test_negative_cap_is_refused():
    with pytest.raises(ConfigError, match="max_deletions"):
        make_policy(reference_time=None, retention_days=7, max_deletions=-1, now=NOW)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2026-11-20T03:00:00", "no UTC offset"),
        ("yesterday", "not an ISO 8601 time"),
        ("2026-12-01T00:00:00+00:00", "in the future"),
    ],
)
def test_bad_reference_times_are_refused(value, message):
    with pytest.raises(ConfigError, match=message):
        parse_reference_time(value, NOW)


def test_a_few_minutes_of_clock_skew_is_tolerated():
    assert parse_reference_time("2026-11-29T03:04:00+00:00", NOW) > NOW


@pytest.mark.parametrize(
    ("snapshot_type", "age_days", "deleted", "linked", "expected"),
    [
        (TEMPORARY_TYPE, 8, False, False, True),
        (TEMPORARY_TYPE, 7, False, False, False),  # exactly at the cutoff: not older
        (TEMPORARY_TYPE, 8, True, False, False),
        (TEMPORARY_TYPE, 8, False, True, False),
        (PERMANENT_TYPE, 800, False, False, False),
        ("parsesessionsnapshot", 8, False, False, False),  # exact match only
    ],
)
def test_is_expired_temporary(snapshot_type, age_days, deleted, linked, expected):
    assert (
        is_expired_temporary(
            snapshot_type=snapshot_type,
            created_at=NOW - dt.timedelta(days=age_days),
            deleted_at=NOW if deleted else None,
            linked=linked,
            cutoff=NOW - dt.timedelta(days=7),
        )
        is expected
    )
