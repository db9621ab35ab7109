"""End to end through Dagster (in process): what a cleanup run deletes, keeps and records.

Every test runs on PostgreSQL and on SQLite and looks at the rows, the files on disk and
the run log afterwards, never only at whether the run "succeeded".
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from snapshot_ops.db import make_engine
from snapshot_ops.db.schema import Tables
from snapshot_ops.defs.resources import SnapshotDatabase
from snapshot_ops.demo import app_tables
from snapshot_ops.errors import ConfigError, SchemaError
from snapshot_ops.rules import PERMANENT_TYPE
from snapshot_ops_tests.support.jobs import run_cleanup, step_metadata
from snapshot_ops_tests.support.world import World

DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)


def test_expired_unlinked_goes_everything_else_stays(world):
    expired = world.add(age=8 * DAY)
    linked = world.add(age=30 * DAY, linked=True)
    fresh = world.add(age=6 * DAY)
    permanent = world.add(age=400 * DAY, snapshot_type=PERMANENT_TYPE)
    permanent_linked = world.add(age=400 * DAY, snapshot_type=PERMANENT_TYPE, linked=True)

    result = world.run()

    assert result.success
    assert world.is_deleted(expired) and not world.has_file(expired)
    for kept in (linked, fresh, permanent, permanent_linked):
        assert not world.is_deleted(kept) and world.has_file(kept)
    [log] = world.run_log()
    assert (log.status, log.deleted_count, log.error_count, log.bytes_reclaimed) == (
        "succeeded",
        1,
        0,
        100,
    )
    assert world.pending() == []


def test_age_boundary_is_strictly_older_than_retention(world):
    at_cutoff = world.add(age=7 * DAY)
    just_older = world.add(age=7 * DAY + SECOND)
    just_younger = world.add(age=7 * DAY - SECOND)

    assert world.run().success

    assert world.is_deleted(just_older) and not world.has_file(just_older)
    for kept in (at_cutoff, just_younger):
        assert not world.is_deleted(kept) and world.has_file(kept)


def test_retention_and_reference_time_come_from_run_config(world):
    three_days = world.add(age=3 * DAY)
    assert world.run(retention_days=2).success
    assert world.is_deleted(three_days)

    # As of a day earlier, with 7 days' retention, an 8-day-old file is still young.
    eight_days = world.add(age=8 * DAY)
    earlier = (dt.datetime(2026, 11, 20, 3, 0, tzinfo=dt.UTC) - 2 * DAY).isoformat()
    assert world.run(reference_time=earlier).success
    assert not world.is_deleted(eight_days)


@pytest.mark.parametrize(
    "snapshot_type",
    [
        PERMANENT_TYPE,
        "parsesessionsnapshot",
        "PARSESESSIONSNAPSHOT",
        "ParseSessionSnapshot ",
        "Other",
    ],
)
def test_only_the_exact_temporary_type_is_ever_deleted(world, snapshot_type):
    other = world.add(age=100 * DAY, snapshot_type=snapshot_type)
    assert world.run().success
    assert not world.is_deleted(other) and world.has_file(other)


def test_a_file_linked_to_an_order_is_kept_whatever_its_type_or_age(world):
    ids = [world.add(age=age * DAY, linked=True) for age in (8, 90, 3650)]
    result = world.run()
    assert result.success
    assert all(not world.is_deleted(i) and world.has_file(i) for i in ids)
    assert step_metadata(result, "identify_expired_candidates")["keptLinkedToOrders"] == 3
    # Excluded as candidates up front, not only caught by the re-check under the lock.
    assert step_metadata(result, "mark_and_delete_expired")["attachedDuringRun"] == 0


def test_already_deleted_rows_are_left_alone(world):
    # The application (or an earlier run) marked it; its file is none of this run's business.
    done = world.add(age=30 * DAY, deleted=True)
    marked_at = world.row(done).deletedAt
    result = world.run()
    assert result.success
    assert world.row(done).deletedAt == marked_at and world.has_file(done)
    assert world.run_log()[0].deleted_count == 0
    assert step_metadata(result, "identify_expired_candidates")["candidates"] == 0


def test_a_missing_object_is_reported_apart_and_not_counted_as_deleted(world):
    gone = world.add(age=9 * DAY, with_file=False, size=500)
    present = world.add(age=9 * DAY, size=700)

    result = world.run()

    assert result.success
    assert world.is_deleted(gone) and world.is_deleted(present)
    [log] = world.run_log()
    assert (log.deleted_count, log.missing_count, log.bytes_reclaimed) == (1, 1, 700)
    assert step_metadata(result, "mark_and_delete_expired")["alreadyMissing"] == 1


def test_null_size_is_read_from_the_object(world):
    unsized = world.add(age=9 * DAY, size=None)
    assert (world.root / world.row(unsized).storageKey).stat().st_size == 10
    assert world.run().success
    assert world.run_log()[0].bytes_reclaimed == 10


@pytest.mark.parametrize("key", ["../outside/secret.pdf", "/etc/hostname", "a/../../x.pdf", ""])
def test_key_escaping_the_root_is_refused_and_reported(world, tmp_path, key):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.pdf").write_bytes(b"keep")
    bad = world.add(age=30 * DAY, key=key, with_file=False)
    good = world.add(age=30 * DAY)

    result = world.run()

    assert not result.success  # errors end the run failed, after the rest is done
    assert not world.is_deleted(bad)  # left live, not marked
    assert world.is_deleted(good) and not world.has_file(good)
    assert (outside / "secret.pdf").read_bytes() == b"keep"
    [log] = world.run_log()
    assert log.status == "failed" and log.error_count == 1 and log.deleted_count == 1
    assert "refused" in json.loads(log.errors)[0]


def test_one_failing_object_does_not_stop_the_others(world):
    # A name longer than the filesystem takes: its delete fails; the others still go.
    # (Symlinks and folders are refused before marking: see test_refused_keys.py.)
    ids = [world.add(age=10 * DAY) for _ in range(5)]
    (world.root / "blocked").mkdir()
    blocked = world.add(age=10 * DAY, key="blocked/" + "n" * 300, with_file=False)

    result = world.run(batch_size=2)

    assert not result.success
    assert all(world.is_deleted(i) and not world.has_file(i) for i in ids)
    [log] = world.run_log()
    assert (log.status, log.deleted_count, log.error_count) == ("failed", 5, 1)
    assert [p.file_id for p in world.pending()] == [blocked]
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "1 error(s)" in failure[0].step_failure_data.error.message


def test_dry_run_changes_nothing_and_reports_what_would_go(world):
    expired = [world.add(age=10 * DAY) for _ in range(3)]
    kept = world.add(age=10 * DAY, linked=True)

    result = world.run(dry_run=True, batch_size=2)

    assert result.success
    assert all(not world.is_deleted(i) and world.has_file(i) for i in [*expired, kept])
    assert world.pending() == []
    assert step_metadata(result, "mark_and_delete_expired")["marked"] == 3
    listing = step_metadata(result, "identify_expired_candidates")["wouldDelete"]
    assert sorted(r.data["fileId"] for r in listing.records) == sorted(expired)
    [log] = world.run_log()
    assert log.dry_run and log.deleted_count == 0


def test_over_the_cap_nothing_is_deleted(world):
    ids = [world.add(age=10 * DAY) for _ in range(4)]

    result = world.run(max_deletions=3)

    assert not result.success
    assert all(not world.is_deleted(i) and world.has_file(i) for i in ids)
    [log] = world.run_log()
    assert log.status == "failed" and "max_deletions=3" in json.loads(log.errors)[0]

    assert world.run(max_deletions=4).success
    assert all(world.is_deleted(i) and not world.has_file(i) for i in ids)


def test_batches_cover_every_candidate_and_a_second_run_deletes_nothing(world):
    expired = [world.add(age=(8 + n) * DAY) for n in range(7)]
    kept = [world.add(age=(8 + n) * DAY, linked=True) for n in range(3)]

    assert world.run(batch_size=2).success
    assert world.run(batch_size=2).success

    assert all(world.is_deleted(i) and not world.has_file(i) for i in expired)
    assert all(not world.is_deleted(i) and world.has_file(i) for i in kept)
    first, second = world.run_log()
    assert (first.deleted_count, second.deleted_count) == (7, 0)
    assert (first.bytes_reclaimed, second.bytes_reclaimed) == (700, 0)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"retention_days": 0}, "retention_days must be greater than 0"),
        ({"reference_time": "2026-11-20T03:00:00"}, "no UTC offset"),
        ({"reference_time": "2099-01-01T00:00:00+00:00"}, "in the future"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_config_fails_before_anything_is_touched(world, config, message):
    expired = world.add(age=30 * DAY)
    result = world.run(**config)
    assert not result.success
    assert not world.is_deleted(expired) and world.has_file(expired)
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert message in failure[0].step_failure_data.error.message


def test_bad_storage_root_fails_before_anything_is_touched(world, tmp_path):
    expired = world.add(age=30 * DAY)
    world.root = tmp_path / "no-such-root"
    assert not world.run().success
    assert not world.is_deleted(expired)


def test_missing_columns_are_named(db_url, storage_root):
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            'CREATE TABLE "SnapshotFiles" ("fileId" text primary key, "snapshotType" text, '
            '"storageKey" text, "createdAt" timestamp with time zone)'
        )
        conn.exec_driver_sql('CREATE TABLE "OrderAttachments" ("orderId" text, "fileId" text)')
    engine.dispose()
    result = World(db_url, storage_root, create_tables=False).run()
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert (
        "table \"SnapshotFiles\" lacks column(s) 'sizeBytes', 'deletedAt' that the cleanup job "
        "needs"
    ) in failure[0].step_failure_data.error.message


def test_missing_table_is_named(db_url, storage_root):
    result = World(db_url, storage_root, create_tables=False).run()
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert 'table "SnapshotFiles" not found' in failure[0].step_failure_data.error.message


def refusal(engine: sa.Engine, error: type[Exception], **settings: str) -> str:
    """The message of the `error` that reading the application's tables on `engine` (with
    the database resource's `settings`) raises; the engine is disposed either way."""
    try:
        with pytest.raises(error) as refused:
            Tables(engine, **settings)
    finally:
        engine.dispose()
    return str(refused.value)


