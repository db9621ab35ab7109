"""Which zone a naive time is the wall time of, settled before any naive value is compared
or written, or the run refuses to guess.

A naive "createdAt" or "deletedAt" (PostgreSQL `timestamp without time zone`, ISO 8601 text
without an offset) is the wall time of some clock. Read in the wrong zone, a New York
application's rows look five hours older than they are and go five hours early. The zone
is the database resource's `naive_time_zone` (SNAPSHOT_OPS_NAIVE_TIME_ZONE):

- `auto` (the default): UTC, the convention of most ORMs (Prisma, SQLAlchemy), but only
  when nothing says otherwise. On PostgreSQL the run refuses when the database's zone is
  not UTC or cannot be read, when a role that may write "createdAt" has a zone of its own
  on this database (`ALTER ROLE ... [IN DATABASE ...] SET timezone`, read from
  pg_db_role_setting, which every role may read) other than the database's, or when the
  job's own session got another zone from the client (PGTZ in the worker's environment).
  SQLite keeps no zone at all: the same text is UTC from Django with USE_TZ=True and New
  York time from Django with USE_TZ=False and TIME_ZONE New York, and the worker's local
  zone says nothing about the application's processes. So on SQLite `auto` refuses any
  naive value, and the zone must be stated. The default never guesses.
- `database`: the database's zone: PostgreSQL's `TimeZone` as the database gives it to
  the sessions of roles without a zone of their own (`ALTER DATABASE ... SET timezone`,
  else the server's), which is the zone `now()` writes a naive column in; refused when a
  role that may write "createdAt" has another. Refused on SQLite, which has none (its
  `'localtime'` is the local zone of whichever process evaluates it).
- an IANA name (`UTC`, `America/New_York`): the operator's statement.

Whatever the setting, the strong evidence is checked against it, and each disagreement is
named in one refusal (TimeFormatError: the column, a sample value read both ways as UTC
instants, what to change; nothing is touched):

- a column default that writes the current time (`now()`, `CURRENT_TIMESTAMP`,
  `LOCALTIMESTAMP`, `statement_timestamp()`, `timezone('utc', now())`; on SQLite
  `CURRENT_TIMESTAMP` or `datetime('now', 'localtime')`) in another zone. The default is
  not parsed: it is evaluated, in a read-only transaction that is rolled back, and compared
  with the database's clock. On PostgreSQL it is evaluated in two session zones, UTC and
  PROBE_ZONE: one that follows the session writes the wall time of the zone of the session
  that inserts (the database's, or a role's own); one that does not writes a fixed offset
  from UTC, which is compared with the setting's zone now and in both seasons. On SQLite a
  default at the worker's local offset reads the local clock of whichever process inserts:
  the application's zone, which only the operator can state. A default that is not a
  reading of the clock (a constant, or one that cannot be evaluated) says nothing, and
  neither does a default the operator states the application never uses
  (`unused_column_defaults`; Prisma's client writes `@default(now())` itself, in UTC,
  while the column's default is `CURRENT_TIMESTAMP`).
- a live row whose "createdAt" reads, in the setting's zone, as created in the future by
  more than CLOCK_SKEW_TOLERANCE: a clock east of the setting's wrote it. When the setting
  is stated (or agrees with the database's zone) and no zone the database knows reads the
  row as written by now, the row itself, or the clock of the server that wrote it, is
  named as wrong. Values more than a day ahead (further than any two zones' clocks are
  apart) are bad data, not a zone's sign; the rule keeps them like any row not old enough.
"""

from __future__ import annotations

import datetime as dt
import logging
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
    format_offset,
    named_zone,
    offset_changes,
    offset_of_now,
    readings,
    same_offsets,
    utc_offset,
    wall_time,
    zone_label,
)

log = logging.getLogger(__name__)

