"""A naive time means what the application meant: the zone of naive "createdAt"/"deletedAt"
values is the database resource's `naive_time_zone`, checked against the database, and the
job refuses, with nothing touched, rather than guess.

Pinned down here, through the real job (in process, as of the clock):
- (a) PostgreSQL whose TimeZone is America/New_York, `"createdAt" timestamp DEFAULT
  now()`, rows aged 6 d 20 h, 7 d 6 h and 0 s: without the setting the run refuses, naming
  the column, the newest value read both ways and the setting; with `database` or
  `America/New_York` exactly the 7 d 6 h row goes, as the design's own SQL
  (`"createdAt" < NOW() - INTERVAL '7 days'` in a session of that database) selects, and
  "deletedAt" gets New York wall time.
- (b) SQLite holding New York wall time as Django writes it (`USE_TZ=False`): SQLite keeps
  no zone, so without the setting the run refuses on any worker (UTC's included, where
  the text looks like UTC's) naming what Django, SQLAlchemy and Prisma need; `database` is
  refused there; with `America/New_York`, on any worker, exactly the 7 d 6 h row goes.
  Epoch numbers and an empty column need no zone.
- (c) PostgreSQL in Europe/Berlin with `DEFAULT now()`: under `UTC` a row created a second
  ago reads an hour in the future, and the run refuses naming that row.
- A role that may write "createdAt" with a zone of its own (Los Angeles, in the database
  or role-wide) in a UTC database: refused under auto and database naming the role, its
  zone and the statement, also when the job logs in with the least privileges; a role that
  only reads says nothing; stated, the role's zone is followed.
- Prisma's UTC values under a `CURRENT_TIMESTAMP` default in a New York database: the
  refusal gives the ALTER TABLE that makes the default agree and `unused_column_defaults`;
  with `UTC` and that statement exactly the expired row goes (the waiver logged), and no
  waiver helps a zone the rows contradict.
- A row from a wrong clock under a stated (or agreeing) zone is named as such, with its
  fileId, an UPDATE and no advice to change the setting.
- A zone at UTC's offset only this season (London in winter, the Azores in summer) is not
  UTC: refused under auto, and a UTC-writing default refused under it, with the date they
  differ instead of one instant shown twice.
- Each kind of evidence alone: the database's zone under auto, a column default that writes
  the clock of another zone (evaluated, not parsed; PostgreSQL and SQLite), a row from the
  future (a day ahead or more is bad data, not evidence), the job's own session zone set by
  PGTZ in the worker's environment, and an unreadable database zone under `database`.
- A setting that names no zone fails the run with a message naming it.
- The backlog check (no_overdue_parse_session_snapshots) reads naive times in the same
  zone, and fails with the same refusal when it cannot.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
import zoneinfo
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from dagster import AssetSelection, materialize

from snapshot_ops.defs.assets import (
    CLEANUP_RUNS,
    ORDER_ATTACHMENTS,
    SNAPSHOT_FILES,
    build_storage_assets,
    check_overdue,
)
from snapshot_ops.defs.resources import SnapshotDatabase
from snapshot_ops.rules import TEMPORARY_TYPE as TYPE
from snapshot_ops_tests.support.jobs import step_metadata
from snapshot_ops_tests.support.scenarios import DAY, state
from snapshot_ops_tests.support.time_representations import (
    BY_NAME,
    RepWorld,
    set_database_timezone,
)
from snapshot_ops_tests.support.world import World

HOUR = dt.timedelta(hours=1)
UTC = dt.UTC
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
LOS_ANGELES = zoneinfo.ZoneInfo("America/Los_Angeles")
#: The ages of the field report, as PostgreSQL intervals.
FIELD_AGES = {"young": "6 days 20 hours", "old": "7 days 6 hours", "new": None}
#: The design document's rule, run in a session of the application's database.
DESIGN_SQL = """
    SELECT "fileId" FROM "SnapshotFiles"
    WHERE "snapshotType" = 'ParseSessionSnapshot'
      AND "createdAt" < NOW() - INTERVAL '7 days'
      AND "deletedAt" IS NULL
      AND NOT EXISTS (
        SELECT 1 FROM "OrderAttachments" oa WHERE oa."fileId" = "SnapshotFiles"."fileId"
      )
"""


def failure_message(result) -> str:
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return event.step_failure_data.user_failure_data.description


def utc_text(wall: dt.datetime, zone: dt.tzinfo) -> str:
    """The naive `wall` read in `zone`, as the UTC instant the refusal writes."""
    return wall.replace(tzinfo=zone).astimezone(UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def without_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment that does not set SNAPSHOT_OPS_NAIVE_TIME_ZONE (the suite sets UTC)."""
    monkeypatch.delenv("SNAPSHOT_OPS_NAIVE_TIME_ZONE")


# -- PostgreSQL -----------------------------------------------------------------------------


