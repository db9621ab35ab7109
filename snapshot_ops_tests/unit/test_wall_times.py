"""Naive wall times in a zone (snapshot_ops.walltime, and TimeFormat's naive formats).

Pinned down here:
- A naive value is expired only if every instant it can denote is before the cutoff: in a
  fall-back fold its later reading, in a spring-forward gap both readings. At the New York
  fold and gap of 2026 the edges are exact to the microsecond.
- Around every offset change of several zones (an hour, half an hour, a whole day skipped),
  for cutoffs and stored values on a grid: the bound never selects a value with a reading at
  or after the cutoff, and it selects every value whose readings are all older than the
  cutoff by more than the change: a DST edge delays a delete by at most the change, never
  advances one.
- Changes are found to the second; zones compare by their offsets now and in both seasons;
  an evaluated default is a reading of "now" at an offset only within a minute of one.
- Naive timestamps and ISO text are encoded, bounded and decoded as wall time in the zone.
- `naive_time_zone` accepts auto, database and IANA names only, and says which setting;
  `unused_column_defaults` names only "createdAt" and "deletedAt".
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from snapshot_ops.naivezone import check_naive_time_zone, check_unused_column_defaults
from snapshot_ops.timeformat import TimeFormat, TimeFormatError
from snapshot_ops.walltime import (
    OffsetChange,
    format_offset,
    offset_changes,
    offset_of_now,
    readings,
    same_offsets,
    wall_bound,
    wall_time,
    zone_label,
)

UTC = dt.UTC
US = dt.timedelta(microseconds=1)
HOUR = dt.timedelta(hours=1)
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def expired(wall: dt.datetime, zone: dt.tzinfo, cutoff: dt.datetime) -> bool:
    """The rule for one naive value: every instant it can denote is before the cutoff."""
    return readings(wall, zone)[1] < cutoff


# -- New York, 2026: the fold and the gap, exactly ------------------------------------------


def test_a_value_in_the_fold_goes_by_its_later_reading():
    # 2026-11-01: 01:59:59 EDT (05:59:59Z) is followed by 01:00 EST (06:00Z), so 01:30 was
    # shown at 05:30Z and again at 06:30Z.
    fold = dt.datetime(2026, 11, 1, 1, 30)
    assert readings(fold, NEW_YORK) == (utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30))
    assert all(reading.tzinfo is UTC for reading in readings(fold, NEW_YORK))
    assert not expired(fold, NEW_YORK, utc(2026, 11, 1, 6, 30))
    assert expired(fold, NEW_YORK, utc(2026, 11, 1, 6, 30) + US)
    # The bound agrees at that edge, on both sides.
    assert not fold < wall_bound(utc(2026, 11, 1, 6, 30), NEW_YORK)
    assert fold < wall_bound(utc(2026, 11, 1, 6, 30) + US, NEW_YORK)


def test_a_cutoff_in_the_first_pass_of_the_fold_keeps_the_whole_fold():
    # At 05:30Z (01:30 EDT) every wall time from 01:00 may still denote an instant after
    # the cutoff (its EST reading), so the bound is the fold's first wall time, not 01:30.
    bound = wall_bound(utc(2026, 11, 1, 5, 30), NEW_YORK)
    assert bound == dt.datetime(2026, 11, 1, 1, 0)
    assert expired(bound - US, NEW_YORK, utc(2026, 11, 1, 5, 30))  # 00:59:59.999999 EDT
    assert not expired(bound, NEW_YORK, utc(2026, 11, 1, 5, 30))


def test_a_value_in_the_gap_goes_only_when_both_readings_are_old():
    # 2026-03-08: 01:59:59 EST (06:59:59Z) is followed by 03:00 EDT (07:00Z); 02:30 was
    # never shown, and reads as 06:30Z (EDT) or 07:30Z (EST).
    gap = dt.datetime(2026, 3, 8, 2, 30)
    assert readings(gap, NEW_YORK) == (utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 30))
    for cutoff in (utc(2026, 3, 8, 6, 30) + US, utc(2026, 3, 8, 7, 30)):
        assert not expired(gap, NEW_YORK, cutoff)
        assert not gap < wall_bound(cutoff, NEW_YORK)
    assert expired(gap, NEW_YORK, utc(2026, 3, 8, 7, 30) + US)
    assert gap < wall_bound(utc(2026, 3, 8, 7, 30) + US, NEW_YORK)


def test_the_gap_moves_the_bound_only_while_its_late_readings_reach_the_cutoff():
    # The gap's wall times [02:00, 03:00) read as late as [07:00Z, 08:00Z): a cutoff in
    # there bounds at the wall time reading as the cutoff with EST; from 08:00Z on, the
    # whole gap is older, and the bound is the cutoff's own wall time (EDT).
    assert wall_bound(utc(2026, 3, 8, 7, 0), NEW_YORK) == dt.datetime(2026, 3, 8, 2, 0)
    assert wall_bound(utc(2026, 3, 8, 8, 0) - US, NEW_YORK) == dt.datetime(
        2026, 3, 8, 2, 59, 59, 999_999
    )
    assert wall_bound(utc(2026, 3, 8, 8, 0), NEW_YORK) == dt.datetime(2026, 3, 8, 4, 0)
    assert wall_bound(utc(2026, 3, 8, 7, 0) - US, NEW_YORK) == dt.datetime(
        2026, 3, 8, 1, 59, 59, 999_999
    )


def test_the_fold_moves_the_bound_only_before_the_clock_goes_back():
    # From 06:00Z (the change itself) the cutoff's own wall time is in EST, after it.
    assert wall_bound(utc(2026, 11, 1, 6, 0) - US, NEW_YORK) == dt.datetime(2026, 11, 1, 1, 0)
    assert wall_bound(utc(2026, 11, 1, 6, 0), NEW_YORK) == dt.datetime(2026, 11, 1, 1, 0)
    assert wall_bound(utc(2026, 11, 1, 6, 0) + US, NEW_YORK) == dt.datetime(2026, 11, 1, 1, 0, 0, 1)


def test_after_the_gap_an_expired_value_waits_at_most_the_change():
    # At 07:30Z, 03:15 EDT (07:15Z) is expired, but 02:45 (read as late as 07:45Z) is not:
    # one comparison cannot split them, so the bound stops at 02:30 and 03:15 waits until
    # a cutoff after 08:00Z (one hour, the size of the change) selects it.
    cutoff = utc(2026, 3, 8, 7, 30)
    after_gap = dt.datetime(2026, 3, 8, 3, 15)
    assert expired(after_gap, NEW_YORK, cutoff)
    assert wall_bound(cutoff, NEW_YORK) == dt.datetime(2026, 3, 8, 2, 30)
    assert not after_gap < wall_bound(cutoff, NEW_YORK)
    assert after_gap < wall_bound(utc(2026, 3, 8, 8, 0) + US, NEW_YORK)


def test_outside_the_changes_the_bound_is_the_cutoffs_wall_time():
    cutoff = utc(2026, 11, 13, 3, 0, 0, 500_000)
    assert wall_bound(cutoff, NEW_YORK) == dt.datetime(2026, 11, 12, 22, 0, 0, 500_000)
    assert wall_bound(cutoff, UTC) == dt.datetime(2026, 11, 13, 3, 0, 0, 500_000)
    assert wall_time(cutoff, NEW_YORK) == dt.datetime(2026, 11, 12, 22, 0, 0, 500_000)


# -- every change of several zones, on a grid -----------------------------------------------

#: zone, an instant near one of its changes, the grid step (the change's size divides it)
CHANGES = [
    ("America/New_York", utc(2026, 11, 1, 6), 15),  # fall back an hour
    ("America/New_York", utc(2026, 3, 8, 7), 15),  # spring forward an hour
    ("Europe/Berlin", utc(2026, 3, 29, 1), 15),
    ("Europe/Berlin", utc(2026, 10, 25, 1), 15),
    ("Australia/Lord_Howe", utc(2026, 4, 4, 15), 5),  # half an hour
    ("Australia/Lord_Howe", utc(2026, 10, 3, 15, 30), 5),
    ("Pacific/Apia", utc(2011, 12, 30, 10), 60),  # 2011-12-30 skipped: a gap of a day
]


@pytest.mark.parametrize(("name", "at", "step"), CHANGES, ids=lambda v: str(v))
def test_the_bound_never_advances_a_delete_and_delays_one_at_most_by_the_change(name, at, step):
    zone = zoneinfo.ZoneInfo(name)
    [change] = offset_changes(zone, at - 2 * HOUR, at + 2 * HOUR)
    size = abs(change.after - change.before)
    grid = dt.timedelta(minutes=step)
    span = size + 3 * HOUR
    first_wall = wall_time(at - span, UTC) - size - 15 * HOUR
    walls = [first_wall + k * grid for k in range(int((2 * span + size + 30 * HOUR) / grid))]
    for k in range(int(2 * span / grid)):
        for nudge in (-US, dt.timedelta(0), US):
            cutoff = at - span + k * grid + nudge
            bound = wall_bound(cutoff, zone)
            for wall in walls:
                latest = readings(wall, zone)[1]
                if wall < bound:  # never early: every reading is before the cutoff
                    assert latest < cutoff, (name, cutoff, wall)
                if latest < cutoff - size:  # never later than the change's size
                    assert wall < bound, (name, cutoff, wall)


def test_changes_are_found_to_the_second():
    # New York's fall-back of 2026: 06:00:00Z exactly, from -4 h to -5 h.
    found = offset_changes(NEW_YORK, utc(2026, 10, 30), utc(2026, 11, 3))
    assert found == [OffsetChange(utc(2026, 11, 1, 6), -4 * HOUR, -5 * HOUR)]
    assert offset_changes(UTC, utc(2026, 1, 1), utc(2027, 1, 1)) == []
    assert offset_changes(zoneinfo.ZoneInfo("Asia/Kolkata"), utc(2026, 1, 1), utc(2026, 2, 1)) == []


def test_zones_compare_by_their_offsets_now_and_in_both_seasons():
    now = utc(2026, 12, 7)
    assert same_offsets(zoneinfo.ZoneInfo("Etc/UTC"), UTC, now)
    assert same_offsets(zoneinfo.ZoneInfo("Europe/Paris"), zoneinfo.ZoneInfo("Europe/Berlin"), now)
    # London is on UTC in December, but not in July.
    assert not same_offsets(zoneinfo.ZoneInfo("Europe/London"), UTC, now)
    assert not same_offsets(NEW_YORK, zoneinfo.ZoneInfo("America/Chicago"), now)


@pytest.mark.parametrize(
    ("wall", "offset"),
    [
        (dt.datetime(2026, 12, 7, 4, 25), dt.timedelta(0)),  # CURRENT_TIMESTAMP
        (dt.datetime(2026, 12, 7, 9, 55), dt.timedelta(hours=5, minutes=30)),  # Kolkata
        (dt.datetime(2026, 12, 6, 23, 25), dt.timedelta(hours=-5)),  # New York
        (dt.datetime(2026, 12, 7, 4, 26), dt.timedelta(0)),  # a minute late: still "now"
        (dt.datetime(2026, 12, 7, 4, 24), dt.timedelta(0)),
        (dt.datetime(2026, 12, 7, 18, 25), dt.timedelta(hours=14)),  # Kiribati
        (dt.datetime(2026, 12, 6, 16, 25), dt.timedelta(hours=-12)),
        (dt.datetime(2026, 12, 7, 4, 26, 0, 1), None),  # past the tolerance
        (dt.datetime(2026, 12, 7, 4, 32), None),  # between two offsets
        (dt.datetime(2026, 12, 7, 18, 40), None),  # east of every zone
        (dt.datetime(2026, 12, 6, 16, 10), None),  # west of every zone
        (dt.datetime(2000, 1, 1), None),  # a constant
    ],
)
def test_offset_of_now_finds_the_clock_that_shows_a_value_now(wall, offset):
    now = utc(2026, 12, 7, 4, 25)
    assert offset_of_now(wall, now, dt.timedelta(minutes=1)) == offset


def test_zones_are_named_by_their_key_or_their_offset():
    assert zone_label(NEW_YORK) == "America/New_York"
    assert zone_label(UTC) == "UTC"
    assert zone_label(dt.timezone(dt.timedelta(hours=5, minutes=45))) == "UTC+05:45"
    assert zone_label(dt.timezone(-dt.timedelta(hours=4, minutes=30))) == "UTC-04:30"
    assert format_offset(dt.timedelta(hours=14)) == "+14:00"


# -- the naive formats ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt",
    [
        TimeFormat("timestamp", naive=True, zone=NEW_YORK),
        TimeFormat("iso_text", fraction_digits=6, zone=NEW_YORK),
        TimeFormat("iso_text", separator="T", fraction_digits=3, zone=NEW_YORK),
        TimeFormat("iso_text", fraction_digits=None, zone=NEW_YORK),
    ],
    ids=lambda f: f.describe(),
)
def test_naive_formats_are_wall_time_in_their_zone(fmt):
    instant = utc(2026, 11, 20, 3, 0, 0, 123_456)
    stored = fmt.encode(instant)
    expected_wall = dt.datetime(2026, 11, 19, 22, 0, 0, 123_456)
    if fmt.kind == "timestamp":
        assert stored == expected_wall
    else:
        assert stored.startswith(f"2026-11-19{fmt.separator}22:00:00")
    assert fmt.decode(fmt.encode(utc(2026, 11, 20, 3))) == utc(2026, 11, 20, 3)
    # Exact at the cutoff, to the column's precision, away from the changes.
    base = utc(2026, 11, 13, 3)
    instants = [base + n * US for n in (-1_000_001, -1000, -1, 0, 1, 999, 1000, 1_000_000)]
    for cutoff in instants:
        bound = fmt.bound(cutoff)
        for value in instants:
            stored = fmt.encode(value)
            assert (stored < bound) == (fmt.decode(stored) < cutoff), (cutoff, value)


def test_a_naive_text_bound_in_the_fold_keeps_the_fold():
    fmt = TimeFormat("iso_text", separator=" ", fraction_digits=0, zone=NEW_YORK)
    assert fmt.bound(utc(2026, 11, 1, 5, 30)) == "2026-11-01 01:00:00"
    assert fmt.bound(utc(2026, 11, 1, 6, 30) + US) == "2026-11-01 01:30:01"  # rounded up
    assert fmt.describe().endswith("offset none: wall time in America/New_York)")


def test_in_zone_changes_only_naive_formats():
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    assert TimeFormat("timestamp", naive=True).in_zone(berlin).zone is berlin
    assert TimeFormat("iso_text").in_zone(berlin).zone is berlin
    assert TimeFormat("timestamp").in_zone(berlin).zone is UTC
    assert TimeFormat("iso_text", suffix="Z").in_zone(berlin).zone is UTC
    assert TimeFormat("epoch_seconds").in_zone(berlin).zone is UTC


# -- the setting ----------------------------------------------------------------------------


@pytest.mark.parametrize("good", ["auto", "database", "UTC", "Etc/UTC", "America/New_York"])
def test_naive_time_zone_accepts_auto_database_and_iana_names(good):
    check_naive_time_zone(good)


@pytest.mark.parametrize(
    "bad", ["utc", "America", "Amercia/New_York", "/etc/localtime", "+02:00", ""]
)
def test_naive_time_zone_refuses_anything_else_naming_the_setting(bad):
    with pytest.raises(TimeFormatError) as refused:
        check_naive_time_zone(bad)
    message = str(refused.value)
    assert f"naive_time_zone {bad!r}" in message
    assert "SNAPSHOT_OPS_NAIVE_TIME_ZONE" in message and "America/New_York" in message


@pytest.mark.parametrize("good", [(), ("createdAt",), ("createdAt", "deletedAt")])
def test_unused_column_defaults_accepts_the_two_time_columns(good):
    check_unused_column_defaults(good)


@pytest.mark.parametrize("bad", [("created_at",), ("createdAt", "*"), ("",)])
def test_unused_column_defaults_refuses_any_other_name_naming_the_setting(bad):
    with pytest.raises(TimeFormatError) as refused:
        check_unused_column_defaults(bad)
    message = str(refused.value)
    assert "unused_column_defaults" in message and "SNAPSHOT_OPS_UNUSED_COLUMN_DEFAULTS" in message
    assert "createdAt and deletedAt" in message
