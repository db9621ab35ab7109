"""How the application stores "createdAt" and "deletedAt", checked before anything compares them.

The rule `"createdAt" < cutoff` is only as right as the cutoff's encoding. Applications
store time in several representations, and a comparison across two of them is silently
wrong: in SQLite an integer sorts before every text, so with Prisma's epoch milliseconds
(`1764000000000`) against a text cutoff every row would look expired. So the job first
finds out how the column stores time and then writes its cutoff, and "deletedAt", in
exactly that representation. The representations (`time_format` of the database
resource; `auto` detects them):

- `timestamp`: PostgreSQL's `timestamp with time zone`, or `timestamp without time zone`
  holding wall time (UTC in Prisma's default). Told by the column type alone.
- `iso_text`: ISO 8601 text, `YYYY-MM-DD` then `T` or a space then `HH:MM:SS`, an optional
  fraction and an optional offset (`Z`, `+02:00`; none means wall time). SQLite's usual
  form, and what SQLAlchemy and most ORMs write there.
- `epoch_seconds`, `epoch_milliseconds`: numbers since 1970-01-01 UTC.

A naive value (a `timestamp without time zone`, text without an offset) is wall time in a
zone the data does not name: the format's `zone`, which snapshot_ops.naivezone settles from
the database resource's `naive_time_zone` and checks against the database before any
comparison. It is compared and written as wall time in that zone (snapshot_ops.walltime:
a value is older than the cutoff only if every instant it can denote around a
daylight-saving change is).

Detection reads the column type and, unless it is a native timestamp, the live rows the
rule can select (on SQLite by `typeof()`, which tells what each value really is whatever
the column's declared type). Anything it cannot read for sure raises TimeFormatError before
the run touches anything: two representations in one column, text that is not ISO 8601,
numbers whose magnitude fits neither unit, or text whose offsets vary.

The comparison stays a plain `"createdAt" < :bound` on the column, so the expiry index
serves it. It is exact for each representation this module accepts:

- native timestamps and numbers compare as values (`bound` of a whole-number column is
  the cutoff rounded up: for an integer v, v < c exactly when v < ceil(c)); a naive bound is
  walltime.wall_bound, exact outside DST edges and never early at them;
- ISO text compares as text (byte order: SQLite's BINARY, PostgreSQL's "C" collation),
  which is time order when every value has the same layout (one separator, one offset
  written the same way) and the bound is written in it. With a fixed fraction width the
  bound is the cutoff rounded up to that width. When the width varies (Python's
  `isoformat()` leaves out a zero fraction) the bound has the fewest digits that say the
  cutoff; that is exact only when what follows the fraction sorts before `.` and digits
  (nothing, `+` or `-`), so a varying width with a `Z` is refused rather than misread.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from snapshot_ops.errors import SnapshotOpsError
from snapshot_ops.walltime import readings, wall_bound, wall_time, zone_label

#: Values of the database resource's `time_format`.
TIME_FORMATS = ("auto", "timestamp", "iso_text", "epoch_seconds", "epoch_milliseconds")
#: Epoch numbers are accepted as seconds or milliseconds only between these instants
#: (2000-01-01 and 2100-01-01 UTC); outside, `auto` cannot tell the unit.
PLAUSIBLE_SECONDS = (946_684_800, 4_102_444_800)
_UNIT_US = {"epoch_seconds": 1_000_000, "epoch_milliseconds": 1_000}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NAIVE_EPOCH = dt.datetime(1970, 1, 1)
_US = dt.timedelta(microseconds=1)
#: A text value's digits masked with 9: `9999-99-99T99:99:99`, a fraction, the suffix.
_ISO_SHAPE = re.compile(r"^9999-99-99([T ])99:99:99(\.9+)?(.*)$")
_SUFFIX = re.compile(r"^(Z|[+-]\d\d(:?\d\d)?)?$")
#: At most this many distinct layouts are read; more means the column is not one format.
MAX_LAYOUTS = 20


class TimeFormatError(SnapshotOpsError):
    """A time column holds values the job cannot compare for sure; nothing was touched."""


@dataclass(frozen=True)
class TimeFormat:
    """One representation of instants in a column; `encode` writes it, `bound` compares.

    kind: "timestamp", "iso_text", "epoch_seconds" or "epoch_milliseconds".
    naive: timestamp only; True for `timestamp without time zone` (wall time in `zone`).
    separator, fraction_digits, suffix: iso_text only; fraction_digits None means the width
    varies (none for a whole second, else six digits, as Python's isoformat writes); no
    suffix means wall time in `zone`.
    whole_numbers: epoch only; every stored value is an integer.
    zone: the zone of naive values' wall time (see `is_naive`); set by `in_zone` once
    snapshot_ops.naivezone has settled it, UTC until then.
    """

    kind: str
    naive: bool = False
    separator: str = " "
    fraction_digits: int | None = 6
    suffix: str = ""
    whole_numbers: bool = True
    zone: dt.tzinfo = dt.UTC

    @property
    def is_naive(self) -> bool:
        """Whether values are wall times without a zone of their own: a `timestamp
        without time zone`, or ISO 8601 text without an offset."""
        if self.kind == "timestamp":
            return self.naive
        return self.kind == "iso_text" and not self.suffix

    def in_zone(self, zone: dt.tzinfo) -> TimeFormat:
        """This format with naive values read and written as wall time in `zone`; a
        format whose values carry their zone is returned as it is."""
        return replace(self, zone=zone) if self.is_naive else self

    def describe(self) -> str:
        """A short human description, e.g. for run metadata and error messages."""
        wall = f"wall time in {zone_label(self.zone)}"
        if self.kind == "timestamp":
            return f"timestamp without time zone ({wall})" if self.naive else "timestamptz"
        if self.kind == "iso_text":
            width = "varying" if self.fraction_digits is None else str(self.fraction_digits)
            return (
                f"iso_text (separator {self.separator!r}, fraction digits {width}, "
                f"offset {self.suffix or 'none: ' + wall})"
            )
        return self.kind + ("" if self.whole_numbers else " (with fractions)")

    @property
    def offset(self) -> dt.tzinfo:
        """The zone text values are written in (`zone` when they carry no offset)."""
        if not self.suffix:
            return self.zone
        parsed = dt.datetime.fromisoformat("2000-01-01T00:00:00" + self.suffix).tzinfo
        assert parsed is not None
        return parsed

    def encode(self, instant: dt.datetime) -> Any:
        """`instant` (aware) as the application would store it: how "deletedAt" is written
        (a naive value as the wall time in `zone`).

        Text and epoch values are truncated to the column's precision, like the
        application's own writes.
        """
        _require_aware(instant)
        if self.kind == "timestamp":
            return wall_time(instant, self.zone) if self.naive else instant.astimezone(dt.UTC)
        if self.kind == "iso_text":
            micros = _wall_micros(wall_time(instant, self.offset))
            if self.fraction_digits is None:
                return self._text(micros, f"{micros % 1_000_000:06d}" if micros % 10**6 else "")
            return self._text(micros, _digits(micros, self.fraction_digits))
        unit = _UNIT_US[self.kind]
        micros = _micros(instant)
        return micros // unit if self.whole_numbers else micros / unit

    def bound(self, instant: dt.datetime) -> Any:
        """The value `b` such that a stored value v is earlier than `instant` exactly when
        `v < b` in the database's own comparison (see the module docstring for why). For
        a naive value, "earlier" means every instant it can denote in `zone` is earlier,
        and `b` is exact outside daylight-saving changes and never later than that at them
        (walltime.wall_bound): a change can delay a delete, never advance one."""
        _require_aware(instant)
        if self.kind == "timestamp":
            return wall_bound(instant, self.zone) if self.naive else instant.astimezone(dt.UTC)
        if self.kind == "iso_text":
            # Text compares as wall time: in the fixed offset written in each value, or,
            # with none, in `zone` (where the bound is the wall-time bound).
            naive = self.is_naive
            wall = wall_bound(instant, self.zone) if naive else wall_time(instant, self.offset)
            micros = _wall_micros(wall)
            if self.fraction_digits is None:  # fewest digits that say the instant
                return self._text(micros, f"{micros % 1_000_000:06d}".rstrip("0"))
            step = 10 ** max(0, 6 - self.fraction_digits)
            up = -(-micros // step) * step  # rounded up to the stored precision
            return self._text(up, _digits(up, self.fraction_digits))
        micros = _micros(instant)
        unit = _UNIT_US[self.kind]
        if self.whole_numbers:
            return -(-micros // unit)  # ceil: v < c exactly when v < ceil(c) for integers
        return micros / unit

    def decode(self, value: Any) -> dt.datetime:
        """A stored value as an aware UTC datetime: a naive value's latest reading in
        `zone` (the one the retention rule goes by, see `bound`). Raises TimeFormatError
        if unreadable."""
        try:
            if self.kind == "timestamp":
                if not isinstance(value, dt.datetime):
                    raise TypeError(type(value).__name__)
                return self._instant(value)
            if self.kind == "iso_text":
                return self._instant(dt.datetime.fromisoformat(value))
            if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
                raise TypeError(type(value).__name__)
            micros = Decimal(value) * _UNIT_US[self.kind]
            return _EPOCH + int(micros.to_integral_value()) * _US
        except (TypeError, ValueError, OverflowError) as exc:
            raise TimeFormatError(f"{value!r} is not {self.describe()}") from exc

    def _instant(self, parsed: dt.datetime) -> dt.datetime:
        if parsed.tzinfo is None:
            return readings(parsed, self.zone)[1]
        return parsed.astimezone(dt.UTC)

    def _text(self, wall_micros: int, fraction: str) -> str:
        """The text of the wall time `wall_micros` (microseconds since 1970-01-01 00:00 on
        the same clock) with `fraction` after the seconds, in this layout."""
        local = _NAIVE_EPOCH + (wall_micros - wall_micros % 1_000_000) * _US
        text = f"{local:%Y-%m-%d}{self.separator}{local:%H:%M:%S}"
        return text + ("." + fraction if fraction else "") + self.suffix


#: What SQLAlchemy writes on SQLite: the format used when a text column has no rows yet.
SQLALCHEMY_TEXT = TimeFormat("iso_text", separator=" ", fraction_digits=6, suffix="")


@dataclass(frozen=True)
class ColumnTimes:
    """The checked representations of the two time columns of "SnapshotFiles"."""

    created: TimeFormat
    deleted: TimeFormat


def detect(
    conn: sa.Connection,
    column: sa.Column[Any],
    declared: sa.types.TypeEngine[Any],
    *,
    scope: sa.ColumnElement[bool],
    setting: str,
    where: str,
) -> TimeFormat:
    """Find how `column` stores instants, over the rows `scope` selects.

    `declared` is the column's reflected type (the column itself may carry a pass-through
    type). `setting` is the resource's `time_format`; other than `auto` it is checked
    against the data, never trusted blindly. `where` names the column in messages, e.g.
    '"createdAt" of "SnapshotFiles"'. Raises TimeFormatError when the values cannot be
    read for sure.
    """
    check_setting(setting)
    sqlite = conn.dialect.name == "sqlite"
    fix = _fix_hint(where)
    if not sqlite and isinstance(declared, sa.DateTime):
        native = TimeFormat("timestamp", naive=not getattr(declared, "timezone", False))
        if setting not in ("auto", "timestamp"):
            raise TimeFormatError(
                f"{where} is declared {declared}, a native timestamp, but time_format is "
                f"{setting!r}; nothing was touched. Set time_format to auto or timestamp."
            )
        return native
    if setting == "timestamp":
        raise TimeFormatError(
            f"{where} is declared {declared}, not a timestamp type, so time_format "
            f"'timestamp' cannot apply; nothing was touched. {fix}"
        )
    if not sqlite and not isinstance(declared, sa.Integer | sa.Numeric | sa.String):
        raise TimeFormatError(
            f"{where} has type {declared}, which the job cannot compare with a time; "
            "nothing was touched. Supported: timestamp, timestamptz, integer epoch seconds "
            "or milliseconds, ISO 8601 text."
        )
    groups = _layouts(conn, column, declared, scope)
    if not groups:
        return _empty_default(declared, setting, sqlite)
    kinds = {g.kind for g in groups}
    if kinds - {"integer", "real", "text"}:
        odd = next(g for g in groups if g.kind not in ("integer", "real", "text"))
        raise TimeFormatError(
            f"{where} holds {odd.kind} values, e.g. {odd.low!r}, which the job cannot read "
            f"as a time; nothing was touched. {fix}"
        )
    if "text" in kinds and kinds & {"integer", "real"}:
        text = next(g for g in groups if g.kind == "text")
        number = next(g for g in groups if g.kind != "text")
        raise TimeFormatError(
            f"{where} mixes representations: text such as {text.low!r} ({text.count} rows) "
            f"and numbers such as {number.low!r} ({number.count} rows), which do not compare "
            "with each other; nothing was touched. No time_format setting can compare them: "
            "make the application's rows use one representation, then run again."
        )
    if "text" in kinds:
        return _text_format(groups, setting, where, fix)
    return _number_format(groups, setting, where, fix)


def check_setting(setting: str) -> None:
    """Refuse a `time_format` that is not one of TIME_FORMATS."""
    if setting not in TIME_FORMATS:
        raise TimeFormatError(
            f"time_format {setting!r} is not one of {', '.join(TIME_FORMATS)} (database resource)"
        )


@dataclass(frozen=True)
class _Layout:
    kind: str  # integer, real, text, blob
    shape: str | None  # text with digits masked as 9
    suffix: str | None  # text after the seconds and fraction
    count: int
    low: Any
    high: Any


def _layouts(
    conn: sa.Connection,
    column: sa.Column[Any],
    declared: sa.types.TypeEngine[Any],
    scope: sa.ColumnElement[bool],
) -> list[_Layout]:
    """The distinct layouts of the column's values in scope, with a count and samples each.

    One grouped statement: on SQLite by typeof() (what each value really is), on
    PostgreSQL by the column's type; text values are grouped by their digit-masked shape
    and the offset text that follows the fraction.
    """
    if conn.dialect.name == "sqlite":
        kind: sa.ColumnElement[Any] = sa.func.typeof(column)
        masked: sa.ColumnElement[Any] = column
        for digit in "012345678":
            masked = sa.func.replace(masked, digit, "9")
    else:
        kind = sa.literal("text" if isinstance(declared, sa.String) else "number")
        if isinstance(declared, sa.Integer):
            kind = sa.literal("integer")
        elif isinstance(declared, sa.Numeric):
            kind = sa.literal("real")
        masked = sa.func.regexp_replace(sa.cast(column, sa.Text), "[0-9]", "9", "g")
    is_text = kind == "text"
    shape = sa.case((is_text, masked), else_=None)
    suffix = sa.case(
        (is_text, sa.func.ltrim(sa.func.substr(sa.cast(column, sa.Text), 20), ".0123456789")),
        else_=None,
    )
    rows = conn.execute(
        sa.select(
            kind.label("kind"),
            shape.label("shape"),
            suffix.label("suffix"),
            sa.func.count(),
            sa.func.min(column),
            sa.func.max(column),
        )
        .where(scope, column.is_not(None))
        # By position: on PostgreSQL the expressions' bound values would otherwise make the
        # GROUP BY items differ from the selected ones.
        .group_by(sa.text("1"), sa.text("2"), sa.text("3"))
        .limit(MAX_LAYOUTS + 1)
    ).all()
    return [_Layout(*row) for row in rows]


def _text_format(groups: list[_Layout], setting: str, where: str, fix: str) -> TimeFormat:
    if setting not in ("auto", "iso_text"):
        raise TimeFormatError(
            f"{where} holds text such as {groups[0].low!r}, but time_format is {setting!r}; "
            "nothing was touched. Set time_format to iso_text (or auto)."
        )
    separators, widths, suffixes = set(), set(), set()
    for group in groups:
        match = _ISO_SHAPE.match(group.shape or "")
        ok = match is not None and _SUFFIX.match(group.suffix or "") is not None
        if ok:
            try:
                dt.datetime.fromisoformat(group.low)
                dt.datetime.fromisoformat(group.high)
            except ValueError:
                ok = False
        if not ok or match is None:
            raise TimeFormatError(
                f"{where} holds text that is not an ISO 8601 time, e.g. {group.low!r} "
                f"({group.count} rows); nothing was touched. Accepted: "
                "YYYY-MM-DD[T| ]HH:MM:SS[.fraction][Z|+HH:MM] (time_format iso_text). Fix "
                "those rows; numbers written as text must be stored as numbers "
                "(time_format epoch_seconds or epoch_milliseconds)."
            )
        separators.add(match.group(1))
        widths.add(len(match.group(2) or ".") - 1)
        suffixes.add(group.suffix or "")
    sample = groups[0].low
    if len(separators) > 1:
        raise TimeFormatError(
            f"{where} mixes 'T' and ' ' between date and time (e.g. {sample!r}), which do not "
            "sort together as text; nothing was touched. No time_format setting can compare "
            "them: make the rows use one layout."
        )
    if len(suffixes) > 1:
        raise TimeFormatError(
            f"{where} holds times with varying offsets ({', '.join(map(repr, sorted(suffixes)))}; "
            f"e.g. {sample!r}), which cannot be compared as text; nothing was touched. "
            "No time_format setting can compare them: make the application write one offset "
            "(e.g. always UTC)."
        )
    [suffix] = suffixes
    if len(widths) > 1 and suffix[:1] not in ("", "+", "-"):
        raise TimeFormatError(
            f"{where} holds times whose fraction width varies before {suffix!r} (e.g. "
            f"{sample!r}): such text does not sort in time order; nothing was touched. "
            "No time_format setting can compare them: make the application write a fixed "
            "number of fraction digits."
        )
    return TimeFormat(
        "iso_text",
        separator=separators.pop(),
        fraction_digits=widths.pop() if len(widths) == 1 else None,
        suffix=suffix,
    )


def _number_format(groups: list[_Layout], setting: str, where: str, fix: str) -> TimeFormat:
    low = min(g.low for g in groups)
    high = max(g.high for g in groups)
    whole = all(g.kind == "integer" for g in groups)
    if setting == "iso_text":
        raise TimeFormatError(
            f"{where} holds numbers such as {low!r}, but time_format is 'iso_text'; nothing "
            f"was touched. {fix}"
        )
    if setting in _UNIT_US:
        return TimeFormat(setting, whole_numbers=whole)
    first, last = PLAUSIBLE_SECONDS
    for unit, scale in (("epoch_seconds", 1), ("epoch_milliseconds", 1000)):
        if first * scale <= low and high <= last * scale:
            return TimeFormat(unit, whole_numbers=whole)
    odd = low if not (first <= low <= last or first * 1000 <= low <= last * 1000) else high
    raise TimeFormatError(
        f"{where} holds numbers from {low!r} to {high!r}; {odd!r} is neither epoch seconds "
        "nor epoch milliseconds between 2000 and 2100, so the unit is not certain; nothing "
        f"was touched. {fix}"
    )


def _empty_default(declared: Any, setting: str, sqlite: bool) -> TimeFormat:
    """Nothing in scope to compare yet: the setting, or a format that cannot misjudge.

    For a numeric column, seconds: a millisecond value is never below a seconds bound, so a
    row written between this check and the next cannot be taken for expired.
    """
    if setting in _UNIT_US:
        return TimeFormat(setting)
    if setting == "iso_text" or sqlite or isinstance(declared, sa.String):
        return SQLALCHEMY_TEXT
    return TimeFormat("epoch_seconds")


def _fix_hint(where: str) -> str:
    return (
        f"If you know how {where} stores time, set time_format on the database resource "
        "(SNAPSHOT_OPS_TIME_FORMAT): one of iso_text, epoch_seconds, epoch_milliseconds."
    )


def _require_aware(instant: dt.datetime) -> None:
    if instant.tzinfo is None:
        raise ValueError("instant must be timezone-aware")


def _micros(instant: dt.datetime) -> int:
    """Exact microseconds since 1970-01-01 UTC."""
    return (instant - _EPOCH) // _US


def _wall_micros(wall: dt.datetime) -> int:
    """Exact microseconds of a naive wall time since 1970-01-01 00:00 on the same clock."""
    return (wall - _NAIVE_EPOCH) // _US


def _digits(micros: int, width: int) -> str:
    """The first `width` fraction digits of the second `micros` falls in."""
    return (f"{micros % 1_000_000:06d}" + "0" * max(0, width - 6))[:width]