def pg_naive_world(
    url: str, root, zone: str, default: str | None = "now()", precision: str = ""
) -> World:
    """A World on a PostgreSQL database whose TimeZone is `zone`, with naive time columns
    ("createdAt" with `default`; both of `precision`, e.g. "(3)")."""
    set_database_timezone(url, zone)
    world = World(url, root, create_tables=False)
    with world.engine.begin() as conn:
        conn.exec_driver_sql(
            'CREATE TABLE "SnapshotFiles" ("fileId" text primary key, "snapshotType" text '
            'not null, "parseSessionId" text, "storageKey" text not null, "sizeBytes" bigint, '
            f'"createdAt" timestamp{precision} without time zone '
            f"{f'DEFAULT {default}' if default else ''}, "
            f'"deletedAt" timestamp{precision} without time zone)'
        )
        conn.exec_driver_sql(
            'CREATE TABLE "OrderAttachments" ("orderId" text not null, "fileId" text not null)'
        )
    return world


def add_aged(world: World, age: str | None, clock: str = "now()") -> str:
    """A row (and its file) whose "createdAt" the database writes, in a session of its own
    zone, as the application's insert does: `clock - age`, or the column default."""
    file_id = world.add(age=dt.timedelta(0))
    value = "DEFAULT" if age is None else f"{clock} - CAST(%(age)s AS interval)"
    with world.engine.begin() as conn:
        conn.exec_driver_sql(
            f'UPDATE "SnapshotFiles" SET "createdAt" = {value} WHERE "fileId" = %(id)s',
            {"age": age, "id": file_id},
        )
    return file_id


def add_wall(world: World, wall: dt.datetime) -> str:
    """A row (and its file) whose "createdAt" is the naive `wall`, as stored."""
    file_id = world.add(age=dt.timedelta(0))
    with world.engine.begin() as conn:
        conn.exec_driver_sql(
            'UPDATE "SnapshotFiles" SET "createdAt" = %(t)s WHERE "fileId" = %(id)s',
            {"t": wall, "id": file_id},
        )
    return file_id


@pytest.fixture
def new_york_pg(postgres_url, storage_root) -> Iterator[tuple[World, dict[str, str]]]:
    """Field report (a): New York's database, DEFAULT now(), the three rows."""
    world = pg_naive_world(postgres_url, storage_root, "America/New_York")
    ids = {name: add_aged(world, age) for name, age in FIELD_AGES.items()}
    yield world, ids
    world.engine.dispose()


def untouched(world: World, ids: dict[str, str]) -> bool:
    return all(state(world)[i] == (False, True) for i in ids.values())


def test_a_new_york_database_without_the_setting_refuses_untouched(new_york_pg, without_setting):
    world, ids = new_york_pg
    with world.engine.connect() as conn:  # the design's SQL keeps the 6 d 20 h row
        assert set(conn.exec_driver_sql(DESIGN_SQL).scalars()) == {ids["old"]}
    newest = world.row(ids["new"]).createdAt  # New York wall time, naive

    result = world.run(reference_time=None)

    assert not result.success
    message = failure_message(result)
    for part in (
        '"createdAt" of "SnapshotFiles"',
        "the database's TimeZone 'America/New_York' is not UTC",
        "its default now() writes the wall time of the database's TimeZone",
        f"{newest} (fileId {ids['new']})",  # the sample, as stored, and its row
        f"{utc_text(newest, UTC)} read in UTC (naive_time_zone)",  # read both ways
        f"{utc_text(newest, NEW_YORK)} read in America/New_York",
        "naive_time_zone",
        "SNAPSHOT_OPS_NAIVE_TIME_ZONE",
        "nothing was touched",
    ):
        assert part in message, (part, message)
    assert untouched(world, ids)


@pytest.mark.parametrize("setting", ["database", "America/New_York"])
def test_with_the_setting_exactly_what_the_design_sql_selects_goes(new_york_pg, setting):
    world, ids = new_york_pg
    with world.engine.connect() as conn:
        design = set(conn.exec_driver_sql(DESIGN_SQL).scalars())
    started = dt.datetime.now(UTC)

    result = world.run(reference_time=None, naive_time_zone=setting)

    assert result.success
    assert design == {ids["old"]}
    assert state(world) == {
        ids["young"]: (False, True),
        ids["new"]: (False, True),
        ids["old"]: (True, False),
    }
    metadata = step_metadata(result, "identify_expired_candidates")
    assert metadata["createdAtFormat"] == (
        "timestamp without time zone (wall time in America/New_York)"
    )
    # "deletedAt" is New York wall time of the run, as the application's now() writes it.
    deleted_at = world.row(ids["old"]).deletedAt
    assert started - dt.timedelta(seconds=1) <= deleted_at.replace(tzinfo=NEW_YORK)
    assert deleted_at.replace(tzinfo=NEW_YORK) <= dt.datetime.now(UTC)


@pytest.mark.parametrize(
    "default",
    ["now()", "CURRENT_TIMESTAMP", "LOCALTIMESTAMP", "statement_timestamp()", "clock_timestamp()"],
)
def test_a_default_writing_the_database_zone_contradicts_utc(postgres_url, storage_root, default):
    world = pg_naive_world(postgres_url, storage_root, "America/New_York", default)
    ids = {name: add_aged(world, age) for name, age in FIELD_AGES.items()}
    newest = world.row(ids["new"]).createdAt

    result = world.run(reference_time=None, naive_time_zone="UTC")

    assert not result.success
    message = failure_message(result)
    assert f"its default {default} writes the wall time of the database's TimeZone" in message
    assert f"{utc_text(newest, UTC)} read in UTC (naive_time_zone)" in message
    assert f"{utc_text(newest, NEW_YORK)} read in America/New_York" in message
    assert untouched(world, ids)
    world.engine.dispose()