AUTO = "auto"
DATABASE = "database"
SETTING = "naive_time_zone"
ENVIRONMENT_VARIABLE = "SNAPSHOT_OPS_NAIVE_TIME_ZONE"
#: The operator's statement that the application never uses these columns' defaults (it
#: writes every value itself): their defaults are then not taken as evidence of the zone.
UNUSED_DEFAULTS = "unused_column_defaults"
UNUSED_DEFAULTS_VARIABLE = "SNAPSHOT_OPS_UNUSED_COLUMN_DEFAULTS"
#: The columns `unused_column_defaults` may name.
TIME_COLUMNS = ("createdAt", "deletedAt")
#: What the common frameworks write into a naive column, and the setting that says so.
FRAMEWORKS = (
    "Django with USE_TZ = True writes UTC: 'UTC'; with USE_TZ = False, the wall time of its "
    "TIME_ZONE setting: that name, e.g. 'America/New_York'; SQLAlchemy and Prisma write what "
    "the application gives them, usually UTC: 'UTC'"
)
DOCS = 'docs/safety.md, "Naive times: which zone"'
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
#: The TimeZone settings of login roles that may write the column %(column)s of the table
#: %(table)s in this database: their own (setdatabase 0) and in this database. A role may
#: write it when it is a superuser, or a member (itself included, SET ROLE counted) of a
#: role that owns the table or has INSERT or UPDATE on the column. PostgreSQL applies a
#: role's setting in this database over its own, and either over the database's.
ROLE_SETTINGS = """
    SELECT r.rolname, s.setdatabase <> 0, s.setconfig, r.rolname = current_user,
           current_database()
    FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
    WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
      AND r.rolcanlogin
      AND (r.rolsuper OR EXISTS (
        SELECT 1 FROM pg_roles w
        WHERE pg_has_role(r.oid, w.oid, 'MEMBER')
          AND (w.oid = (SELECT relowner FROM pg_class WHERE oid = to_regclass(%(table)s))
               OR has_column_privilege(w.oid, to_regclass(%(table)s), %(column)s, 'INSERT')
               OR has_column_privilege(w.oid, to_regclass(%(table)s), %(column)s, 'UPDATE'))))
    ORDER BY r.rolname
"""


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


def check_unused_column_defaults(names: Sequence[str]) -> None:
    """Refuse an `unused_column_defaults` naming anything but "createdAt" and "deletedAt"."""
    odd = [name for name in names if name not in TIME_COLUMNS]
    if odd:
        raise TimeFormatError(
            f"{UNUSED_DEFAULTS} (database resource; {UNUSED_DEFAULTS_VARIABLE}) names "
            f"{', '.join(map(repr, odd))}: it may name only {' and '.join(TIME_COLUMNS)}, "
            "the time columns whose default the application never uses"
        )


@dataclass(frozen=True)
class NaiveColumn:
    """A time column whose values are naive (TimeFormat.is_naive), to settle the zone of.

    name: the column's name ("createdAt"). table: its table as SQL names it, quoted and
    schema-qualified when it has a schema, e.g. '"SnapshotFiles"'.
    column: the column as the job compares it (PostgreSQL text: in byte order).
    fmt: its representation. default: its default expression as the database keeps it.
    samples: the rows whose values show what the application writes; the newest is read.
    key: the rows' key ("fileId"), to name the sample's row.
    dated: check that no sample reads as created in the future, and (PostgreSQL) that the
    roles that may write it have no zone of their own ("createdAt"; its samples are the
    live rows the expiry index holds, so the newest is one index probe).
    """

    name: str
    table: str
    column: sa.ColumnElement[Any]
    fmt: TimeFormat
    default: str | None
    samples: sa.ColumnElement[bool]
    key: sa.ColumnElement[Any]
    dated: bool = False

    @property
    def where(self) -> str:
        """The column for messages: '"createdAt" of "SnapshotFiles"'."""
        return f'"{self.name}" of {self.table}'


@dataclass(frozen=True)
class RoleZone:
    """A login role that may write the dated column and has a TimeZone of its own on this
    database: its name, the setting's value and zone (None: not an IANA zone Python
    knows), the statement that set it, and whether it is the job's own role."""

    role: str
    name: str
    zone: dt.tzinfo | None
    statement: str
    own: bool


