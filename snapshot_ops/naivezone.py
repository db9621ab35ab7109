"""Which zone a naive time is the wall time of, settled before any naive value is compared
or written, or the run refuses to guess.

A naive "createdAt" or "deletedAt" (PostgreSQL `timestamp without time zone`, ISO 8601 text
without an offset) is the wall time of some clock. Read in the wrong zone, a New York
application's rows look five hours older than they are and go five hours early. The zone
is the database resource's `naive_time_zone` (SNAPSHOT_OPS_NAIVE_TIME_ZONE):

- `auto` (the default): UTC, the convention of most ORMs (Prisma, SQLAlchemy), but only
  when nothing says otherwise: the run refuses when the database's zone is not UTC, or
  cannot be read, or (PostgreSQL) the job's own session got another zone from the client
  (PGTZ in the worker's environment). So the default never guesses.
- `database`: the database's zone: PostgreSQL's `TimeZone` as the database gives it to its
  sessions (`ALTER DATABASE ... SET timezone`, else the server's), which is the zone
  `now()` writes a naive column in; SQLite has none of its own (its `'localtime'` is the
  local zone of the process using the file), so there it is the worker's local zone.
- an IANA name (`UTC`, `America/New_York`): the operator's statement.

Whatever the setting, the strong evidence is checked against it, and each disagreement is
named in one refusal (TimeFormatError: the column, a sample value read both ways as UTC
instants, the setting to change; nothing is touched):

- a column default that writes the current time (`now()`, `CURRENT_TIMESTAMP`,
  `LOCALTIMESTAMP`, `statement_timestamp()`, `timezone('utc', now())`; on SQLite
  `CURRENT_TIMESTAMP` or `datetime('now', 'localtime')`) in another zone. The default is
  not parsed: it is evaluated, in a read-only transaction that is rolled back, and compared
  with the database's clock. On PostgreSQL it is evaluated in two session zones, UTC and
  PROBE_ZONE: one that follows the session writes the wall time of the database's zone
  (the application's sessions get it); one that does not writes a fixed offset from UTC,
  which is compared at the current instant. A default that is not a reading of the clock
  (a constant, or one that cannot be evaluated) says nothing.
- a live row whose "createdAt" reads, in the setting's zone, as created in the future by
  more than CLOCK_SKEW_TOLERANCE: a clock east of the setting's wrote it. Values more than
  a day ahead (further than any two zones' clocks are apart) are bad data, not a zone's
  sign; the rule keeps them like any row not old enough.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import tzlocal
from sqlalchemy.engine import Connection

from snapshot_ops.rules import CLOCK_SKEW_TOLERANCE
from snapshot_ops.timeformat import TimeFormat, TimeFormatError
from snapshot_ops.walltime import (
    EASTMOST_OFFSET,
    OFFSET_STEP,
    WESTMOST_OFFSET,
    WIDEST_OFFSET_SPAN,
    named_zone,
    offset_of_now,
    readings,
    same_offsets,
    utc_offset,
    wall_time,
    zone_label,
)

AUTO = "auto"
DATABASE = "database"
SETTING = "naive_time_zone"
ENVIRONMENT_VARIABLE = "SNAPSHOT_OPS_NAIVE_TIME_ZONE"
#: How close an evaluated column default must come to the database's clock (in some zone)
#: to count as a reading of "now": well below the smallest offset between zones (15 min).
NOW_TOLERANCE = dt.timedelta(minutes=1)
#: The second session zone a PostgreSQL default is evaluated in: UTC+05:45 all year, so a
#: default that follows the session zone moves by exactly that.
PROBE_ZONE = "Asia/Kathmandu"
#: pg_settings.source of a TimeZone the job's own session did not get from the database
#: or the server, and what set it.
SESSION_SOURCES = {
    "client": "by the client (PGTZ in the worker's environment, or options in the URL)",
    "session": "by a SET in the session",
    "user": "for the job's role (ALTER ROLE ... SET timezone)",
    "database user": "for the job's role in this database (ALTER ROLE ... IN DATABASE)",
}


def check_naive_time_zone(setting: str) -> None:
    """Refuse a `naive_time_zone` that is not auto, database or an IANA zone name."""
    if setting in (AUTO, DATABASE):
        return
    try:
        named_zone(setting)
    except LookupError as exc:
        raise TimeFormatError(
            f"{SETTING} {setting!r} (database resource; {ENVIRONMENT_VARIABLE}) is not "
            f"{AUTO}, {DATABASE} or an IANA time zone name such as UTC or America/New_York"
        ) from exc


@dataclass(frozen=True)
class NaiveColumn:
    """A time column whose values are naive (TimeFormat.is_naive), to settle the zone of.

    where: the column for messages, e.g. '"createdAt" of "SnapshotFiles"'.
    column: the column as the job compares it (PostgreSQL text: in byte order).
    fmt: its representation. default: its default expression as the database keeps it.
    samples: the rows whose values show what the application writes; the newest is read.
    key: the rows' key ("fileId"), to name the sample's row.
    dated: check that no sample reads as created in the future ("createdAt"; its samples
    are the live rows the expiry index holds, so the newest is one index probe).
    """

    where: str
    column: sa.ColumnElement[Any]
    fmt: TimeFormat
    default: str | None
    samples: sa.ColumnElement[bool]
    key: sa.ColumnElement[Any]
    dated: bool = False


@dataclass(frozen=True)
class DatabaseZone:
    """The zone the database gives its sessions, and the job's own session's.

    name, zone: None when it cannot be read (`unknown`, why); zone also when the name is not
    an IANA zone Python knows. described: for messages. session, source: the job's own
    session's TimeZone and pg_settings.source (SQLite: the worker's zone, "worker").
    """

    name: str | None
    zone: dt.tzinfo | None
    described: str
    session: str
    source: str
    unknown: str = ""


@dataclass(frozen=True)
class Evidence:
    """One thing the database says about the zone of naive values that the setting's zone
    contradicts: `says` (a sentence part), the zone it points to (None: unknown) and its
    label, and the column whose newest value is read both ways (None: the first)."""

    says: str
    zone: dt.tzinfo | None
    label: str
    where: str | None = None


@dataclass(frozen=True)
class _Sample:
    raw: Any  # as stored
    wall: dt.datetime  # as a naive datetime
    key: Any  # its row's key

    def __str__(self) -> str:
        return f"{self.raw!s} (fileId {self.key!s})"


def settle_zone(
    connect: Callable[[], Connection],
    *,
    setting: str,
    columns: Sequence[NaiveColumn],
    sqlite: bool,
) -> dt.tzinfo:
    """The zone the naive `columns` hold wall time of, for `naive_time_zone` `setting`.

    Reads, in one read-only transaction that is rolled back, the database's clock and zone,
    each column's newest sample and its evaluated default (see the module docstring).
    Raises TimeFormatError naming every disagreement with a sample read both ways, or when
    `database` is asked for and the database's zone cannot be read.
    """
    check_naive_time_zone(setting)
    with connect() as conn, conn.begin() as transaction:
        if not sqlite:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        now = _database_now(conn, sqlite)
        database = _worker_zone() if sqlite else _postgres_zone(conn)
        zone, evidence = _setting_zone(setting, database, now)
        samples = {c.where: _newest(conn, c, now) for c in columns if c.dated}
        for column in columns:
            if column.default:
                evidence += _default_evidence(conn, column, zone, database, now, sqlite)
            sample = samples.get(column.where)
            if sample is not None:
                evidence += _future_evidence(column, sample, zone, database, now)
        refusal = None
        if evidence:
            # Samples of the other columns only now: they may take a scan (no index).
            for column in columns:
                if column.where not in samples:
                    samples[column.where] = _newest(conn, column, now)
            refusal = _refusal(setting, zone, columns, evidence, samples, now)
        transaction.rollback()
    if refusal is not None:
        raise TimeFormatError(refusal)
    return zone


# -- the database's zone --------------------------------------------------------------------


def _postgres_zone(conn: Connection) -> DatabaseZone:
    session, source = conn.exec_driver_sql(
        "SELECT setting, source FROM pg_settings WHERE name = 'TimeZone'"
    ).one()
    if source not in SESSION_SOURCES:  # the session has the database's (or server's) zone
        return _named(session, f"the database's TimeZone {session!r}", session, source)
    # The session's zone came from elsewhere; the database's own, if it sets one, is
    # readable by any role. The server's (postgresql.conf) is not, without privileges.
    configs = conn.exec_driver_sql(
        "SELECT s.setconfig FROM pg_db_role_setting s "
        "JOIN pg_database d ON d.oid = s.setdatabase "
        "WHERE d.datname = current_database() AND s.setrole = 0"
    ).scalars()
    for entry in (e for config in configs for e in config or ()):
        key, _, value = entry.partition("=")
        if key.lower() == "timezone":
            return _named(value, f"the database's TimeZone {value!r}", session, source)
    return DatabaseZone(
        None,
        None,
        "the database's TimeZone",
        session,
        source,
        unknown=(
            f"the job's session has TimeZone {session!r}, set {SESSION_SOURCES[source]}, and "
            "the database sets none of its own (ALTER DATABASE ... SET timezone), so its "
            "sessions get the server's, which this role cannot read"
        ),
    )


def _worker_zone() -> DatabaseZone:
    described = (
        "this worker's local zone {!r} (SQLite has no zone of its own; its 'localtime' is "
        "the local zone of the process that opens the file)"
    )
    try:
        zone = tzlocal.reload_localzone()
    except (LookupError, ValueError, OSError) as exc:
        return DatabaseZone(
            None, None, described.format("?"), "?", "worker", unknown=f"it is unknown: {exc}"
        )
    name = zone_label(zone)
    return DatabaseZone(name, zone, described.format(name), name, "worker")


def _named(name: str, described: str, session: str, source: str) -> DatabaseZone:
    try:
        return DatabaseZone(name, named_zone(name), described, session, source)
    except LookupError:
        return DatabaseZone(
            name, None, described, session, source, unknown=f"{name!r} is not an IANA zone name"
        )


def _setting_zone(
    setting: str, database: DatabaseZone, now: dt.datetime
) -> tuple[dt.tzinfo, list[Evidence]]:
    """The setting's zone, and (for auto) what says it is not UTC."""
    if setting == DATABASE:
        if database.zone is None:
            raise TimeFormatError(
                f"{SETTING} is {DATABASE!r}, but the database's zone cannot be read: "
                f"{database.unknown}; nothing was touched. Set {SETTING} on the database "
                f"resource ({ENVIRONMENT_VARIABLE}) to the IANA name of the zone the "
                "application writes naive times in, or give the database its zone."
            )
        return database.zone, []
    if setting != AUTO:
        return named_zone(setting), []
    evidence = []
    if database.zone is None:
        evidence.append(
            Evidence(f"the database's zone cannot be read: {database.unknown}", None, "")
        )
    elif not same_offsets(database.zone, dt.UTC, now):
        evidence.append(
            Evidence(f"{database.described} is not UTC", database.zone, database.name or "")
        )
    if database.source in SESSION_SOURCES:
        session = _zone_or_none(database.session)
        if (
            session is None
            or database.zone is None
            or not same_offsets(session, database.zone, now)
        ):
            evidence.append(
                Evidence(
                    f"the job's own session has TimeZone {database.session!r}, set "
                    f"{SESSION_SOURCES[database.source]}, not the database's",
                    session,
                    database.session,
                )
            )
    return dt.UTC, evidence