def test_a_default_writing_utc_contradicts_the_database_zone(postgres_url, storage_root):
    # The application's default is UTC wall time whatever the session's zone: reading the
    # column in the database's zone would be five hours off, so `database` is refused and
    # `UTC` (the operator's statement, which the default confirms) is followed.
    world = pg_naive_world(postgres_url, storage_root, "America/New_York", "timezone('utc', now())")
    young = add_aged(world, "6 days 20 hours", "timezone('utc', now())")
    old = add_aged(world, "7 days 6 hours", "timezone('utc', now())")
    new = add_aged(world, None)

    refused = world.run(reference_time=None, naive_time_zone="database")
    assert not refused.success
    message = failure_message(refused)
    assert "its default timezone('utc'::text, now()) writes the current time at UTC" in message
    assert untouched(world, {"young": young, "old": old, "new": new})

    assert world.run(reference_time=None, naive_time_zone="UTC").success
    assert state(world) == {young: (False, True), new: (False, True), old: (True, False)}
    world.engine.dispose()


def test_auto_refuses_a_database_zone_other_than_utc_even_without_a_default(
    postgres_url, storage_root, without_setting
):
    world = pg_naive_world(postgres_url, storage_root, "America/New_York", default=None)
    ids = {name: add_aged(world, age) for name, age in FIELD_AGES.items()}

    result = world.run(reference_time=None)

    assert not result.success
    message = failure_message(result)
    assert "the database's TimeZone 'America/New_York' is not UTC" in message
    assert "default" not in message.split("Set naive_time_zone")[0]
    assert untouched(world, ids)
    # Stated by the operator, it is followed.
    assert world.run(reference_time=None, naive_time_zone="America/New_York").success
    assert state(world)[ids["old"]] == (True, False)
    assert state(world)[ids["young"]] == state(world)[ids["new"]] == (False, True)
    world.engine.dispose()


def test_c_a_berlin_row_written_a_second_ago_is_in_the_future_under_utc(postgres_url, storage_root):
    # Field report (c): read as UTC, Berlin's wall time is an hour ahead of the clock.
    world = pg_naive_world(postgres_url, storage_root, "Europe/Berlin")
    recent = add_aged(world, "1 second")
    expired = add_aged(world, "30 days")
    wall = world.row(recent).createdAt

    result = world.run(reference_time=None, naive_time_zone="UTC")

    assert not result.success
    message = failure_message(result)
    assert f"its newest live value {wall} (fileId {recent}) reads as created" in message
    assert "in the future in UTC" in message
    assert f"{utc_text(wall, UTC)} read in UTC (naive_time_zone)" in message
    assert f"{utc_text(wall, BERLIN)} read in Europe/Berlin" in message
    assert untouched(world, {"recent": recent, "expired": expired})
    # With the database's zone the same rows are read as written.
    assert world.run(reference_time=None, naive_time_zone="database").success
    assert state(world) == {recent: (False, True), expired: (True, False)}
    world.engine.dispose()


def test_a_row_from_the_future_alone_stops_the_run(postgres_url, storage_root):
    # No default and an explicit zone: only the data can say it is wrong. A row dated two
    # days ahead is bad data, not a zone's sign (no two clocks are that far apart): it is
    # kept, as any row not old enough, and the run goes on.
    world = pg_naive_world(postgres_url, storage_root, "UTC", default=None)
    now = dt.datetime.now(UTC)
    far = add_wall(world, (now + 2 * DAY).replace(tzinfo=None))
    expired = add_wall(world, (now - 30 * DAY).replace(tzinfo=None))
    assert world.run(reference_time=None, naive_time_zone="UTC").success
    assert state(world) == {far: (False, True), expired: (True, False)}

    berlin_now = world.add(age=dt.timedelta(0))  # a Berlin clock's "now"
    add_wall_value = now.astimezone(BERLIN).replace(tzinfo=None)
    with world.engine.begin() as conn:
        conn.exec_driver_sql(
            'UPDATE "SnapshotFiles" SET "createdAt" = %(t)s WHERE "fileId" = %(id)s',
            {"t": add_wall_value, "id": berlin_now},
        )
    older = add_wall(world, (now - 30 * DAY).replace(tzinfo=None))

    result = world.run(reference_time=None, naive_time_zone="UTC")

    assert not result.success
    message = failure_message(result)
    assert f"(fileId {berlin_now}) reads as created" in message
    assert "UTC+01:00 (a clock that shows it about now)" in message
    assert state(world)[berlin_now] == state(world)[older] == (False, True)
    world.engine.dispose()


def test_pgtz_in_the_workers_environment_is_named_under_auto(
    postgres_url, storage_root, without_setting, monkeypatch
):
    # The database is UTC; the worker's PGTZ gives the job's own sessions Tokyo's zone.
    world = pg_naive_world(postgres_url, storage_root, "UTC", default=None)
    ids = {name: add_aged(world, age) for name, age in FIELD_AGES.items()}
    monkeypatch.setenv("PGTZ", "Asia/Tokyo")

    result = world.run(reference_time=None)

    assert not result.success
    message = failure_message(result)
    assert "the job's own session has TimeZone 'Asia/Tokyo', set by the client (PGTZ" in message
    assert untouched(world, ids)
    # `database` reads the database's own zone, whatever the session's.
    assert world.run(reference_time=None, naive_time_zone="database").success
    assert state(world)[ids["old"]] == (True, False)
    assert state(world)[ids["young"]] == state(world)[ids["new"]] == (False, True)
    world.engine.dispose()