@dataclass(frozen=True)
class DatabaseZone:
    """The zone the database gives its sessions, and the job's own session's.

    name, zone: None when it cannot be read (`unknown`, why); zone also when the name is not
    an IANA zone Python knows; both None on SQLite (source "sqlite"), which keeps none.
    described: for messages. session, source: the job's own session's TimeZone and
    pg_settings.source. roles: the roles with a zone of their own (PostgreSQL; None when
    pg_db_role_setting cannot be read, `roles_unknown` says why).
    """

    name: str | None
    zone: dt.tzinfo | None
    described: str
    session: str
    source: str
    unknown: str = ""
    roles: tuple[RoleZone, ...] | None = ()
    roles_unknown: str = ""


#: SQLite's zone: none.
SQLITE = DatabaseZone(
    None, None, "SQLite, which keeps no time zone", "", "sqlite", "SQLite keeps no time zone"
)


@dataclass(frozen=True)
class Evidence:
    """One thing the database says about the zone of naive values that the setting's zone
    contradicts: `says` (a sentence part), the zone it points to (None: unknown) and its
    label, the column whose newest value is read both ways (None: the first), what to do
    about it (`advice`, a sentence), and whether it points at a row or a clock rather than
    at a zone (`clock`: a row from the future under a stated or agreeing zone)."""

    says: str
    zone: dt.tzinfo | None
    label: str
    where: str | None = None
    advice: str = ""
    clock: bool = False


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
    unused_defaults: Sequence[str] = (),
) -> dt.tzinfo:
    """The zone the naive `columns` hold wall time of, for `naive_time_zone` `setting`.

    Reads, in one read-only transaction that is rolled back, the database's clock and zone,
    the zones of the roles that may write the dated column, each column's newest sample and
    its evaluated default (see the module docstring); the defaults of the columns named in
    `unused_defaults` (`unused_column_defaults`) are evaluated but not held against the
    setting (a warning is logged when one would have been). Raises TimeFormatError naming
    every disagreement with a sample read both ways, when `database` is asked for and the
    database's zone cannot be read or the database is SQLite (which keeps none), or when
    `unused_defaults` names a column other than "createdAt" and "deletedAt".
    """
    check_naive_time_zone(setting)
    check_unused_column_defaults(unused_defaults)
    if sqlite and setting == DATABASE:
        raise TimeFormatError(_sqlite_has_no_zone(columns))
    with connect() as conn, conn.begin() as transaction:
        if not sqlite:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        now = _database_now(conn, sqlite)
        dated = next((c for c in columns if c.dated), None)
        database = SQLITE if sqlite else _postgres_zone(conn, dated)
        zone, evidence = _setting_zone(setting, database, now)
        samples = {c.where: _newest(conn, c, now) for c in columns if c.dated}
        if sqlite and setting == AUTO:
            evidence += _sqlite_values(conn, columns, samples)
        for column in columns:
            reading = _evaluate_default(conn, column, sqlite) if column.default else None
            local_clock = sqlite and _reads_local_clock(reading, now)
            if reading is not None:
                found = _default_evidence(column, reading, zone, setting, database, now, sqlite)
                if found and column.name in unused_defaults:
                    log.warning(
                        "%s: %s; not held against %s %r: %s says the application never uses it",
                        column.where,
                        "; ".join(item.says for item in found),
                        SETTING,
                        setting,
                        UNUSED_DEFAULTS,
                    )
                    found = []
                evidence += found
            sample = samples.get(column.where)
            if sample is not None:
                evidence += _future_evidence(
                    column, sample, zone, setting, database, now, local_clock=local_clock
                )
        refusal = None
        if evidence:
            # Samples of the other columns only now: they may take a scan (no index).
            for column in columns:
                if column.where not in samples:
                    samples[column.where] = _newest(conn, column, now)
            refusal = _refusal(setting, zone, columns, evidence, samples, now, sqlite)
        transaction.rollback()
    if refusal is not None:
        raise TimeFormatError(refusal)
    return zone


