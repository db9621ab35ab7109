"""How "createdAt" is read and "deletedAt" written, in each representation applications use.

Pinned down here:
- Prisma on SQLite (epoch milliseconds in a DATETIME column): of rows 10 days, 2 days and
  1 hour old, exactly the 10-day one is deleted; the same rows counted by the run's
  summary, listed for the storage check and counted by the overdue check.
- A naive "deletedAt" (PostgreSQL `timestamp without time zone`) gets the wall time of the
  zone naive_time_zone states (UTC, or the database's) under database TimeZones west and
  east of UTC; a timestamptz gets the instant.
- "deletedAt" is written in the application's own representation on SQLite.
- A "createdAt" the job cannot read for sure (mixed representations, text that is not ISO
  8601, numbers whose unit is unclear, varying offsets, a varying fraction width before
  `Z`) stops the run before anything is touched, with a message naming the column, a
  sample value and the setting; `time_format` settles the unit when the data cannot.
- For every representation on PostgreSQL, the index advice, applied, gives the candidate
  walk an index range scan on "createdAt" in the walk's order (no sort), text in byte order.
- For every representation, `bound` compares exactly at the cutoff (pure, byte order).
The random datasets for every representation are in test_property_oracle.py.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import zoneinfo

import pytest
import sqlalchemy as sa

from snapshot_ops import reconcile as reconcile_module
from snapshot_ops.db import Catalog, make_engine
from snapshot_ops.defs.assets import check_overdue
from snapshot_ops.defs.resources import SnapshotDatabase
from snapshot_ops.storage import open_storage
from snapshot_ops.timeformat import TimeFormat, TimeFormatError
from snapshot_ops_tests.support.jobs import run_cleanup, step_metadata
from snapshot_ops_tests.support.scenarios import DAY
from snapshot_ops_tests.support.time_representations import (
    BY_NAME,
    NEW_YORK,
    REPRESENTATIONS,
    RepWorld,
    set_database_timezone,
)
from snapshot_ops_tests.support.world import NOW, World

HOUR = dt.timedelta(hours=1)
US = dt.timedelta(microseconds=1)


def run(world: RepWorld, time_format: str = "auto", naive_time_zone: str | None = None, **config):
    database = SnapshotDatabase(
        url=world.db_url, time_format=time_format, naive_time_zone=naive_time_zone
    )
    return run_cleanup(database, world.root.as_uri(), **config)


def failure_message(result) -> str:
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return event.step_failure_data.user_failure_data.description


@pytest.fixture
def prisma_sqlite(sqlite_url, storage_root):
    world = RepWorld(sqlite_url, storage_root, BY_NAME["sqlite_prisma_epoch_ms"])
    yield world
    world.engine.dispose()


def test_prisma_epoch_milliseconds_on_sqlite_deletes_only_the_expired_row(prisma_sqlite):
    world = prisma_sqlite
    old = world.add(age=10 * DAY)
    recent = world.add(age=2 * DAY)
    fresh = world.add(age=HOUR)
    assert world.stored()[old].createdAt == (NOW - 10 * DAY - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)  # fmt: skip  # noqa: E501

    started = dt.datetime.now(dt.UTC)
    result = run(world)

    assert result.success
    assert step_metadata(result, "identify_expired_candidates")["candidates"] == 1
    assert world.is_deleted(old) and not world.has_file(old)
    for kept in (recent, fresh):
        assert not world.is_deleted(kept) and world.has_file(kept)
    # "deletedAt" in the application's representation: integer milliseconds of the run.
    deleted_at = world.stored()[old].deletedAt
    assert isinstance(deleted_at, int)
    assert (
        started - dt.timedelta(seconds=1) <= world.rep.read(deleted_at) <= dt.datetime.now(dt.UTC)
    )
    [log] = world.run_log()
    assert log.deleted_count == 1


@pytest.mark.integration
def test_summary_storage_sample_overdue_check_and_reconcile_read_epoch_milliseconds(
    prisma_sqlite, storage_root
):
    world = prisma_sqlite
    old = world.add(age=10 * DAY)
    world.add(age=2 * DAY)
    world.add(age=HOUR)
    gone = world.add(age=30 * DAY, with_file=False)
    with world.engine.begin() as conn:  # marked by the application itself, in its own format
        conn.execute(
            sa.update(world.files)
            .where(world.files.c.fileId == gone)
            .values(deletedAt=world.rep.write(NOW))
        )
    catalog = Catalog(world.engine)
    catalog.ensure_own_tables()
    cutoff = NOW - 7 * DAY

    assert catalog.summarize(cutoff).candidates == 1
    assert [c.file_id for batch in catalog.iter_candidates(cutoff, 20) for c in batch] == [old]
    overdue = check_overdue(catalog, NOW)  # retention 7 days + 1: only the 10-day row
    assert overdue.metadata["overdue"] == 1 and not overdue.passed
    backend = open_storage(storage_root.as_uri())
    report = reconcile_module.reconcile(catalog, backend)
    backend.close()
    assert report.rows == 4 and report.missing_objects.count == 0
    assert report.orphan_objects.count == 0


@pytest.mark.parametrize("zone", ["America/Los_Angeles", "Asia/Tokyo"])
@pytest.mark.parametrize("column_type", ["pg_timestamp_utc", "pg_timestamptz"])
def test_deleted_at_is_the_run_time_in_the_stated_zone_whatever_the_session_zone(
    postgres_url, storage_root, zone, column_type
):
    # The database's TimeZone is neither UTC nor the one stated: naive_time_zone decides
    # the wall time "deletedAt" gets, never the session.
    set_database_timezone(postgres_url, zone)
    world = RepWorld(postgres_url, storage_root, BY_NAME[column_type])
    old = world.add(age=10 * DAY)
    young = world.add(age=7 * DAY - HOUR)

    result = run(world, naive_time_zone="UTC")

    assert result.success
    [log] = world.run_log()
    run_at = log.run_at.astimezone(dt.UTC)
    stored = world.stored()
    assert stored[young].deletedAt is None and world.has_file(young)
    if column_type == "pg_timestamp_utc":
        assert stored[old].deletedAt == run_at.replace(tzinfo=None)  # UTC wall time, exact
    else:
        assert stored[old].deletedAt == run_at
    world.engine.dispose()


@pytest.mark.parametrize("zone", ["America/Los_Angeles", "Asia/Tokyo"])
def test_a_naive_deleted_at_gets_the_database_zones_wall_time_under_database(
    postgres_url, storage_root, zone
):
    # "createdAt" a timestamptz, "deletedAt" naive: the setting still decides how it is
    # written (here the database's zone, as the application's now() would write it).
    set_database_timezone(postgres_url, zone)
    world = World(postgres_url, storage_root, create_tables=False)
    world.files.c.deletedAt.type = sa.DateTime(timezone=False)
    world.files.metadata.create_all(world.engine)
    old = world.add(age=10 * DAY)

    assert run(world, naive_time_zone="database").success

    [log] = world.run_log()
    run_at = log.run_at.astimezone(zoneinfo.ZoneInfo(zone)).replace(tzinfo=None)
    assert world.row(old).deletedAt == run_at  # the zone's wall time, exact
    world.engine.dispose()


def test_text_on_postgresql_is_compared_in_byte_order(postgres_url, storage_root):
    # Under the column's ICU collation "03:00:00+00:00" sorts after "03:00:00.5+00:00",
    # so a row stored at a whole second just before the cutoff would be kept forever.
    world = RepWorld(postgres_url, storage_root, BY_NAME["pg_text_isoformat_icu"])
    reference = NOW + dt.timedelta(milliseconds=500)
    just_older = world.add(age=7 * DAY, now=NOW)  # stored "...03:00:00+00:00"
    just_younger = world.add(age=7 * DAY - dt.timedelta(milliseconds=600), now=NOW)

    assert run(world, reference_time=reference.isoformat()).success

    assert world.is_deleted(just_older) and not world.has_file(just_older)
    assert not world.is_deleted(just_younger) and world.has_file(just_younger)
    world.engine.dispose()


@pytest.mark.integration
@pytest.mark.parametrize(
    "rep", [r for r in REPRESENTATIONS if r.dialect == "postgres"], ids=lambda r: r.name
)
def test_the_advised_indexes_serve_the_candidate_walk(postgres_url, storage_root, rep):
    # The index advice, applied as the database owner would, must give the walk's keyset
    # query an index range scan in its own order: for text "createdAt" that needs the
    # index in byte order (COLLATE "C"), as the query compares; in the column's own
    # collation the cutoff becomes a filter and every batch a sort of all candidates.
    world = RepWorld(postgres_url, storage_root, rep)
    for age in range(1, 21):
        world.add(age=age * DAY, linked=age % 5 == 0)
    catalog = SnapshotDatabase(url=postgres_url).open_catalog()
    owner = catalog.engine.execution_options(isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:  # CONCURRENTLY runs outside a transaction
        for statement in catalog.missing_indexes():
            conn.exec_driver_sql(statement)
    query = catalog._candidate_query(NOW - 7 * DAY, None, 100)
    sql = query.compile(catalog.engine, compile_kwargs={"literal_binds": True})
    with catalog.engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # 20 rows: else it scans
        plan = "\n".join(conn.exec_driver_sql(f"EXPLAIN {sql}").scalars())

    scan = plan.partition('Index Scan using "SnapshotFiles_expiry_idx"')[2]
    assert "Index Cond:" in scan.splitlines()[1] and '"createdAt"' in scan.splitlines()[1], plan
    assert "Sort" not in plan, plan
    assert '"OrderAttachments_fileId_idx"' in plan, plan  # the linkage probe
    catalog.engine.dispose()
    world.engine.dispose()


@pytest.mark.parametrize(
    "name", ["sqlite_text_js_iso", "sqlite_text_plus_two", "sqlite_epoch_seconds"]
)
def test_deleted_at_is_written_as_the_application_writes_it(sqlite_url, storage_root, name):
    world = RepWorld(sqlite_url, storage_root, BY_NAME[name])
    old = world.add(age=10 * DAY)

    assert run(world).success

    [log] = world.run_log()
    run_at = dt.datetime.fromisoformat(log.run_at).replace(tzinfo=dt.UTC)
    # The job writes what the application would write for the run's instant.
    assert world.stored()[old].deletedAt == world.rep.write(run_at)
    world.engine.dispose()


#: case -> (representation of the column, odd values stored next to a well-formed young row,
#: texts the message must contain)
UNREADABLE = {
    "mixed text and numbers": (
        "sqlite_prisma_epoch_ms",
        ["2026-11-01 03:00:00.000000"],
        ("2026-11-01 03:00:00.000000", "numbers"),
    ),
    "text that is not ISO 8601": ("sqlite_text_js_iso", ["01/11/2026 03:00"], ("01/11/2026",)),
    "numbers written as text": ("sqlite_text_js_iso", ["1762000000000"], ("1762000000000",)),
    "numbers of unclear unit": (
        "sqlite_epoch_seconds",
        [631_152_000, 640_000_000],
        ("631152000", "epoch_seconds"),
    ),
    "varying offsets": (
        "sqlite_text_python_isoformat",
        ["2026-11-01T03:00:00+02:00"],
        ("+02:00", "+00:00"),
    ),
    "varying separators": (
        "sqlite_text_python_isoformat",
        ["2026-11-02 03:00:00+00:00"],
        ("2026-11-",),
    ),
    "varying fraction width before Z": ("sqlite_text_js_iso", ["2026-11-01T03:00:00Z"], ("Z",)),
    "a blob": ("sqlite_text_js_iso", [b"\x00\x01"], ("blob",)),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_a_created_at_that_cannot_be_read_for_sure_stops_the_run_untouched(
    sqlite_url, storage_root, case
):
    rep, values, expected_in_message = UNREADABLE[case]
    world = RepWorld(sqlite_url, storage_root, BY_NAME[rep])
    ids = [world.add(age=DAY, created=value) for value in values]
    fresh = world.add(age=HOUR)  # a well-formed young row among them
    old = world.add(age=30 * DAY)  # and an expired one: it must stay too

    result = run(world)

    assert not result.success
    message = failure_message(result)
    assert '"createdAt"' in message and "time_format" in message, message
    assert "nothing was touched" in message, message
    for text in expected_in_message:
        assert text in message, message
    for file_id in [*ids, fresh, old]:
        assert not world.is_deleted(file_id) and world.has_file(file_id)
    world.engine.dispose()


def test_time_format_settles_numbers_the_data_cannot(sqlite_url, storage_root):
    # Epoch seconds of 1990: neither unit is plausible, so auto refuses; the setting reads
    # them as seconds, and the retention is measured against a 1990 reference time.
    world = RepWorld(sqlite_url, storage_root, BY_NAME["sqlite_epoch_seconds"])
    then = dt.datetime(1990, 6, 1, tzinfo=dt.UTC)
    old = world.add(age=10 * DAY, now=then)
    young = world.add(age=DAY, now=then)
    reference = then.isoformat()

    refused = run(world, reference_time=reference)
    assert not refused.success and "epoch_seconds" in failure_message(refused)

    result = run(world, time_format="epoch_seconds", reference_time=reference)
    assert result.success
    assert world.is_deleted(old) and not world.has_file(old)
    assert not world.is_deleted(young) and world.has_file(young)
    assert isinstance(world.stored()[old].deletedAt, int)
    world.engine.dispose()


def test_a_time_format_the_data_contradicts_stops_the_run(prisma_sqlite):
    old = prisma_sqlite.add(age=10 * DAY)
    result = run(prisma_sqlite, time_format="iso_text")
    assert not result.success and "iso_text" in failure_message(result)
    assert not prisma_sqlite.is_deleted(old) and prisma_sqlite.has_file(old)


@pytest.mark.unit
def test_an_unknown_time_format_is_refused(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'app.sqlite'}")
    with sqlite3.connect(tmp_path / "app.sqlite") as conn:
        conn.execute(
            'CREATE TABLE "SnapshotFiles" ("fileId", "snapshotType", "storageKey", '
            '"sizeBytes", "createdAt", "deletedAt")'
        )
        conn.execute('CREATE TABLE "OrderAttachments" ("fileId")')
    with pytest.raises(TimeFormatError, match="epoch_milliseconds"):
        Catalog(engine, time_format="millis")
    engine.dispose()


FORMATS = {
    "timestamptz": TimeFormat("timestamp"),
    "naive": TimeFormat("timestamp", naive=True),
    "naive, New York": TimeFormat("timestamp", naive=True, zone=NEW_YORK),
    "text, 6 digits": TimeFormat("iso_text"),
    "text, T, 3 digits, Z": TimeFormat("iso_text", separator="T", fraction_digits=3, suffix="Z"),
    "text, T, no fraction, +02:00": TimeFormat(
        "iso_text", separator="T", fraction_digits=0, suffix="+02:00"
    ),
    "text, varying width, +00:00": TimeFormat(
        "iso_text", separator="T", fraction_digits=None, suffix="+00:00"
    ),
    "text, varying width, naive": TimeFormat("iso_text", fraction_digits=None),
    "text, varying width, New York": TimeFormat("iso_text", fraction_digits=None, zone=NEW_YORK),
    "text, 9 digits": TimeFormat("iso_text", fraction_digits=9),
    "epoch seconds": TimeFormat("epoch_seconds"),
    "epoch seconds, real": TimeFormat("epoch_seconds", whole_numbers=False),
    "epoch milliseconds": TimeFormat("epoch_milliseconds"),
}


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_bound_is_exact_at_the_cutoff(name):
    """For stored values around a cutoff, `stored < bound(cutoff)` (Python's comparison:
    byte order for text, as SQLite's BINARY and PostgreSQL's "C") holds exactly when the
    stored instant is earlier than the cutoff."""
    fmt = FORMATS[name]
    base = dt.datetime(2026, 11, 13, 3, 0, tzinfo=dt.UTC)
    steps = [0, 1, 499, 500, 501, 999, 1000, 1001, 499_999, 500_000, 999_999, 1_000_000]
    instants = sorted({base + sign * s * US for s in steps for sign in (1, -1)})
    for cutoff in instants:
        bound = fmt.bound(cutoff)
        for instant in instants:
            stored = fmt.encode(instant)
            assert (stored < bound) == (fmt.decode(stored) < cutoff), (
                name,
                cutoff,
                instant,
                stored,
                bound,
            )


@pytest.mark.unit
@pytest.mark.parametrize("rep", REPRESENTATIONS, ids=str)
def test_the_job_reads_each_representation_as_its_application_writes_it(rep):
    """The test's own writers agree with the job's reading of each representation."""
    fmt = {
        "pg_timestamptz": FORMATS["timestamptz"],
        "pg_timestamp_utc": FORMATS["naive"],
        "pg_timestamp_new_york": FORMATS["naive, New York"],
        "pg_bigint_ms": FORMATS["epoch milliseconds"],
        "pg_text_isoformat_icu": FORMATS["text, varying width, +00:00"],
        "sqlite_text_space_micros": FORMATS["text, 6 digits"],
        "sqlite_text_django_new_york": FORMATS["text, varying width, New York"],
        "sqlite_text_js_iso": FORMATS["text, T, 3 digits, Z"],
        "sqlite_text_python_isoformat": FORMATS["text, varying width, +00:00"],
        "sqlite_text_plus_two": FORMATS["text, T, no fraction, +02:00"],
        "sqlite_epoch_seconds": FORMATS["epoch seconds"],
        "sqlite_epoch_seconds_real": FORMATS["epoch seconds, real"],
        "sqlite_prisma_epoch_ms": FORMATS["epoch milliseconds"],
    }[rep.name]
    for instant in (NOW, NOW + 123_456 * US, NOW - 7 * DAY + 999_999 * US):
        assert fmt.encode(instant) == rep.write(instant)
        assert fmt.decode(rep.write(instant)) == rep.read(rep.write(instant))


@pytest.mark.integration
def test_a_text_deleted_at_beside_a_timestamp_created_at_is_refused(postgres_url, storage_root):
    # "createdAt" is a PostgreSQL timestamp but "deletedAt" is text: how to write it cannot
    # be told from "createdAt", so the catalog refuses before anything is touched, naming
    # the column and what to change.
    world = World(postgres_url, storage_root, create_tables=False)
    world.files.c.deletedAt.type = sa.Text()
    world.files.metadata.create_all(world.engine)
    world.add(age=10 * DAY)
    catalog = SnapshotDatabase(url=postgres_url).open_catalog()
    try:
        with pytest.raises(
            TimeFormatError, match='"deletedAt" .* is declared TEXT, not a'
        ) as refused:
            catalog.times  # noqa: B018
        # The advice is one that works: time_format cannot help here (with a native
        # timestamp "createdAt" it must be auto or timestamp).
        assert 'Declare "deletedAt" with the type of "createdAt"' in str(refused.value)
        assert world.live_rows() == 1
    finally:
        catalog.engine.dispose()
        world.engine.dispose()