def test_database_refuses_when_the_database_zone_cannot_be_read(
    postgres_url, storage_root, monkeypatch
):
    # No ALTER DATABASE ... SET timezone, and the session's zone comes from PGTZ: the
    # server's zone is not visible to the session, so `database` cannot be followed.
    world = World(postgres_url, storage_root, create_tables=False)
    with world.engine.begin() as conn:
        conn.exec_driver_sql(
            'CREATE TABLE "SnapshotFiles" ("fileId" text primary key, "snapshotType" text, '
            '"parseSessionId" text, "storageKey" text, "sizeBytes" bigint, '
            '"createdAt" timestamp, "deletedAt" timestamp)'
        )
        conn.exec_driver_sql('CREATE TABLE "OrderAttachments" ("orderId" text, "fileId" text)')
    old = world.add(age=30 * DAY)
    monkeypatch.setenv("PGTZ", "Asia/Tokyo")

    result = world.run(naive_time_zone="database")

    assert not result.success
    message = failure_message(result)
    assert "naive_time_zone is 'database', but the database's zone cannot be read" in message
    assert "PGTZ" in message and "SNAPSHOT_OPS_NAIVE_TIME_ZONE" in message
    assert state(world)[old] == (False, True)
    world.engine.dispose()


def test_a_setting_that_names_no_zone_fails_the_run_naming_it(new_york_pg):
    world, ids = new_york_pg
    result = world.run(reference_time=None, naive_time_zone="America/NewYork")
    assert not result.success
    message = failure_message(result)
    assert "naive_time_zone 'America/NewYork'" in message
    assert "SNAPSHOT_OPS_NAIVE_TIME_ZONE" in message
    assert untouched(world, ids)


# -- SQLite ---------------------------------------------------------------------------------


def sqlite_naive_world(url: str, root, default: str | None = None) -> World:
    """A World on SQLite with "createdAt" and "deletedAt" declared as Django declares a
    DateTimeField ("datetime"), "createdAt" with `default`."""
    world = World(url, root, create_tables=False)
    with world.engine.begin() as conn:
        conn.exec_driver_sql(
            'CREATE TABLE "SnapshotFiles" ("fileId" varchar(36) NOT NULL PRIMARY KEY, '
            '"snapshotType" varchar(64) NOT NULL, "parseSessionId" varchar(64) NULL, '
            '"storageKey" varchar(255) NOT NULL, "sizeBytes" bigint NULL, '
            f'"createdAt" datetime {f"DEFAULT {default}" if default else ""} NULL, '
            '"deletedAt" datetime NULL)'
        )
        conn.exec_driver_sql(
            'CREATE TABLE "OrderAttachments" ("orderId" varchar(36) NOT NULL, '
            '"fileId" varchar(36) NOT NULL)'
        )
    return world


def add_text(world: World, created: str | None) -> str:
    """A row (and its file) whose "createdAt" is the text `created` (None: the default)."""
    file_id = str(uuid.uuid4())
    key = f"{file_id[:2]}/{file_id}.pdf"
    (world.root / key).parent.mkdir(parents=True, exist_ok=True)
    (world.root / key).write_bytes(b"x" * 100)
    names, values = '"fileId", "snapshotType", "storageKey", "sizeBytes"', [file_id, TYPE, key, 100]
    if created is not None:
        names, values = names + ', "createdAt"', [*values, created]
    with world.engine.begin() as conn:
        conn.exec_driver_sql(
            f'INSERT INTO "SnapshotFiles" ({names}) VALUES ({", ".join("?" * len(values))})',
            tuple(values),
        )
    return file_id


def stored_text(world: World, file_id: str, column: str) -> str:
    """A time column's value exactly as SQLite holds it (text)."""
    with world.engine.connect() as conn:
        return conn.exec_driver_sql(
            f'SELECT "{column}" FROM "SnapshotFiles" WHERE "fileId" = ?', (file_id,)
        ).scalar_one()


def django_text(instant: dt.datetime, zone: dt.tzinfo) -> str:
    """What Django (USE_TZ=False, TIME_ZONE `zone`) writes on SQLite: str() of the naive
    local datetime."""
    return str(instant.astimezone(zone).replace(tzinfo=None))


@pytest.fixture
def django_new_york(sqlite_url, storage_root) -> Iterator[tuple[World, dict[str, str]]]:
    """Field report (b): New York wall time as Django writes it, the three rows."""
    world = sqlite_naive_world(sqlite_url, storage_root)
    now = dt.datetime.now(UTC)
    ages = {"young": 6 * DAY + 20 * HOUR, "old": 7 * DAY + 6 * HOUR, "new": dt.timedelta(0)}
    ids = {name: add_text(world, django_text(now - age, NEW_YORK)) for name, age in ages.items()}
    yield world, ids
    world.engine.dispose()