# -- the database's zone --------------------------------------------------------------------


def _postgres_zone(conn: Connection, dated: NaiveColumn | None) -> DatabaseZone:
    session, source = conn.exec_driver_sql(
        "SELECT setting, source FROM pg_settings WHERE name = 'TimeZone'"
    ).one()
    roles, roles_unknown = _writer_roles(conn, dated)
    if source not in SESSION_SOURCES:  # the session has the database's (or server's) zone
        return _named(
            session, f"the database's TimeZone {session!r}", session, source, roles, roles_unknown
        )
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
            return _named(
                value, f"the database's TimeZone {value!r}", session, source, roles, roles_unknown
            )
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
        roles=roles,
        roles_unknown=roles_unknown,
    )


def _writer_roles(
    conn: Connection, dated: NaiveColumn | None
) -> tuple[tuple[RoleZone, ...] | None, str]:
    """The login roles that may write `dated` and have a TimeZone of their own on this
    database (ROLE_SETTINGS), or None and why when that cannot be read."""
    if dated is None:
        return (), ""
    savepoint = conn.begin_nested()
    try:
        rows = conn.exec_driver_sql(
            ROLE_SETTINGS, {"table": dated.table, "column": dated.name}
        ).all()
    except sa.exc.DBAPIError as exc:  # e.g. pg_db_role_setting revoked from PUBLIC
        savepoint.rollback()
        return None, f"{type(exc.orig).__name__}: {str(exc.orig).strip()}"
    savepoint.commit()
    quote = conn.dialect.identifier_preparer.quote
    found: dict[str, dict[str, Any]] = {}
    for role, in_database, config, own, database in rows:
        for entry in config or ():
            key, _, value = entry.partition("=")
            if key.lower() == "timezone":
                slot = found.setdefault(role, {"own": own, "database": database})
                slot["in_database" if in_database else "everywhere"] = value
    roles = []
    for role, slot in found.items():
        in_database = "in_database" in slot
        value = slot["in_database"] if in_database else slot["everywhere"]
        scope = f" IN DATABASE {quote(slot['database'])}" if in_database else ""
        roles.append(
            RoleZone(
                role,
                value,
                _zone_or_none(value),
                f"ALTER ROLE {quote(role)}{scope} SET timezone",
                slot["own"],
            )
        )
    return tuple(roles), ""


def _local_zone() -> dt.tzinfo | None:
    """This worker's local zone (what SQLite's 'localtime' reads here), or None."""
    try:
        return tzlocal.reload_localzone()
    except (LookupError, ValueError, OSError):
        return None


def _named(
    name: str,
    described: str,
    session: str,
    source: str,
    roles: tuple[RoleZone, ...] | None,
    roles_unknown: str,
) -> DatabaseZone:
    zone = _zone_or_none(name)
    unknown = "" if zone is not None else f"{name!r} is not an IANA zone name"
    return DatabaseZone(name, zone, described, session, source, unknown, roles, roles_unknown)


def _setting_zone(
    setting: str, database: DatabaseZone, now: dt.datetime
) -> tuple[dt.tzinfo, list[Evidence]]:
    """The setting's zone, and what says it is not the zone of naive values: for auto,
    anything that is not UTC; for auto and database, the writing roles' own zones."""
    if setting == DATABASE:
        if database.zone is None:
            raise TimeFormatError(
                f"{SETTING} is {DATABASE!r}, but the database's zone cannot be read: "
                f"{database.unknown}; nothing was touched. Set {SETTING} on the database "
                f"resource ({ENVIRONMENT_VARIABLE}) to the IANA name of the zone the "
                "application writes naive times in, or give the database its zone."
            )
        return database.zone, _role_evidence(database, database.zone, now)
    if setting != AUTO:
        return named_zone(setting), []
    if database is SQLITE:
        return dt.UTC, []  # any naive value is evidence there (_sqlite_values)
    evidence = []
    if database.zone is None:
        evidence.append(
            Evidence(f"the database's zone cannot be read: {database.unknown}", None, "")
        )
    elif not same_offsets(database.zone, dt.UTC, now):
        evidence.append(
            Evidence(f"{database.described} is not UTC", database.zone, database.name or "")
        )
    evidence += _role_evidence(database, database.zone or dt.UTC, now)
    own_role = any(role.own for role in database.roles or ())
    if database.source in SESSION_SOURCES and not (
        own_role and database.source in ("user", "database user")  # named as a role above
    ):
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


