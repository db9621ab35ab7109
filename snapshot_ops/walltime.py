"""Wall times: naive times as read on a clock in some time zone, and the instants they denote.

A naive time (PostgreSQL `timestamp without time zone`, ISO 8601 text without an offset)
says what a clock showed, not which instant it was: `2026-11-30 09:00` is 14:00 UTC in New
York and 08:00 UTC in Berlin. The job reads and writes one only together with the zone of
that clock (the database resource's `naive_time_zone`, see snapshot_ops.naivezone).

Daylight-saving time makes the mapping from a wall time to an instant ambiguous twice a
year (PEP 495 names the two readings with `fold`):

- in a fall-back *fold* (New York, 2026-11-01: the clock goes from 01:59:59 EDT back to
  01:00 EST) a wall time such as 01:30 denotes two instants, an hour apart;
- in a spring-forward *gap* (New York, 2026-03-08: from 01:59:59 EST to 03:00 EDT) a wall
  time such as 02:30 is shown by no clock; read with the offset before and after the
  change it gives two instants, an hour apart.

The retention rule deletes a row only if it is sure the row is old enough, so a naive value
is expired only if EVERY instant it can denote is before the cutoff: its latest reading
(`readings`). `wall_bound` gives the smallest wall time whose latest reading is not before
the cutoff, so that `value < bound` on the stored column never selects a value with a
reading at or after the cutoff. The latest reading does not grow with the wall time just
after a gap (02:59 reads as late as 07:59 UTC, 03:00 EDT as 07:00 UTC), so there the bound
is the first wall time of the gap's late readings and the values after the gap that are
already expired wait, at most the size of the change (an hour), for the next cutoff: a DST
edge can delay a delete, never bring one forward.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

#: The westernmost zone's offset (UTC-12, Baker Island) and the easternmost (UTC+14,
#: Kiribati's Line Islands): two clocks, in any two zones, never show times further apart
#: than WIDEST_OFFSET_SPAN.
WESTMOST_OFFSET = dt.timedelta(hours=-12)
EASTMOST_OFFSET = dt.timedelta(hours=14)
WIDEST_OFFSET_SPAN = EASTMOST_OFFSET - WESTMOST_OFFSET
#: Zones change their offsets in steps of 15 minutes at least (today's offsets are whole
#: multiples of it), so a time written "now" in some zone is now plus such a multiple.
OFFSET_STEP = dt.timedelta(minutes=15)
_SECOND = dt.timedelta(seconds=1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def named_zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA zone `name` (e.g. "America/New_York", "UTC"), from the system's time zone
    database or the tzdata package. Raises LookupError when there is none by that name."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        # OSError: a folder of the database ("America"); ValueError: a path or not TZif.
        raise LookupError(f"{name!r} is not an IANA time zone name") from exc


def zone_label(zone: dt.tzinfo) -> str:
    """A zone's name for messages: its IANA key, or "UTC+05:45" for a fixed offset."""
    key = getattr(zone, "key", None)
    if key:
        return str(key)
    offset = zone.utcoffset(None)
    return "UTC" if not offset else f"UTC{format_offset(offset)}"