@pytest.fixture
def new_york_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's local zone is New York (as the application's host's), then back."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("worker", ["Asia/Kolkata", "America/New_York", "UTC"])
def test_b_with_the_setting_exactly_the_expired_django_row_goes(
    django_new_york, worker, monkeypatch
):
    # The stated zone is followed whatever the worker's local zone (the suite's is Kolkata).
    world, ids = django_new_york
    monkeypatch.setenv("TZ", worker)
    time.tzset()
    started = dt.datetime.now(UTC)
    try:
        result = world.run(reference_time=None, naive_time_zone="America/New_York")
    finally:
        monkeypatch.undo()
        time.tzset()

    assert result.success
    assert state(world) == {
        ids["young"]: (False, True),
        ids["new"]: (False, True),
        ids["old"]: (True, False),
    }
    # "deletedAt" is New York wall time in the column's own layout.
    deleted_at = stored_text(world, ids["old"], "deletedAt")
    assert isinstance(deleted_at, str) and " " in deleted_at and "+" not in deleted_at
    written = dt.datetime.fromisoformat(deleted_at).replace(tzinfo=NEW_YORK)
    assert started - dt.timedelta(seconds=1) <= written <= dt.datetime.now(UTC)


def test_database_is_refused_on_sqlite_even_on_a_worker_in_the_applications_zone(
    django_new_york, new_york_worker
):
    # SQLite keeps no zone: `database` would be the worker's, which is the application's
    # here only by chance (Django sets its own process's zone from TIME_ZONE).
    world, ids = django_new_york

    result = world.run(reference_time=None, naive_time_zone="database")

    assert not result.success
    message = failure_message(result)
    for part in (
        "naive_time_zone is 'database', but SQLite keeps no time zone",
        '"createdAt" of "SnapshotFiles"',
        "Django with USE_TZ = True writes UTC: 'UTC'",
        "SNAPSHOT_OPS_NAIVE_TIME_ZONE",
        "nothing was touched",
    ):
        assert part in message, (part, message)
    assert untouched(world, ids)


def test_an_sqlite_current_timestamp_default_contradicting_the_setting_stops_the_run(
    sqlite_url, storage_root
):
    world = sqlite_naive_world(sqlite_url, storage_root, "CURRENT_TIMESTAMP")
    new = add_text(world, None)  # written by the default: UTC wall time
    old = add_text(world, django_text(dt.datetime.now(UTC) - 30 * DAY, UTC))

    result = world.run(reference_time=None, naive_time_zone="America/New_York")

    assert not result.success
    message = failure_message(result)
    assert "its default CURRENT_TIMESTAMP writes the current time at UTC" in message
    assert "unused_column_defaults ['createdAt']" in message
    assert untouched(world, {"new": new, "old": old})
    world.engine.dispose()


def test_an_sqlite_localtime_default_writes_the_applications_zone_which_is_stated(
    sqlite_url, storage_root
):
    # 'localtime' is the local zone of the process that inserts: here the application's
    # (this process, Kolkata). The job cannot see it; stated wrong (UTC, west of it), the
    # rows the default wrote read as from the future, and the run names the default.
    world = sqlite_naive_world(sqlite_url, storage_root, "(datetime('now','localtime'))")
    new = add_text(world, None)
    old = add_text(world, django_text(dt.datetime.now(UTC) - 30 * DAY, UTC))

    result = world.run(reference_time=None, naive_time_zone="UTC")

    assert not result.success
    message = failure_message(result)
    assert f"(fileId {new}) reads as created" in message
    assert (
        "and its default datetime('now','localtime') writes the local time of the process "
        "that inserts the row: the application's processes run east of UTC, about at "
        "UTC+05:30"
    ) in message
    assert untouched(world, {"new": new, "old": old})
    # Stated right, the default says nothing against it; under auto, SQLite is refused.
    assert world.run(reference_time=None, naive_time_zone="Asia/Kolkata").success
    assert state(world) == {new: (False, True), old: (True, False)}
    world.engine.dispose()


def test_an_sqlite_current_timestamp_default_agrees_with_utc(sqlite_url, storage_root):
    world = sqlite_naive_world(sqlite_url, storage_root, "CURRENT_TIMESTAMP")
    new = add_text(world, None)
    old = add_text(world, django_text(dt.datetime.now(UTC) - 30 * DAY, UTC))

    assert world.run(reference_time=None, naive_time_zone="UTC").success

    assert state(world) == {new: (False, True), old: (True, False)}
    world.engine.dispose()


# -- the backlog check ----------------------------------------------------------------------