def _role_evidence(database: DatabaseZone, zone: dt.tzinfo, now: dt.datetime) -> list[Evidence]:
    """The writing roles whose own zone is not `zone` (the database's, or UTC when that
    cannot be read), one item per zone; or that they cannot be read."""
    if database.roles is None:
        return [
            Evidence(
                "the zones of the roles that may write it (ALTER ROLE ... SET timezone, in "
                f"pg_db_role_setting) cannot be read: {database.roles_unknown}",
                None,
                "",
            )
        ]
    apart: dict[str, list[RoleZone]] = {}
    for role in database.roles:
        if role.zone is None or not same_offsets(role.zone, zone, now):
            apart.setdefault(role.name, []).append(role)
    evidence = []
    for name, roles in apart.items():
        names = ", ".join(r.role + (" (the job's own)" if r.own else "") for r in roles)
        statements = "; ".join(r.statement for r in roles)
        unknown = "" if roles[0].zone is not None else " (not an IANA zone name Python knows)"
        who = f"role {names} has" if len(roles) == 1 else f"roles {names} have"
        theirs = "its" if len(roles) == 1 else "their"
        logins = " or ".join(r.role for r in roles)
        evidence.append(
            Evidence(
                f"{who} TimeZone {name!r}{unknown} on this database ({statements}), not "
                f"{database.described}: what {theirs} sessions write into a naive column "
                f"(now(), CURRENT_TIMESTAMP, a timestamptz value) is {name} wall time",
                roles[0].zone,
                f"{name} (role {', '.join(r.role for r in roles)})",
                advice=(
                    f"If the application logs in as {logins}, set {SETTING} to {name!r} (its "
                    "naive times are that zone's wall time); if it logs in as another role, "
                    "to that role's zone."
                ),
            )
        )
    return evidence


def _zone_or_none(name: str) -> dt.tzinfo | None:
    try:
        return named_zone(name)
    except LookupError:
        return None


# -- what the data says ---------------------------------------------------------------------


def _database_now(conn: Connection, sqlite: bool) -> dt.datetime:
    query = "strftime('%Y-%m-%dT%H:%M:%f', 'now')" if sqlite else "statement_timestamp()"
    return _utc_clock(conn.exec_driver_sql(f"SELECT {query}").scalar_one())


def _newest(conn: Connection, column: NaiveColumn, now: dt.datetime | None) -> _Sample | None:
    """The newest sample no further ahead of `now` than any zone's clock can be (beyond
    that a value is bad data, not a zone's sign; None: however far ahead), or None."""
    query = sa.select(column.column, column.key).where(column.samples, column.column.is_not(None))
    if now is not None:
        limit = column.fmt.in_zone(dt.UTC).bound(now + WIDEST_OFFSET_SPAN + CLOCK_SKEW_TOLERANCE)
        query = query.where(column.column < limit)
    row = conn.execute(query.order_by(column.column.desc(), column.key.desc()).limit(1)).first()
    wall = None if row is None else _as_wall(row[0])
    return None if row is None or wall is None else _Sample(row[0], wall, row[1])


