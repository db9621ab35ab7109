"""Two keys name one object only if the store says so.

The field report: a folder store on a case-insensitive, case-preserving file system holds
one file, 2026/11/Invoice-42.pdf; a live order's row names it as 2026/11/invoice-42.pdf and
an expired parse-session row as 2026/11/Invoice-42.pdf. The expired row goes, the order's
file stays: on a real NTFS volume (support/ntfs.py), on PostgreSQL and on SQLite. The same
keys on a case-sensitive folder, on S3 (moto) and on Azure Blob (Azurite) are two objects:
the expired one is deleted, the live one kept. A folder below an exact root that ignores
case (another file system mounted there) has its keys refused, never deleted. A database
that cannot fold keys stops the run before anything is touched. The reconciliation report
on the NTFS volume sees no drift where the listing spells a file otherwise than its row.
"""

from __future__ import annotations

import datetime as dt
import os

import pytest
import sqlalchemy as sa

from snapshot_ops.db import Catalog, make_engine
from snapshot_ops.drift import reconcile
from snapshot_ops.rules import PERMANENT_TYPE
from snapshot_ops.storage import open_storage
from snapshot_ops_tests.support.jobs import failure_message, step_metadata
from snapshot_ops_tests.support.ntfs import mount_ntfs, unmount
from snapshot_ops_tests.support.world import NOW, World

DAY = dt.timedelta(days=1)
EXPIRED_KEY = "2026/11/Invoice-42.pdf"
ORDER_KEY = "2026/11/invoice-42.pdf"


@pytest.fixture
def ntfs_world(db_url, ntfs_folder):
    world = World(db_url, ntfs_folder)
    yield world
    world.engine.dispose()


def add_field_report(world: World, *, order_file: bool) -> tuple[str, str]:
    """The report's two rows: (the expired parse-session row, the live order's row)."""
    expired = world.add(age=30 * DAY, key=EXPIRED_KEY)
    order = world.add(
        age=30 * DAY,
        key=ORDER_KEY,
        snapshot_type=PERMANENT_TYPE,
        linked=True,
        with_file=order_file,
    )
    return expired, order


def test_on_a_case_insensitive_folder_the_orders_file_stays(ntfs_world):
    root = ntfs_world.root
    expired, order = add_field_report(ntfs_world, order_file=False)
    assert os.listdir(root / "2026" / "11") == ["invoice-42.pdf"]  # one file, two spellings

    result = ntfs_world.run()

    assert result.success
    assert ntfs_world.is_deleted(expired)  # the expired row goes ...
    assert not ntfs_world.is_deleted(order)  # ... the order's row stays live ...
    assert os.listdir(root / "2026" / "11") == ["invoice-42.pdf"]  # ... with its file
    assert (root / ORDER_KEY).read_bytes() == b"x" * 100
    assert step_metadata(result, "mark_and_delete_expired")["keptSharedKey"] == 1
    assert step_metadata(result, "identify_expired_candidates")["storageKeyMatching"] == "case"
    [log] = ntfs_world.run_log()
    assert (log.deleted_count, log.bytes_reclaimed) == (0, 0)
    assert ntfs_world.pending() == []


def journal_as_a_crash_leaves_it(world: World, file_id: str) -> None:
    """Mark a row and journal its object as a run killed between marking and deleting
    leaves them: the next run's claim (`claim_pending`) finishes the entry."""
    row = world.row(file_id)
    catalog = Catalog(make_engine(world.db_url))
    catalog.ensure_own_tables()
    with catalog.engine.begin() as conn:
        conn.execute(
            sa.update(catalog.files).where(catalog.files.c.fileId == file_id).values(deletedAt=NOW)
        )
        conn.execute(
            sa.insert(catalog.pending).values(
                file_id=file_id,
                storage_key=row.storageKey,
                size_bytes=row.sizeBytes,
                run_id="a-killed-run",
                marked_at=NOW,
            )
        )
    catalog.engine.dispose()


def test_a_journaled_entry_keeps_the_file_a_live_row_names_in_another_case(ntfs_world):
    expired, order = add_field_report(ntfs_world, order_file=False)
    journal_as_a_crash_leaves_it(ntfs_world, expired)

    result = ntfs_world.run()

    assert result.success
    assert step_metadata(result, "finish_pending_deletes")["keptSharedKey"] == 1
    assert ntfs_world.is_deleted(expired) and not ntfs_world.is_deleted(order)
    assert os.listdir(ntfs_world.root / "2026" / "11") == ["invoice-42.pdf"]
    assert ntfs_world.pending() == []


