"""Bad or odd application data: each case is deleted correctly, or refused and reported with
nothing touched, and never costs an order its file.

Covered elsewhere: `..`, absolute and empty keys, symlinks out of the root, types differing
in case and a missing table or column (test_job_rules.py). Here: a NUL byte in a key,
unicode and spaces, negative sizes, `timestamp without time zone` columns stated UTC and
read in a session zone east of UTC, future timestamps, duplicate attachment rows, and two rows
sharing one stored object where one of them must stay.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from snapshot_ops.rules import PERMANENT_TYPE
from snapshot_ops_tests.support.jobs import step_metadata
from snapshot_ops_tests.support.scenarios import DAY, state
from snapshot_ops_tests.support.world import NOW, World

HOUR = dt.timedelta(hours=1)


def test_nul_byte_in_a_key_is_refused_and_reported(sqlite_url, storage_root):
    # PostgreSQL text cannot hold NUL; SQLite can, so the application could write one there.
    world = World(sqlite_url, storage_root)
    (storage_root / "a").write_bytes(b"keep")
    bad = world.add(age=30 * DAY, key="a\x00b", with_file=False)
    good = world.add(age=30 * DAY)

    result = world.run()

    assert not result.success
    assert not world.is_deleted(bad) and (storage_root / "a").read_bytes() == b"keep"
    assert world.is_deleted(good) and not world.has_file(good)
    [log] = world.run_log()
    assert log.error_count == 1 and "NUL" in json.loads(log.errors)[0]
    world.engine.dispose()


@pytest.mark.parametrize("key", ["été/snap shot.pdf", "日本/スナップ 1.pdf", " lead", "trail "])
def test_unicode_and_spaces_in_keys_are_deleted_as_written(world, key):
    expired = world.add(age=30 * DAY, key=key)
    neighbour = world.add(age=30 * DAY, key=key + "x", snapshot_type=PERMANENT_TYPE)
    assert world.run().success
    assert world.is_deleted(expired) and not world.has_file(expired)
    assert world.has_file(neighbour)


def test_negative_size_counts_the_bytes_on_disk(world):
    expired = world.add(age=30 * DAY, size=-5)
    assert world.run().success
    assert world.is_deleted(expired) and not world.has_file(expired)
    [log] = world.run_log()
    assert (log.deleted_count, log.bytes_reclaimed) == (1, 10)


def test_future_created_at_is_kept(world):
    future = world.add(age=-30 * DAY)
    assert world.run().success
    assert not world.is_deleted(future) and world.has_file(future)


def test_duplicate_attachment_rows_keep_the_file_and_do_not_confuse_counts(world):
    twice = world.add(age=30 * DAY, linked=True)
    with world.engine.begin() as conn:
        conn.execute(sa.insert(world.attachments).values(orderId="o-1", fileId=twice))
    expired = world.add(age=30 * DAY)
    result = world.run()
    assert result.success
    assert state(world) == {twice: (False, True), expired: (True, False)}
    assert step_metadata(result, "identify_expired_candidates")["keptLinkedToOrders"] == 1


def test_naive_timestamps_stated_utc_are_read_as_utc_in_any_session_zone(
    postgres_url, storage_root
):
    # A zone east of UTC: read as local time, a naive createdAt looks hours older than it
    # is, and a snapshot still inside its 7 days would be deleted. The deployment states
    # that the application writes UTC (naive_time_zone); test_naive_time_zones.py has the
    # other settings.
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.begin() as conn:
        name = conn.exec_driver_sql("SELECT current_database()").scalar_one()
        conn.exec_driver_sql(f"ALTER DATABASE \"{name}\" SET timezone TO 'Asia/Tokyo'")
        conn.exec_driver_sql(
            'CREATE TABLE "SnapshotFiles" ("fileId" text primary key, "snapshotType" text, '
            '"parseSessionId" text, "storageKey" text, "sizeBytes" bigint, '
            '"createdAt" timestamp without time zone, "deletedAt" timestamp without time zone)'
        )
        conn.exec_driver_sql('CREATE TABLE "OrderAttachments" ("orderId" text, "fileId" text)')
    engine.dispose()
    world = World(postgres_url, storage_root, create_tables=False)
    young = world.add(age=7 * DAY - HOUR)
    old = world.add(age=7 * DAY + HOUR)
    with world.engine.begin() as conn:  # store naive UTC, as the application does
        for file_id, age in ((young, 7 * DAY - HOUR), (old, 7 * DAY + HOUR)):
            conn.exec_driver_sql(
                'UPDATE "SnapshotFiles" SET "createdAt" = %(t)s WHERE "fileId" = %(i)s',
                {"t": (NOW - age).replace(tzinfo=None), "i": file_id},
            )

    assert world.run(naive_time_zone="UTC").success

    assert state(world) == {young: (False, True), old: (True, False)}
    world.engine.dispose()


def test_an_object_shared_with_an_order_snapshot_stays(world):
    # The order's snapshot reuses the object of an expired parse-session snapshot.
    expired = world.add(age=30 * DAY, key="shared/one.pdf")
    order = world.add(
        age=30 * DAY,
        key="shared/one.pdf",
        snapshot_type=PERMANENT_TYPE,
        linked=True,
        with_file=False,
    )

    result = world.run()

    assert result.success
    assert world.is_deleted(expired)  # the expired row goes ...
    assert not world.is_deleted(order) and world.has_file(order)  # ... the object stays
    assert step_metadata(result, "mark_and_delete_expired")["keptSharedKey"] == 1
    [log] = world.run_log()
    assert (log.deleted_count, log.bytes_reclaimed) == (0, 0)
    assert world.pending() == []


def test_an_object_shared_only_by_expired_rows_goes_once(world):
    first = world.add(age=30 * DAY, key="shared/two.pdf")
    second = world.add(age=20 * DAY, key="shared/two.pdf", with_file=False)
    assert world.run().success
    assert state(world) == {first: (True, False), second: (True, False)}
    [log] = world.run_log()
    # One object removed; its second row found it gone (counted apart, and no sign of a
    # store gone: the same batch deleted it).
    assert (log.deleted_count, log.missing_count) == (1, 1)