def test_the_backlog_check_reads_naive_times_in_the_settings_zone(
    postgres_url, storage_root, without_setting
):
    # Overdue: created more than retention (7 days) + 1 day ago. Read as UTC, New York's
    # 7 d 22 h row would look 8 d 3 h old.
    world = pg_naive_world(postgres_url, storage_root, "America/New_York")
    not_yet = add_aged(world, "7 days 22 hours")
    overdue = add_aged(world, "8 days 6 hours")
    catalog = SnapshotDatabase(url=postgres_url, naive_time_zone="database").open_catalog()
    catalog.ensure_own_tables()

    outcome = check_overdue(catalog, dt.datetime.now(UTC))

    assert outcome.metadata["overdue"] == 1 and not outcome.passed
    catalog.engine.dispose()
    # Without the setting the check fails with the job's refusal, not a traceback.
    assets, checks = build_storage_assets("UTC")
    result = materialize(
        [SNAPSHOT_FILES, ORDER_ATTACHMENTS, CLEANUP_RUNS, *assets, *checks],
        selection=AssetSelection.checks_for_assets(SNAPSHOT_FILES.key),
        resources={"database": SnapshotDatabase(url=postgres_url)},
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    description = failure.step_failure_data.user_failure_data.description
    assert "the database's TimeZone 'America/New_York' is not UTC" in description
    assert untouched(world, {"not_yet": not_yet, "overdue": overdue})
    world.engine.dispose()


def test_on_a_worker_at_utcs_offset_current_timestamp_is_not_taken_for_local_time(
    sqlite_url, storage_root, monkeypatch
):
    # Europe/London is at UTC's offset in winter: there CURRENT_TIMESTAMP and 'localtime'
    # write the same text, so only the offset now can be told, which agrees with UTC.
    monkeypatch.setenv("TZ", "Europe/London")
    time.tzset()
    try:
        world = sqlite_naive_world(sqlite_url, storage_root, "CURRENT_TIMESTAMP")
        new = add_text(world, None)
        old = add_text(world, django_text(dt.datetime.now(UTC) - 30 * DAY, UTC))
        assert world.run(reference_time=None, naive_time_zone="UTC").success
        assert state(world) == {new: (False, True), old: (True, False)}
        world.engine.dispose()
    finally:
        monkeypatch.undo()
        time.tzset()


# -- a role's own zone (PostgreSQL) ---------------------------------------------------------


@pytest.fixture
def login_roles(postgres_url: str) -> Iterator[Callable[..., str]]:
    """Factory: a login role of this cluster with `grants` on both application tables and
    its own TimeZone (`ALTER ROLE ... [IN DATABASE ...] SET timezone`); returns its name.
    The roles, their grants and their settings are dropped afterwards."""
    admin = sa.create_engine(
        postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1),
        isolation_level="AUTOCOMMIT",
    )
    database = sa.engine.make_url(postgres_url).database
    made: list[str] = []

    def make(zone: str | None, *, grants: str, in_database: bool = True) -> str:
        role = f"app_{uuid.uuid4().hex[:8]}"
        scope = f' IN DATABASE "{database}"' if in_database else ""
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
            made.append(role)
            conn.exec_driver_sql(f'GRANT {grants} ON "SnapshotFiles", "OrderAttachments" TO {role}')
            if zone is not None:
                conn.exec_driver_sql(f"ALTER ROLE {role}{scope} SET timezone TO '{zone}'")
        return role

    yield make
    with admin.connect() as conn:
        for role in made:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
    admin.dispose()