@pytest.mark.parametrize("store", ["filesystem", "s3", "azure"], indirect=True)
def test_on_exact_stores_the_two_spellings_are_two_objects(store_world, store):
    expired, order = add_field_report(store_world, order_file=True)

    result = store_world.run()

    assert result.success
    assert store_world.is_deleted(expired) and not store.exists(EXPIRED_KEY)
    assert not store_world.is_deleted(order) and store.exists(ORDER_KEY)
    assert step_metadata(result, "mark_and_delete_expired")["keptSharedKey"] == 0
    assert step_metadata(result, "identify_expired_candidates")["storageKeyMatching"] == "exact"
    assert store_world.pending() == []


def test_keys_in_a_case_insensitive_folder_below_an_exact_root_are_refused(
    db_url, storage_root, tmp_path
):
    share = storage_root / "share"
    local = storage_root / "local"
    mount_ntfs(tmp_path / "share.img", share)
    world = World(db_url, storage_root)
    try:
        in_share = world.add(age=30 * DAY, key=f"share/{EXPIRED_KEY}")
        order = world.add(
            age=30 * DAY,
            key=f"share/{ORDER_KEY}",
            snapshot_type=PERMANENT_TYPE,
            linked=True,
            with_file=False,
        )
        elsewhere = world.add(age=30 * DAY, key=f"local/{EXPIRED_KEY}")

        result = world.run()

        assert not result.success  # a refused key is an error, every run
        assert not world.is_deleted(in_share) and not world.is_deleted(order)
        assert (share / ORDER_KEY).exists()
        assert world.is_deleted(elsewhere) and not (local / EXPIRED_KEY).exists()
        [log] = world.run_log()
        assert f"refused {in_share}: storage key 'share/{EXPIRED_KEY}' is in a folder " in (
            log.errors
        )
        assert "that ignores case in names" in log.errors
    finally:
        world.engine.dispose()
        unmount(share)


def test_a_database_that_cannot_fold_keys_stops_the_run_untouched(
    make_pg_database, ntfs_folder, pg_admin_url
):
    # A SQL_ASCII database has no ICU collation: it cannot compare keys ignoring case.
    url = make_pg_database("sqlascii")
    name = sa.engine.make_url(url).database
    admin = sa.create_engine(
        pg_admin_url.replace("postgresql://", "postgresql+psycopg2://", 1),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE "{name}"')
        conn.exec_driver_sql(
            f"CREATE DATABASE \"{name}\" ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' "
            "TEMPLATE template0"
        )
    admin.dispose()
    world = World(url, ntfs_folder)
    try:
        expired = world.add(age=30 * DAY, key="2026/11/Invoice-41.pdf")

        result = world.run()

        assert not result.success
        message = failure_message(result)
        assert "resolves names ignoring case" in message
        assert 'the database must compare "storageKey" that way too, but it cannot' in message
        assert 'collation "und-x-icu"' in message and "No object is deleted until it can" in message
        assert not world.is_deleted(expired) and world.has_file(expired)
        assert world.run_log() == []
    finally:
        world.engine.dispose()


def test_the_report_sees_no_drift_where_the_listing_spells_a_file_otherwise(ntfs_world):
    live = ntfs_world.add(age=1 * DAY, key="2026/11/Invoice-43.pdf")
    marked = ntfs_world.add(age=30 * DAY, key="2026/11/Leftover.pdf", deleted=True)
    assert sorted(os.listdir(ntfs_world.root / "2026" / "11")) == [
        "invoice-43.pdf",
        "leftover.pdf",
    ]
    catalog = Catalog(ntfs_world.engine)
    storage = open_storage(ntfs_world.root.as_uri())
    try:
        report = reconcile(catalog, storage)
    finally:
        storage.close()

    assert report.missing_objects.count == 0  # the live row's file is there ...
    assert report.orphan_objects.count == 0  # ... and is not an orphan
    # The marked row's file is a leftover (its row names it), not an orphan.
    assert report.leftover_objects.sample == ["2026/11/leftover.pdf"]
    assert not ntfs_world.is_deleted(live) and ntfs_world.is_deleted(marked)