def test_a_table_missing_from_the_app_schema_is_named_with_its_schema(postgres_url):
    engine = make_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA app")
    assert refusal(engine, SchemaError, app_schema="app") == (
        'table "app.SnapshotFiles" not found in the application database; if it is called '
        "otherwise, set snapshot_files_table (and app_schema, if it is in another schema) on "
        "the database resource"
    )


def test_a_missing_attachments_table_is_named_with_its_setting(db_url):
    engine = make_engine(db_url)
    files, _ = app_tables(sa.MetaData())
    files.create(engine)
    assert refusal(engine, SchemaError) == (
        'table "OrderAttachments" not found in the application database; if it is called '
        "otherwise, set order_attachments_table (and app_schema, if it is in another schema) "
        "on the database resource"
    )


def test_an_application_database_that_cannot_be_reached_is_a_config_error(tmp_path):
    # SQLite cannot open a file in a folder that does not exist: the connection fails.
    engine = make_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'app.db'}")
    assert refusal(engine, ConfigError) == (
        "cannot connect to the application database: unable to open database file"
    )


def test_missing_indexes_are_recommended_never_created(world):
    world.add(age=10 * DAY)
    result = world.run()
    advice = step_metadata(result, "identify_expired_candidates")["missingIndexes"]
    assert '"SnapshotFiles_expiry_idx"' in advice and '"OrderAttachments_fileId_idx"' in advice
    indexes = sa.inspect(world.engine).get_indexes("SnapshotFiles")
    assert indexes == []  # recommended, not created
    # On PostgreSQL built CONCURRENTLY, so the application's writes go on meanwhile; SQLite
    # has no such form.
    postgres = world.engine.dialect.name == "postgresql"
    assert [("CONCURRENTLY" in s) for s in advice.splitlines()] == [postgres] * 3

    for statement in advice.splitlines():  # run as the database owner would
        if "CONCURRENTLY" in statement:  # PostgreSQL refuses it inside a transaction
            with world.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(statement)
        else:
            with world.engine.begin() as conn:
                conn.exec_driver_sql(statement)
    result = world.run()
    assert step_metadata(result, "identify_expired_candidates")["missingIndexes"] == "none"


