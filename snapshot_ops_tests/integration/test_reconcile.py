"""The reconciliation report finds each kind of drift and changes nothing while doing so.

Kinds: an object no row names (orphan), an object whose rows are all marked deleted and that
no journal entry will remove (leftover), a live row whose object is missing (lost), and
journal entries still pending. Runs on PostgreSQL and SQLite, in process and as the
`python -m snapshot_ops.reconcile` command. Built from the job's resources, the report reads
the tables and store their settings name (S3Resource settings: test_s3_resource.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os

import sqlalchemy as sa

from snapshot_ops.db import Catalog, make_engine
from snapshot_ops.defs.resources import SnapshotDatabase, SnapshotStorage
from snapshot_ops.demo import app_tables
from snapshot_ops.drift import reconcile
from snapshot_ops.reconcile import reconcile_resources
from snapshot_ops.storage import open_storage
from snapshot_ops_tests.support.commands import python_module, run_command
from snapshot_ops_tests.support.world import NOW

DAY = dt.timedelta(days=1)


def fingerprint(world) -> tuple:
    """Every row and every file with its content, to show nothing changed."""
    with world.engine.connect() as conn:
        rows = sorted(tuple(map(str, r)) for r in conn.execute(world.files.select()))
    files = sorted(
        (str(p.relative_to(world.root)), hashlib.sha256(p.read_bytes()).hexdigest())
        for p in world.root.rglob("*")
        if p.is_file()
    )
    return rows, files


def drifted_world(world) -> dict[str, str]:
    """A world with one case of each kind of drift, after one cleanup run."""
    ids = {
        "healthy": world.add(age=1 * DAY),
        "expired": world.add(age=10 * DAY),
        "lost": world.add(age=1 * DAY, with_file=False),
        "leftover": world.add(age=40 * DAY, deleted=True),  # marked by someone, file left
    }
    orphan = world.root / "zz" / "orphan.pdf"
    orphan.parent.mkdir()
    orphan.write_bytes(b"o")
    # A name longer than the filesystem takes: its delete fails, its journal entry stays.
    (world.root / "stuck").mkdir()
    ids["pending"] = world.add(age=10 * DAY, key="stuck/" + "n" * 300, with_file=False)
    world.run()
    return ids


def test_each_kind_of_drift_is_reported_and_nothing_is_touched(world):
    ids = drifted_world(world)
    before = fingerprint(world)
    storage = open_storage(world.root.as_uri())
    catalog = Catalog(make_engine(world.db_url))

    report = reconcile(catalog, storage)

    storage.close()
    catalog.engine.dispose()
    assert fingerprint(world) == before
    assert report.orphan_objects.sample == ["zz/orphan.pdf"]
    assert report.leftover_objects.sample == [world.row(ids["leftover"]).storageKey]
    assert report.missing_objects.sample == [ids["lost"]]
    assert report.missing_objects.count == 1
    assert report.pending_deletes == 1
    assert report.rows == 5
    assert report.drift


def test_clean_world_reports_no_drift(world):
    world.add(age=1 * DAY)
    world.add(age=10 * DAY)
    world.add(age=10 * DAY, linked=True)
    assert world.run().success
    storage = open_storage(world.root.as_uri())
    catalog = Catalog(make_engine(world.db_url))
    report = reconcile(catalog, storage)
    storage.close()
    catalog.engine.dispose()
    assert not report.drift
    assert (report.objects, report.rows, report.pending_deletes) == (2, 3, 0)


def test_before_any_cleanup_run_the_missing_journal_is_not_an_error(world):
    world.add(age=1 * DAY)
    storage = open_storage(world.root.as_uri())
    catalog = Catalog(make_engine(world.db_url))
    report = reconcile(catalog, storage)
    storage.close()
    catalog.engine.dispose()
    assert report.pending_deletes == 0 and not report.drift


def test_command_prints_json_and_exits_3_on_drift(pg_world):
    ids = drifted_world(pg_world)
    before = fingerprint(pg_world)
    env = {
        **os.environ,
        "SNAPSHOT_OPS_DATABASE_URL": pg_world.db_url,
        "SNAPSHOT_OPS_STORAGE_URL": pg_world.root.as_uri(),
    }
    result = run_command(python_module("snapshot_ops.reconcile"), env=env, returncode=3)
    report = json.loads(result.stdout)
    assert report["drift"] is True
    assert report["missing_objects"] == {"count": 1, "sample": [ids["lost"]]}
    assert report["orphan_objects"]["sample"] == ["zz/orphan.pdf"]
    assert fingerprint(pg_world) == before


def test_the_report_reads_the_tables_in_the_schema_the_database_resource_names(
    postgres_url, storage_root
):
    engine = make_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA app")
    files, _ = app_tables(sa.MetaData(), schema="app")
    files.metadata.create_all(engine)
    (storage_root / "a").mkdir()
    (storage_root / "a" / "1.pdf").write_bytes(b"x")
    with engine.begin() as conn:
        conn.execute(
            sa.insert(files),
            [
                {"fileId": f, "snapshotType": "t", "storageKey": f"a/{f}.pdf", "createdAt": NOW}
                for f in ("1", "2")
            ],
        )
    engine.dispose()

    report = reconcile_resources(
        SnapshotDatabase(url=postgres_url, app_schema="app"),
        SnapshotStorage(url=storage_root.as_uri()),
    )

    assert (report.objects, report.rows) == (1, 2)
    assert report.missing_objects.sample == ["2"]