def _sqlite_values(
    conn: Connection, columns: Sequence[NaiveColumn], samples: dict[str, _Sample | None]
) -> list[Evidence]:
    """Under auto on SQLite: each column that holds a naive value at all (its zone is the
    application's, which nothing in the file records)."""
    evidence = []
    for column in columns:
        sample = samples.get(column.where) or _newest(conn, column, None)
        if sample is not None:
            evidence.append(
                Evidence(
                    f"SQLite keeps no time zone, and text without an offset such as its newest "
                    f"value {sample} reads the same whether the application wrote UTC or its "
                    f"own local time; {AUTO!r} does not guess which",
                    None,
                    "",
                    column.where,
                )
            )
    return evidence


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


def _reads_local_clock(reading: _DefaultReading | None, now: dt.datetime) -> bool:
    """Whether a SQLite default, evaluated here, reads the local clock ('localtime'): it
    writes the current time at this worker's offset, and that is not UTC's (at UTC's offset
    it cannot be told from CURRENT_TIMESTAMP)."""
    local = _local_zone()
    return bool(
        reading is not None
        and local is not None
        and reading.offset
        and reading.offset == utc_offset(local, now)
    )


def _default_evidence(
    column: NaiveColumn,
    reading: _DefaultReading,
    zone: dt.tzinfo,
    setting: str,
    database: DatabaseZone,
    now: dt.datetime,
    sqlite: bool,
) -> list[Evidence]:
    default = f"its default {column.default}"
    if sqlite:
        # A default that reads the local clock ('localtime') writes the local time of
        # whichever process evaluates it: for the application's inserts its own zone, which
        # the file does not record. Stated, that zone is the setting's; under auto, unknown.
        if _reads_local_clock(reading, now):
            if setting != AUTO:
                return []
            assert reading.offset is not None  # a reading of the clock, at the local offset
            here = zone_label(dt.timezone(reading.offset))
            return [
                Evidence(
                    f"{default} writes the local time of the process that inserts the row "
                    f"(here, this worker's: {here}), and SQLite keeps no zone: "
                    "which zone the application's processes run in, only it can say",
                    None,
                    "",
                    column.where,
                )
            ]
    elif reading.follows_session:
        return _session_default_evidence(column, default, zone, setting, database, now)
    if reading.offset is None:
        return []  # not a reading of the clock
    fixed = dt.timezone(reading.offset)
    if same_offsets(fixed, zone, now):  # in both seasons: London is UTC's offset in winter only
        return []
    return [
        Evidence(
            f"{default} writes the current time at {zone_label(fixed)}",
            fixed,
            zone_label(fixed),
            column.where,
            advice=_default_advice(column, zone, sqlite),
        )
    ]


def _session_default_evidence(
    column: NaiveColumn,
    default: str,
    zone: dt.tzinfo,
    setting: str,
    database: DatabaseZone,
    now: dt.datetime,
) -> list[Evidence]:
    """A PostgreSQL default that writes the wall time of the inserting session's zone: the
    database's, or that of a role with its own. A stated zone that is one of those is
    believed (the operator knows which role the application logs in as); under auto and
    database the roles are evidence of their own (_role_evidence)."""
    local = database.zone
    sessions = [local, *(role.zone for role in database.roles or ())]
    if setting not in (AUTO, DATABASE) and any(
        z is not None and same_offsets(z, zone, now) for z in sessions
    ):
        return []
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
            advice=_default_advice(column, zone, sqlite=False),
        )
    ]


def _default_advice(column: NaiveColumn, zone: dt.tzinfo, sqlite: bool) -> str:
    """How a default that disagrees with `zone` is made to agree, or waived."""
    name = zone_label(zone)
    waiver = (
        f"or state that it is never used: {UNUSED_DEFAULTS} [{column.name!r}] "
        f"({UNUSED_DEFAULTS_VARIABLE}={column.name})"
    )
    if sqlite:
        change = "give the column a default that agrees (SQLite changes one only by rebuilding "
        change += "the table)"
    elif column.fmt.kind == "timestamp":
        expression = f"timezone('{name}', now())"
        change = (
            f"the column's owner makes its default agree: ALTER TABLE {column.table} ALTER "
            f'COLUMN "{column.name}" SET DEFAULT {expression} (with Prisma, declare '
            f'@default(dbgenerated("{expression}")) so that migrations keep it)'
        )
    else:
        change = f"the column's owner gives it a default that writes {name} wall time"
    return (
        f'If the application writes "{column.name}" itself in {name} (Prisma\'s client does '
        f"for @default(now()), which declares a CURRENT_TIMESTAMP default), {change}, {waiver}."
    )