def _zone_or_none(name: str) -> dt.tzinfo | None:
    try:
        return named_zone(name)
    except LookupError:
        return None


# -- what the data says ---------------------------------------------------------------------


def _database_now(conn: Connection, sqlite: bool) -> dt.datetime:
    query = "strftime('%Y-%m-%dT%H:%M:%f', 'now')" if sqlite else "statement_timestamp()"
    return _utc_clock(conn.exec_driver_sql(f"SELECT {query}").scalar_one())


def _newest(conn: Connection, column: NaiveColumn, now: dt.datetime) -> _Sample | None:
    """The newest sample no further ahead of `now` than any zone's clock can be (beyond
    that a value is bad data, not a zone's sign), or None."""
    limit = column.fmt.in_zone(dt.UTC).bound(now + WIDEST_OFFSET_SPAN + CLOCK_SKEW_TOLERANCE)
    row = conn.execute(
        sa.select(column.column, column.key)
        .where(column.samples, column.column.is_not(None), column.column < limit)
        .order_by(column.column.desc(), column.key.desc())
        .limit(1)
    ).first()
    wall = None if row is None else _as_wall(row[0])
    return None if row is None or wall is None else _Sample(row[0], wall, row[1])


def _utc_clock(clock: Any) -> dt.datetime:
    if isinstance(clock, str):
        return dt.datetime.fromisoformat(clock).replace(tzinfo=dt.UTC)
    return clock.astimezone(dt.UTC)


