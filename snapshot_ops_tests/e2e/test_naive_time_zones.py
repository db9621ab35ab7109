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
- (b) SQLite holding New York wall time as Django writes it (`USE_TZ=False`): without the
  setting the run refuses (SQLite's zone is the worker's local zone, not UTC); with the
  setting, or with `database` on a New York worker, exactly the 7 d 6 h row goes.
- (c) PostgreSQL in Europe/Berlin with `DEFAULT now()`: under `UTC` a row created a second
  ago reads an hour in the future, and the run refuses naming that row.
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
from collections.abc import Iterator

import pytest
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
from snapshot_ops_tests.support.time_representations import set_database_timezone
from snapshot_ops_tests.support.world import World

HOUR = dt.timedelta(hours=1)
UTC = dt.UTC
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
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


def pg_naive_world(url: str, root, zone: str, default: str | None = "now()") -> World:
    """A World on a PostgreSQL database whose TimeZone is `zone`, with naive time columns
    ("createdAt" with `default`)."""
    set_database_timezone(url, zone)
    world = World(url, root, create_tables=False)
    with world.engine.begin() as conn:
        conn.exec_driver_sql(
            'CREATE TABLE "SnapshotFiles" ("fileId" text primary key, "snapshotType" text '
            'not null, "parseSessionId" text, "storageKey" text not null, "sizeBytes" bigint, '
            f'"createdAt" timestamp without time zone {f"DEFAULT {default}" if default else ""}, '
            '"deletedAt" timestamp without time zone)'
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


def test_b_django_new_york_text_without_the_setting_refuses_untouched(
    django_new_york, without_setting
):
    world, ids = django_new_york
    newest_text = stored_text(world, ids["new"], "createdAt")
    newest = dt.datetime.fromisoformat(newest_text)

    result = world.run(reference_time=None)

    assert not result.success
    message = failure_message(result)
    for part in (
        '"createdAt" of "SnapshotFiles"',
        "this worker's local zone 'Asia/Kolkata'",  # the suite's worker zone: not UTC
        f"{newest_text} (fileId {ids['new']})",
        f"{utc_text(newest, UTC)} read in UTC (naive_time_zone)",
        f"{utc_text(newest, zoneinfo.ZoneInfo('Asia/Kolkata'))} read in Asia/Kolkata",
        "SNAPSHOT_OPS_NAIVE_TIME_ZONE",
        "nothing was touched",
    ):
        assert part in message, (part, message)
    assert untouched(world, ids)


@pytest.mark.parametrize("worker", ["Asia/Kolkata", "America/New_York"])
def test_b_with_the_setting_exactly_the_expired_django_row_goes(django_new_york, worker, request):
    # The setting names New York; or, on a worker whose local zone is the application's,
    # `database` (SQLite's zone is the local zone of the processes that use the file).
    world, ids = django_new_york
    setting = "America/New_York"
    if worker == "America/New_York":
        request.getfixturevalue("new_york_worker")
        setting = "database"
    started = dt.datetime.now(UTC)

    result = world.run(reference_time=None, naive_time_zone=setting)

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


@pytest.mark.parametrize(
    ("default", "setting", "says"),
    [
        # The worker's local zone is Kolkata (conftest.py): 'localtime' writes its wall time.
        (
            "(datetime('now','localtime'))",
            "UTC",
            "its default datetime('now','localtime') writes the wall time of this worker's "
            "local zone 'Asia/Kolkata'",
        ),
        (
            "CURRENT_TIMESTAMP",
            "America/New_York",
            "its default CURRENT_TIMESTAMP writes the current time at UTC",
        ),
    ],
)
def test_an_sqlite_default_contradicting_the_setting_stops_the_run(
    sqlite_url, storage_root, default, setting, says
):
    world = sqlite_naive_world(sqlite_url, storage_root, default)
    new = add_text(world, None)  # written by the default
    old = add_text(world, django_text(dt.datetime.now(UTC) - 30 * DAY, UTC))

    result = world.run(reference_time=None, naive_time_zone=setting)

    assert not result.success
    message = failure_message(result)
    assert says in message, message
    assert untouched(world, {"new": new, "old": old})
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