def _future_evidence(
    column: NaiveColumn,
    sample: _Sample,
    zone: dt.tzinfo,
    setting: str,
    database: DatabaseZone,
    now: dt.datetime,
    *,
    local_clock: bool = False,
) -> list[Evidence]:
    """The sample, read in `zone`, from the future; `local_clock`: the column's default
    reads the inserting process's local clock (SQLite)."""
    wall = sample.wall
    earliest, _ = readings(wall, zone)
    ahead = earliest - now
    if ahead <= CLOCK_SKEW_TOLERANCE:
        return []
    says = (
        f"its newest live value {sample} reads as created {_duration(ahead)} in the future in "
        f"{zone_label(zone)} (the database's clock is {_utc(now)}; clocks may differ by "
        f"{_duration(CLOCK_SKEW_TOLERANCE)})"
    )
    east = f"{says}: a clock east of that zone wrote it"
    # A zone the database knows (its own, a writing role's) that reads it as written by now.
    known = [(database.zone, database.name or "")]
    known += [(role.zone, f"{role.name} (role {role.role})") for role in database.roles or ()]
    for candidate, label in known:
        if (
            candidate is not None
            and not same_offsets(candidate, zone, now)
            and readings(wall, candidate)[0] - now <= CLOCK_SKEW_TOLERANCE
        ):
            return [Evidence(east, candidate, label, column.where)]
    # Else the offset of a clock that showed this value about now.
    steps = round((wall - wall_time(now, dt.UTC)) / OFFSET_STEP)
    fixed = dt.timezone(min(max(steps * OFFSET_STEP, WESTMOST_OFFSET), EASTMOST_OFFSET))
    label = f"{zone_label(fixed)} (a clock that shows it about now)"
    agreeing = database.zone is not None and same_offsets(database.zone, zone, now)
    if local_clock:  # the application's processes' local clock, not a wrong one
        return [
            Evidence(
                f"{says}, and its default {column.default} writes the local time of the "
                f"process that inserts the row: the application's processes run east of "
                f"{zone_label(zone)}, about at {zone_label(fixed)}",
                fixed,
                label,
                column.where,
            )
        ]
    if setting == AUTO and not agreeing:
        return [Evidence(east, fixed, label, column.where)]
    # The zone is stated, or the database's agrees: a row, or a clock, is wrong.
    why = f"{SETTING} {setting!r} is stated" if setting != AUTO else f"{database.described} agrees"
    return [
        Evidence(
            f"{says}; {why}, so this row, or the clock of the server that wrote it, is wrong "
            f"(a clock at {zone_label(fixed)} shows this value about now)",
            fixed,
            label,
            column.where,
            advice=_row_advice(column, sample, zone, earliest),
            clock=True,
        )
    ]


def _row_advice(
    column: NaiveColumn, sample: _Sample, zone: dt.tzinfo, earliest: dt.datetime
) -> str:
    """What to do about one row dated in the future in a zone that is right."""
    name = zone_label(zone)
    key = (
        sample.key
        if isinstance(sample.key, int)
        else "'{}'".format(str(sample.key).replace("'", "''"))
    )
    fix = ""
    if column.fmt.kind == "timestamp":
        fix = (
            f": UPDATE {column.table} SET \"{column.name}\" = timezone('{name}', now()) "
            f'WHERE "fileId" = {key}'
        )
    return (
        f'Correct that row\'s "{column.name}" to when it was written (the current {name} wall '
        f"time is safe: the row is then kept a full retention from now){fix}; and correct the "
        "clock of the server that wrote it. Unless newer rows are ahead too, this one stops "
        f"the runs only until the database's clock reaches "
        f"{_utc(earliest - CLOCK_SKEW_TOLERANCE)}. "
        f"Only if the application writes the wall time of a zone east of {name} is {SETTING} "
        f"wrong: then set it ({ENVIRONMENT_VARIABLE}) to that zone."
    )