def _as_wall(value: Any) -> dt.datetime | None:
    """A stored naive value as a naive datetime; None when it is not one."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value
    return None


@dataclass(frozen=True)
class _DefaultReading:
    follows_session: bool  # PostgreSQL: the value moves with the session's TimeZone
    offset: dt.timedelta | None  # evaluated in UTC: "now" at this offset; None: not "now"


def _evaluate_default(
    conn: Connection, column: NaiveColumn, sqlite: bool
) -> _DefaultReading | None:
    """The column default evaluated (never parsed) against the database's clock, in a
    savepoint rolled back at once; None when it cannot be evaluated or is not a time."""
    assert column.default is not None
    if sqlite:
        queries = [f"SELECT ({column.default}), strftime('%Y-%m-%d %H:%M:%f', 'now')"]
        zones: list[str | None] = [None]
    else:
        # As the application's insert would: the assignment cast to the column's type.
        cast = "text" if column.fmt.kind == "iso_text" else "timestamp without time zone"
        queries = [f"SELECT CAST(({column.default}) AS {cast}), statement_timestamp()"] * 2
        zones = ["UTC", PROBE_ZONE]
    lags = []
    savepoint = conn.begin_nested()
    try:
        for zone, query in zip(zones, queries, strict=True):
            if zone is not None:
                conn.execute(sa.select(sa.func.set_config("TimeZone", zone, True)))
            value, clock = conn.exec_driver_sql(query).one()
            wall = _as_wall(value)
            if wall is None:
                return None
            # SQLite's clock is UTC wall time as text; PostgreSQL's an aware instant.
            at = _utc_clock(clock)
            lags.append((wall, at))
    except sa.exc.DBAPIError:
        return None  # e.g. a function the job's role may not run: the default says nothing
    finally:
        savepoint.rollback()
    (wall, at), *probe = lags
    follows = False
    if probe:
        [(probe_wall, probe_at)] = probe
        shift = (probe_wall - wall) - (probe_at - at)
        follows = abs(shift - utc_offset(named_zone(PROBE_ZONE), at)) <= NOW_TOLERANCE
    return _DefaultReading(follows, offset_of_now(wall, at, NOW_TOLERANCE))


def _default_evidence(
    conn: Connection,
    column: NaiveColumn,
    zone: dt.tzinfo,
    database: DatabaseZone,
    now: dt.datetime,
    sqlite: bool,
) -> list[Evidence]:
    reading = _evaluate_default(conn, column, sqlite)
    if reading is None:
        return []
    default = f"its default {column.default}"
    local = database.zone
    # On SQLite 'localtime' reads the worker's clock: a default at the worker's offset is
    # taken for it, unless that offset is UTC's now (then CURRENT_TIMESTAMP looks the same,
    # and the offset now is all that can be told).
    if reading.follows_session or (
        sqlite and local is not None and reading.offset and reading.offset == utc_offset(local, now)
    ):
        # The wall time of the zone the application's sessions (SQLite: processes) have.
        if local is None:
            return [
                Evidence(
                    f"{default} writes the session zone's wall time, and the database's "
                    f"zone cannot be read: {database.unknown}",
                    None,
                    "",
                    column.where,
                )
            ]
        if same_offsets(local, zone, now):
            return []
        return [
            Evidence(
                f"{default} writes the wall time of {database.described}",
                local,
                database.name or "",
                column.where,
            )
        ]
    if reading.offset is None or utc_offset(zone, now) == reading.offset:
        return []  # not a reading of the clock, or one in the setting's zone's offset
    fixed = dt.timezone(reading.offset)
    return [
        Evidence(
            f"{default} writes the current time at {zone_label(fixed)}",
            fixed,
            zone_label(fixed),
            column.where,
        )
    ]


def _future_evidence(
    column: NaiveColumn,
    sample: _Sample,
    zone: dt.tzinfo,
    database: DatabaseZone,
    now: dt.datetime,
) -> list[Evidence]:
    wall = sample.wall
    earliest, _ = readings(wall, zone)
    ahead = earliest - now
    if ahead <= CLOCK_SKEW_TOLERANCE:
        return []
    says = (
        f"its newest live value {sample} reads as created {_duration(ahead)} in the future in "
        f"{zone_label(zone)} (the database's clock is {_utc(now)}; clocks may differ by "
        f"{_duration(CLOCK_SKEW_TOLERANCE)}): a clock east of that zone wrote it"
    )
    local = database.zone
    if (
        local is not None
        and not same_offsets(local, zone, now)
        and readings(wall, local)[0] - now <= CLOCK_SKEW_TOLERANCE
    ):  # the database's zone reads it as written by now
        return [Evidence(says, local, database.name or "", column.where)]
    # Else the offset of a clock that showed this value about now.
    steps = round((wall - wall_time(now, dt.UTC)) / OFFSET_STEP)
    fixed = dt.timezone(min(max(steps * OFFSET_STEP, WESTMOST_OFFSET), EASTMOST_OFFSET))
    return [
        Evidence(
            says, fixed, f"{zone_label(fixed)} (a clock that shows it about now)", column.where
        )
    ]


# -- the refusal ----------------------------------------------------------------------------


def _refusal(
    setting: str,
    zone: dt.tzinfo,
    columns: Sequence[NaiveColumn],
    evidence: Sequence[Evidence],
    samples: dict[str, _Sample | None],
    now: dt.datetime,
) -> str:
    names = " and ".join(c.where for c in columns)
    lines = [
        f"{names} {'holds' if len(columns) == 1 else 'hold'} naive times (wall times without "
        f"a zone), which {SETTING} {setting!r} reads in {zone_label(zone)}, but the database "
        "says otherwise, and the job does not guess; nothing was touched:"
    ]
    shown = set()
    for item in evidence:
        where = item.where or columns[0].where
        line = f"- {where}: {item.says}"
        if item.zone is not None:
            sample = samples.get(where)
            if sample is None:  # no row yet: what a clock there shows now
                wall = wall_time(now, item.zone)
                what = f"a time written now, {wall}"
            else:
                wall = sample.wall
                what = f"the newest value {sample}"
            both = (
                f"{what} is {_read(wall, zone)} read in {zone_label(zone)} ({SETTING}) but "
                f"{_read(wall, item.zone)} read in {item.label}"
            )
            line += "" if both in shown else f"; {both}"
            shown.add(both)
        lines.append(line)
    lines.append(
        f"Set {SETTING} on the database resource ({ENVIRONMENT_VARIABLE}) to the zone the "
        f"application writes these times in: {DATABASE!r} for the database's own zone, an "
        "IANA name such as 'America/New_York', or 'UTC' for UTC wall time (docs/safety.md, "
        '"Naive times: which zone").'
    )
    return "\n".join(lines)


def _read(wall: dt.datetime, zone: dt.tzinfo) -> str:
    """The instants `wall` denotes in `zone`, in UTC: one, or two at a DST change."""
    earliest, latest = readings(wall, zone)
    if earliest == latest:
        return _utc(latest)
    return f"{_utc(earliest)} or {_utc(latest)}"


def _duration(span: dt.timedelta) -> str:
    """`1 h 2 min 3 s`, to the second."""
    seconds = round(span.total_seconds())
    parts = zip((seconds // 3600, seconds // 60 % 60, seconds % 60), ("h", "min", "s"), strict=True)
    return " ".join(f"{n} {unit}" for n, unit in parts if n) or "0 s"


def _utc(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