def least_privileged(url: str, make: Callable[..., str]) -> str:
    """A login role with only the job's grants (docs/safety.md, "Least privilege") and no
    zone of its own; returns its database URL."""
    role = make(None, grants="SELECT")
    admin = sa.create_engine(
        url.replace("postgresql://", "postgresql+psycopg2://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f'GRANT UPDATE ("deletedAt") ON "SnapshotFiles" TO {role}')
        conn.exec_driver_sql(f"CREATE SCHEMA snapshot_ops AUTHORIZATION {role}")
    admin.dispose()
    return sa.engine.make_url(url).set(username=role).render_as_string(hide_password=False)


def engine_as(url: str, role: str) -> sa.Engine:
    """An engine on the database at `url` that logs in as `role` (its sessions get the
    role's own settings, as the application's do)."""
    as_role = sa.engine.make_url(url).set(username=role, drivername="postgresql+psycopg2")
    return sa.create_engine(as_role, poolclass=sa.pool.NullPool)


def insert_as(engine: sa.Engine, world: World, age: str | None) -> str:
    """A row (and its file) that the application inserts in a session of its own: with
    "createdAt" `now() - age`, or (None) the column default."""
    file_id = str(uuid.uuid4())
    key = f"{file_id[:2]}/{file_id}.pdf"
    (world.root / key).parent.mkdir(parents=True, exist_ok=True)
    (world.root / key).write_bytes(b"x" * 100)
    created = "DEFAULT" if age is None else "now() - CAST(%(age)s AS interval)"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            'INSERT INTO "SnapshotFiles" ("fileId", "snapshotType", "storageKey", "sizeBytes", '
            f'"createdAt") VALUES (%(id)s, %(type)s, %(key)s, 100, {created})',
            {"id": file_id, "type": TYPE, "key": key, "age": age},
        )
    return file_id


@pytest.mark.parametrize("in_database", [True, False], ids=["role_in_database", "role"])
def test_a_west_coast_roles_own_zone_is_evidence_under_auto_and_database(
    postgres_url, storage_root, login_roles, without_setting, in_database
):
    # The database is UTC; the application logs in as a role whose own TimeZone is Los
    # Angeles, and its rows get LA wall time through the default. Read as UTC, the 6 d 20 h
    # and 6 d 22 h rows look more than 7 days old.
    world = pg_naive_world(postgres_url, storage_root, "UTC")
    app = login_roles(
        "America/Los_Angeles", grants="SELECT, INSERT, UPDATE", in_database=in_database
    )
    # A role that only reads has a zone of its own too: it writes nothing, so it says nothing.
    reader = login_roles("Asia/Tokyo", grants="SELECT", in_database=in_database)
    engine = engine_as(postgres_url, app)
    ids = {
        name: insert_as(engine, world, age)
        for name, age in {
            "young": "6 days 20 hours",
            "younger": "6 days 22 hours",
            "old": "7 days 6 hours",
            "new": None,
        }.items()
    }
    engine.dispose()
    newest = world.row(ids["new"]).createdAt  # LA wall time, naive
    database = sa.engine.make_url(postgres_url).database
    statement = (
        f"ALTER ROLE {app} IN DATABASE {database} SET timezone"
        if in_database
        else f"ALTER ROLE {app} SET timezone"
    )

    # The job's own role, with only the grants it needs, reads the roles' zones too.
    job = World(least_privileged(postgres_url, login_roles), storage_root, create_tables=False)
    result = job.run(reference_time=None)
    assert not result.success
    assert f"role {app} has TimeZone 'America/Los_Angeles'" in failure_message(result)
    assert untouched(world, ids)
    job.engine.dispose()

    for setting in (None, "database"):  # as the superuser
        result = world.run(reference_time=None, naive_time_zone=setting)

        assert not result.success, setting
        message = failure_message(result)
        for part in (
            f"role {app} has TimeZone 'America/Los_Angeles' on this database ({statement})",
            "not the database's TimeZone 'UTC'",
            f"{newest} (fileId {ids['new']})",
            f"{utc_text(newest, UTC)} read in UTC (naive_time_zone)",
            f"{utc_text(newest, LOS_ANGELES)} read in America/Los_Angeles (role {app})",
            f"If the application logs in as {app}, set naive_time_zone to 'America/Los_Angeles'",
            "SNAPSHOT_OPS_NAIVE_TIME_ZONE",
            "nothing was touched",
        ):
            assert part in message, (setting, part, message)
        assert reader not in message
        assert untouched(world, ids)

    # Stated, the role's zone is followed (its sessions' default now() writes it).
    assert world.run(reference_time=None, naive_time_zone="America/Los_Angeles").success
    assert {i for i, (marked, _) in state(world).items() if marked} == {ids["old"]}
    assert all(state(world)[i] == (False, True) for n, i in ids.items() if n != "old")
    world.engine.dispose()


# -- SQLite keeps no zone -------------------------------------------------------------------


@pytest.fixture
def utc_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's local zone is UTC (a container's usual), then back."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("worker", ["UTC", "Asia/Kolkata"])
def test_django_new_york_text_on_sqlite_is_refused_under_auto_whatever_the_workers_zone(
    django_new_york, without_setting, worker, request
):
    # Django with USE_TZ=False writes New York wall time; on a worker in UTC the text looks
    # like UTC's (Django with USE_TZ=True writes the same shape). SQLite keeps no zone, so
    # `auto` does not take the worker's for the application's, in UTC or elsewhere (the
    # suite's worker is in Kolkata).
    if worker == "UTC":
        request.getfixturevalue("utc_worker")
    world, ids = django_new_york
    newest_text = stored_text(world, ids["new"], "createdAt")

    result = world.run(reference_time=None)

    assert not result.success
    message = failure_message(result)
    for part in (
        '"createdAt" of "SnapshotFiles"',
        "SQLite keeps no time zone",
        f"{newest_text} (fileId {ids['new']})",
        "Django with USE_TZ = True writes UTC: 'UTC'",
        "with USE_TZ = False, the wall time of its TIME_ZONE setting: that name",
        "SQLAlchemy and Prisma write what the application gives them, usually UTC: 'UTC'",
        "SNAPSHOT_OPS_NAIVE_TIME_ZONE",
        "nothing was touched",
    ):
        assert part in message, (part, message)
    assert untouched(world, ids)


# -- a default the application never uses ---------------------------------------------------


@pytest.fixture
def prisma_new_york(postgres_url, storage_root) -> Iterator[tuple[World, dict[str, str]]]:
    """Prisma's `createdAt DateTime @default(now())` in a database whose TimeZone is New
    York: the column is `timestamp(3) DEFAULT CURRENT_TIMESTAMP`, but Prisma's client
    writes every value itself, as UTC wall time."""
    world = pg_naive_world(
        postgres_url, storage_root, "America/New_York", "CURRENT_TIMESTAMP", precision="(3)"
    )
    now = dt.datetime.now(UTC)
    ages = {"young": 6 * DAY + 20 * HOUR, "old": 7 * DAY + 6 * HOUR, "new": dt.timedelta(0)}
    ids = {
        name: add_wall(world, (now - age).replace(tzinfo=None, microsecond=0))
        for name, age in ages.items()
    }
    yield world, ids
    world.engine.dispose()


def test_a_default_the_application_never_uses_shows_the_way_out(prisma_new_york, monkeypatch):
    world, ids = prisma_new_york
    alter = (
        'ALTER TABLE "SnapshotFiles" ALTER COLUMN "createdAt" SET DEFAULT timezone(\'UTC\', now())'
    )
    for setting in (None, "UTC"):
        result = world.run(reference_time=None, naive_time_zone=setting)
        assert not result.success
        message = failure_message(result)
        for part in (
            "its default CURRENT_TIMESTAMP writes the wall time of the database's TimeZone",
            alter,
            "unused_column_defaults",
            "SNAPSHOT_OPS_UNUSED_COLUMN_DEFAULTS=createdAt",
        ):
            assert part in message, (setting, part, message)
        assert untouched(world, ids)
    # Read in New York, Prisma's UTC values are from the future: no waiver helps there.
    monkeypatch.setenv("SNAPSHOT_OPS_UNUSED_COLUMN_DEFAULTS", "createdAt")
    for setting in ("database", "America/New_York"):
        result = world.run(reference_time=None, naive_time_zone=setting)
        assert not result.success
        assert "reads as created" in failure_message(result)
        assert untouched(world, ids)

    # The operator states both: UTC, and that the default is never used.
    assert world.run(reference_time=None, naive_time_zone="UTC").success

    assert {i for i, (marked, _) in state(world).items() if marked} == {ids["old"]}
    assert state(world)[ids["young"]] == state(world)[ids["new"]] == (False, True)