@pytest.mark.parametrize(
    ("primary_key", "advised"), [(("fileId", "orderId"), False), (("orderId", "fileId"), True)]
)
def test_a_primary_key_leading_with_the_column_serves_as_its_index(
    postgres_url, primary_key, advised
):
    # An attachment table keyed by ("fileId", "orderId"), in the application's own schema,
    # is searched by "fileId" through its key: no index is advised. Keyed the other way
    # round, it is not.
    engine = make_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA app")
    files, attachments = app_tables(sa.MetaData(), schema="app")
    attachments.append_constraint(sa.PrimaryKeyConstraint(*primary_key))
    files.metadata.create_all(engine)
    try:
        advice = Tables(engine, app_schema="app").missing_indexes()
    finally:
        engine.dispose()
    assert ['"OrderAttachments_fileId_idx"' in statement for statement in advice] == [
        False,
        False,
        *([True] if advised else []),
    ]


def test_tables_in_the_app_schema_are_cleaned_and_advised_there(postgres_url, storage_root):
    # The application's tables live in schema "app"; same-named tables in "public", first
    # on the search path, hold a row that would be expired there. The run and its index
    # advice must name "app"'s tables, never reach "public"'s.
    decoy = World(postgres_url, storage_root)
    untouched = decoy.add(age=10 * DAY)
    world = World(postgres_url, storage_root, create_tables=False)
    with world.engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA app")
    world.files, world.attachments = app_tables(sa.MetaData(), schema="app")
    world.files.metadata.create_all(world.engine)
    expired, linked = world.add(age=10 * DAY), world.add(age=10 * DAY, linked=True)
    database = SnapshotDatabase(url=postgres_url, app_schema="app")

    result = run_cleanup(database, storage_root.as_uri())

    assert result.success
    assert world.is_deleted(expired) and not world.has_file(expired)
    assert not world.is_deleted(linked) and world.has_file(linked)
    assert not decoy.is_deleted(untouched) and decoy.has_file(untouched)
    advice = step_metadata(result, "identify_expired_candidates")["missingIndexes"]
    owner = world.engine.execution_options(isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:  # CONCURRENTLY runs outside a transaction
        for statement in advice.splitlines():
            conn.exec_driver_sql(statement)
    inspector = sa.inspect(world.engine)
    assert len(inspector.get_indexes("SnapshotFiles", schema="app")) == 2
    assert len(inspector.get_indexes("OrderAttachments", schema="app")) == 1
    assert inspector.get_indexes("SnapshotFiles") == []
    result = run_cleanup(database, storage_root.as_uri())
    assert step_metadata(result, "identify_expired_candidates")["missingIndexes"] == "none"
    world.engine.dispose()
    decoy.engine.dispose()