def format_offset(offset: dt.timedelta) -> str:
    """`+05:45`, `-04:00`: an offset from UTC as ISO 8601 writes it (whole minutes)."""
    sign = "-" if offset < dt.timedelta(0) else "+"
    minutes = abs(offset) // dt.timedelta(minutes=1)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def wall_time(instant: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """What a clock in `zone` shows at `instant` (aware), as a naive datetime: how an
    application in that zone writes the instant into a naive column."""
    if instant.tzinfo is None:
        raise ValueError("instant must be timezone-aware")
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def readings(wall: dt.datetime, zone: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    """The earliest and the latest instant (aware, UTC) the naive `wall` can denote in
    `zone`: equal except in a fold (the two times the clock showed it) or a gap (read with
    the offsets before and after the change)."""
    if wall.tzinfo is not None:
        raise ValueError("wall must be naive")
    first, second = (wall.replace(tzinfo=zone, fold=fold).astimezone(dt.UTC) for fold in (0, 1))
    return min(first, second), max(first, second)


@dataclass(frozen=True)
class OffsetChange:
    """A zone's change of UTC offset at instant `at` (aware, UTC), from `before` to
    `after`: a fall-back (a fold of wall times) when `after < before`, else a
    spring-forward (a gap)."""

    at: dt.datetime
    before: dt.timedelta
    after: dt.timedelta


def offset_changes(zone: dt.tzinfo, start: dt.datetime, end: dt.datetime) -> list[OffsetChange]:
    """The changes of `zone`'s UTC offset between the instants `start` and `end`, oldest
    first, each at its exact second (the time zone database gives changes to the second).

    Found by looking at the offset every hour and bisecting where it differs: zones change
    their offset a few times a year at most, never twice within an hour.
    """
    if isinstance(zone, dt.timezone):  # a fixed offset (UTC included) never changes
        return []
    changes = []
    here = start
    offset = utc_offset(zone, here)
    while here < end:
        there = min(here + dt.timedelta(hours=1), end)
        later = utc_offset(zone, there)
        if later != offset:
            low, high = _seconds(here), _seconds(there)  # offset(low) before, (high) after
            while high - low > 1:
                middle = (low + high) // 2
                if utc_offset(zone, _EPOCH + middle * _SECOND) == offset:
                    low = middle
                else:
                    high = middle
            changes.append(OffsetChange(_EPOCH + high * _SECOND, offset, later))
        here, offset = there, later
    return changes


def wall_bound(cutoff: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """The smallest naive wall time whose latest reading in `zone` is not before `cutoff`
    (aware): a naive value v stored in `zone` is expired (every instant it can denote is
    before `cutoff`) whenever `v < wall_bound(cutoff, zone)`.

    Outside DST edges this is the cutoff's own wall time, and the comparison is exact. A
    fold ending after the cutoff moves the bound back to the fold's first wall time (its
    values may denote the later instant); a gap whose late readings reach the cutoff moves
    it back to the wall time that reads as the cutoff with the offset before the change.
    Values after such a gap that are expired are then kept one run longer (see the module
    docstring): a delete is delayed by at most the size of the change, never advanced.
    """
    bound = wall_time(cutoff, zone)
    for change in offset_changes(zone, cutoff - WIDEST_OFFSET_SPAN, cutoff + WIDEST_OFFSET_SPAN):
        if change.after < change.before:
            # Fall back: wall times [at + after, at + before) are read twice; the latest
            # reading of the fold's first wall time is `at`, not before a cutoff before it.
            if change.at > cutoff:
                bound = min(bound, wall_time(change.at, dt.timezone(change.after)))
        elif cutoff - change.at < change.after - change.before:
            # Spring forward: wall times [at + before, at + after) are shown by no clock;
            # each one's latest reading is with the offset before the change, which is at
            # or after the cutoff from the cutoff's own wall time with that offset on.
            start = max(change.at, cutoff)
            bound = min(bound, wall_time(start, dt.timezone(change.before)))
    return bound


def same_offsets(first: dt.tzinfo, second: dt.tzinfo, around: dt.datetime) -> bool:
    """Whether two zones give the same UTC offset at `around` (aware) and in mid-January
    and mid-July of its year: the same clock now, and both or neither keep summer time
    (e.g. "Etc/UTC" and "UTC", or "Europe/Paris" and "Europe/Berlin", but not "UTC" and
    "Europe/London")."""
    year = around.astimezone(dt.UTC).year
    instants = [
        around,
        dt.datetime(year, 1, 15, 12, tzinfo=dt.UTC),
        dt.datetime(year, 7, 15, 12, tzinfo=dt.UTC),
    ]
    return all(utc_offset(first, t) == utc_offset(second, t) for t in instants)


def offset_of_now(
    wall: dt.datetime, now: dt.datetime, tolerance: dt.timedelta
) -> dt.timedelta | None:
    """The UTC offset of a clock that shows the naive `wall` at the instant `now`, when
    `wall` is within `tolerance` of `now` plus a whole number of OFFSET_STEPs between
    WESTMOST_OFFSET and EASTMOST_OFFSET; else None (`wall` is not a reading of "now")."""
    lag = wall - wall_time(now, dt.UTC)
    steps = round(lag / OFFSET_STEP)
    offset = steps * OFFSET_STEP
    if abs(lag - offset) > tolerance or not WESTMOST_OFFSET <= offset <= EASTMOST_OFFSET:
        return None
    return offset


def utc_offset(zone: dt.tzinfo, instant: dt.datetime) -> dt.timedelta:
    """`zone`'s offset from UTC at `instant` (aware)."""
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


def _seconds(instant: dt.datetime) -> int:
    return (instant - _EPOCH) // _SECOND