# -- a row from a clock that is wrong -------------------------------------------------------


@pytest.mark.parametrize("setting", ["UTC", "auto"])
def test_one_row_from_a_skewed_clock_is_named_as_such(postgres_url, storage_root, setting):
    # UTC stated (or auto, where the database's zone agrees): a row two hours ahead is not
    # a zone's sign but a wrong row, or a wrong clock where it was written.
    world = pg_naive_world(postgres_url, storage_root, "UTC", default=None)
    now = dt.datetime.now(UTC)
    skewed_wall = (now + 2 * HOUR).replace(tzinfo=None)
    skewed = add_wall(world, skewed_wall)
    expired = add_wall(world, (now - 30 * DAY).replace(tzinfo=None))

    result = world.run(reference_time=None, naive_time_zone=setting)

    assert not result.success
    message = failure_message(result)
    for part in (
        f"its newest live value {skewed_wall} (fileId {skewed}) reads as created",
        "this row, or the clock of the server that wrote it, is wrong",
        f'UPDATE "SnapshotFiles" SET "createdAt" = timezone(\'UTC\', now()) '
        f"WHERE \"fileId\" = '{skewed}'",
        "nothing was touched",
    ):
        assert part in message, (part, message)
    assert "Set naive_time_zone on the database resource" not in message
    assert untouched(world, {"skewed": skewed, "expired": expired})
    world.engine.dispose()


# -- zones that agree now and differ in another season --------------------------------------


def zone_at_utcs_offset_now() -> zoneinfo.ZoneInfo:
    """London in winter, the Azores in summer (both change on the EU's instants): a zone
    at UTC's offset now that is not UTC's in the other season."""
    now = dt.datetime.now(UTC)
    zones = [zoneinfo.ZoneInfo(name) for name in ("Europe/London", "Atlantic/Azores")]
    return next(z for z in zones if now.astimezone(z).utcoffset() == dt.timedelta(0))


def test_a_zone_at_utcs_offset_today_is_refused_without_a_false_disagreement(
    postgres_url, storage_root, without_setting
):
    zone = zone_at_utcs_offset_now()
    other = "UTC+01:00" if zone.key == "Europe/London" else "UTC-01:00"
    world = pg_naive_world(postgres_url, storage_root, zone.key)
    ids = {name: add_aged(world, age) for name, age in FIELD_AGES.items()}
    newest = world.row(ids["new"]).createdAt

    result = world.run(reference_time=None)

    assert not result.success
    message = failure_message(result)
    same = utc_text(newest, UTC)
    assert f"{same} read in UTC (naive_time_zone) but {same} read in" not in message
    for part in (
        f"the database's TimeZone '{zone.key}' is not UTC",
        f"the newest value {newest} (fileId {ids['new']}) is {same} read in UTC and in "
        f"{zone.key} now, but from ",
        f"{zone.key} is at {other} and UTC at UTC+00:00",
    ):
        assert part in message, (part, message)
    assert untouched(world, ids)


def test_auto_on_sqlite_refuses_naive_values_only(
    sqlite_url, tmp_path, storage_root, without_setting
):
    # Numbers are epochs, instants of their own: auto needs no zone for them.
    prisma = RepWorld(sqlite_url, storage_root, BY_NAME["sqlite_prisma_epoch_ms"])
    old, young = prisma.add(age=10 * DAY), prisma.add(age=6 * DAY)
    assert prisma.run().success
    assert state(prisma) == {old: (True, False), young: (False, True)}
    prisma.engine.dispose()
    # A naive column without a value has nothing to misread (its first rows are then
    # refused by the next run).
    empty = World(f"sqlite:///{tmp_path / 'empty.sqlite'}", storage_root)
    assert empty.run().success
    empty.add(age=10 * DAY)
    assert not empty.run().success
    empty.engine.dispose()


def test_a_utc_default_does_not_agree_with_a_zone_at_utcs_offset_only_this_season(
    postgres_url, storage_root
):
    # Stated London in winter (the Azores in summer), a default that writes UTC wall time
    # agrees today and is an hour off in the other season: it is refused now, not then.
    zone = zone_at_utcs_offset_now()
    world = pg_naive_world(postgres_url, storage_root, "UTC", "timezone('utc', now())")
    ids = {name: add_aged(world, age, "timezone('utc', now())") for name, age in FIELD_AGES.items()}

    result = world.run(reference_time=None, naive_time_zone=zone.key)

    assert not result.success
    message = failure_message(result)
    assert "its default timezone('utc'::text, now()) writes the current time at UTC" in message
    assert f"in {zone.key} and in UTC now, but from " in message
    assert untouched(world, ids)
    world.engine.dispose()