# -- the refusal ----------------------------------------------------------------------------


def _refusal(
    setting: str,
    zone: dt.tzinfo,
    columns: Sequence[NaiveColumn],
    evidence: Sequence[Evidence],
    samples: dict[str, _Sample | None],
    now: dt.datetime,
    sqlite: bool,
) -> str:
    names = " and ".join(c.where for c in columns)
    clocks_only = all(item.clock for item in evidence)
    but = (
        "but its newest live row is dated in the future"
        if clocks_only
        else "but the database says otherwise, and the job does not guess"
    )
    lines = [
        f"{names} {'holds' if len(columns) == 1 else 'hold'} naive times (wall times without "
        f"a zone), which {SETTING} {setting!r} reads in {zone_label(zone)}, {but}; nothing "
        "was touched:"
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
            ours, theirs = _read(wall, zone), _read(wall, item.zone)
            if ours != theirs:
                both = (
                    f"{what} is {ours} read in {zone_label(zone)} ({SETTING}) but {theirs} "
                    f"read in {item.label}"
                )
            else:  # the same offset today: say when they differ
                both = (
                    f"{what} is {ours} read in {zone_label(zone)} and in {item.label} now, "
                    f"but {_apart(zone, item.zone, item.label, now)}"
                )
            line += "" if both in shown else f"; {both}"
            shown.add(both)
        lines.append(line)
    for advice in dict.fromkeys(item.advice for item in evidence if item.advice):
        lines.append(advice)
    if not clocks_only:
        lines.append(_set_the_setting(sqlite))
    return "\n".join(lines)


def _set_the_setting(sqlite: bool) -> str:
    if sqlite:
        return (
            f"Set {SETTING} on the database resource ({ENVIRONMENT_VARIABLE}) to the zone the "
            "application writes these times in, 'UTC' or an IANA name such as "
            f"'America/New_York' (SQLite keeps no zone, so {DATABASE!r} means nothing there): "
            f"{FRAMEWORKS} ({DOCS})."
        )
    return (
        f"Set {SETTING} on the database resource ({ENVIRONMENT_VARIABLE}) to the zone the "
        f"application writes these times in: {DATABASE!r} for the database's own zone, an "
        f"IANA name such as 'America/New_York', or 'UTC' for UTC wall time ({DOCS})."
    )


def _sqlite_has_no_zone(columns: Sequence[NaiveColumn]) -> str:
    names = " and ".join(c.where for c in columns)
    return (
        f"{SETTING} is {DATABASE!r}, but SQLite keeps no time zone: its 'localtime' is the "
        "local zone of whichever process evaluates it (the application's for the rows it "
        "writes, this worker's for the job, and the two need not agree), and nothing in the "
        f"file records which zone the naive times of {names} were written in; nothing was "
        f"touched. {_set_the_setting(sqlite=True)}"
    )


def _apart(zone: dt.tzinfo, other: dt.tzinfo, label: str, now: dt.datetime) -> str:
    """When, within the next year or so, `other` (called `label`) is at another offset
    than `zone`: the reason two zones at one offset today are not the same zone."""
    horizon = now + dt.timedelta(days=400)
    changes = sorted({c.at for z in (zone, other) for c in offset_changes(z, now, horizon)})
    for at in changes:
        ours, theirs = utc_offset(zone, at), utc_offset(other, at)
        if ours != theirs:
            return (
                f"from {at:%Y-%m-%d} {label} is at UTC{format_offset(theirs)} and "
                f"{zone_label(zone)} at UTC{format_offset(ours)}: the same wall time is then "
                f"two instants {_duration(abs(theirs - ours))} apart"
            )
    return f"{label} and {zone_label(zone)} are at different offsets at other times of year"


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
