"""End to end through Dagster: the job deletes the same rows and objects on every backend.

The same dataset runs on the filesystem, on S3 (moto's server) and on Azure Blob (Azurite),
with PostgreSQL as the application database. Afterwards the rows, the objects left in the
store, the run log and the pending journal must be exactly what the rules say, and the
same on all three; deletes go out in batches; sizes are asked only for rows without one.
A key the store refuses stays pending and the next run finishes it; credentials never
appear in the run's events. The Dagster CLI, given only the environment, finds the store.
"""

from __future__ import annotations

import datetime as dt
import os

import pytest

from snapshot_ops.rules import PERMANENT_TYPE
from snapshot_ops_tests.support.commands import python_module, run_command
from snapshot_ops_tests.support.stores import AZURITE_KEY, TEST_AWS_SECRET
from snapshot_ops_tests.support.world import NOW, World

DAY = dt.timedelta(days=1)
BULK = 25  # plain expired rows, so deletes span several batches


def seed(world):
    """The dataset: {label: fileId}, every rule of the retention table exercised."""
    rows = {
        "expired": world.add(age=8 * DAY, size=100),
        "expired_size_unknown": world.add(age=9 * DAY, size=None),
        "expired_object_missing": world.add(age=10 * DAY, size=None, with_file=False),
        "expired_linked": world.add(age=30 * DAY, linked=True),
        "fresh": world.add(age=6 * DAY),
        "permanent": world.add(age=400 * DAY, snapshot_type=PERMANENT_TYPE, linked=True),
        "already_deleted": world.add(age=20 * DAY, deleted=True),
    }
    for i in range(BULK):
        rows[f"bulk_{i:02d}"] = world.add(age=(8 + i / 10) * DAY, size=100)
    return rows


GONE = {"expired", "expired_size_unknown", "expired_object_missing"} | {
    f"bulk_{i:02d}" for i in range(BULK)
}


def outcome(world, rows):
    """{label: (row marked deleted, object still in the store)} for every row."""
    return {label: (world.is_deleted(fid), world.has_file(fid)) for label, fid in rows.items()}


def test_the_job_deletes_the_same_rows_and_objects_on_every_backend(store_world):
    world, store = store_world, store_world.store
    rows = seed(world)

    result = world.run(batch_size=10)

    assert result.success
    expected = {
        label: (
            label in GONE or label == "already_deleted",
            label not in GONE and label != "expired_object_missing",
        )
        for label in rows
    }
    assert outcome(world, rows) == expected
    kept_keys = {world.row(fid).storageKey for label, fid in rows.items() if expected[label][1]}
    assert store.all_keys() == {store.full_key(k) for k in kept_keys}
    [log] = world.run_log()
    # 25 + 1 rows of 100 bytes, and 10 bytes read from the store for the unsized one. The
    # object already gone is counted apart, never as deleted, except on S3, which cannot
    # tell it from one it deleted.
    missing = 1 if store.reports_missing else 0
    assert (log.status, log.deleted_count, log.bytes_reclaimed, log.error_count) == (
        "succeeded",
        len(GONE) - missing,
        26 * 100 + 10,
        0,
    )
    assert log.missing_count == missing
    assert world.pending() == []
    if store.proxy is not None:
        deletes = store.proxy.requests(lambda s: s.is_s3_delete_objects or s.is_blob_batch)
        assert len(deletes) == 3  # 28 marked rows, batch_size 10
        lookups = store.proxy.requests(lambda s: s.method == "HEAD")
        # The two rows without "sizeBytes", and the one object the storage check finds.
        # Where the store reports the missing object (Azure), the batch holding it looks
        # that object up again (gone: the run deleted it, it was the oldest candidate's),
        # then one live row's object, which is there.
        assert len(lookups) == 3 + (2 if store.reports_missing else 0)


def test_a_refused_object_stays_pending_until_a_later_run(store_world):
    world, store = store_world, store_world.store
    plain = world.add(age=8 * DAY)
    blocked_key = store.refusable_key("r/blocked.pdf")
    blocked = world.add(age=8 * DAY, key=blocked_key, with_file=store.refused_object_survives)
    store.refuse_deleting(blocked_key)
    unsafe = world.add(age=8 * DAY, key="../outside.pdf")

    first = world.run()

    assert not first.success
    assert world.is_deleted(plain) and not world.has_file(plain)
    assert world.is_deleted(blocked)
    assert world.has_file(blocked) == store.refused_object_survives
    assert not world.is_deleted(unsafe) and world.has_file(unsafe)
    [entry] = world.pending()
    assert (entry.file_id, entry.attempts) == (blocked, 1)
    assert blocked_key in entry.last_error
    [log] = world.run_log()
    assert (log.status, log.deleted_count, log.error_count) == ("failed", 1, 2)
    events = "\n".join(str(event) for event in first.all_events)
    assert TEST_AWS_SECRET not in events and AZURITE_KEY not in events

    if not hasattr(store, "release"):
        return  # a name the file system can never hold stays failed: nothing to release
    store.release(blocked_key)
    world.run()

    assert world.pending() == []
    assert not world.has_file(blocked)
    assert world.run_log()[-1].deleted_count == 1


@pytest.mark.parametrize("backend_name", ["s3", "azure"])
def test_the_cli_finds_the_store_from_the_environment(
    request, backend_name, postgres_url, storage_root, tmp_path
):
    """`dagster job execute` with only SNAPSHOT_OPS_STORAGE_URL and the SDK's variables."""
    store = request.getfixturevalue(f"{backend_name}_store")
    world = World(postgres_url, storage_root, store)
    try:
        expired = world.add(age=8 * DAY, size=None)
        fresh = world.add(age=6 * DAY)
        config = tmp_path / "run.yaml"
        config.write_text(
            "ops:\n  identify_expired_candidates:\n    config:\n"
            f"      reference_time: '{NOW.isoformat()}'\n"
        )
        home = tmp_path / "dagster_home"
        home.mkdir()
        env = dict(
            os.environ,  # the session's AWS_* / AZURE_STORAGE_CONNECTION_STRING
            DAGSTER_HOME=str(home),
            SNAPSHOT_OPS_DATABASE_URL=postgres_url,
            SNAPSHOT_OPS_STORAGE_URL=store.url,
        )
        command = python_module("dagster", "job", "execute", "-m", "snapshot_ops")
        command += ["-j", "snapshot_cleanup_job", "-c", str(config)]
        done = run_command(command, env=env)

        assert world.is_deleted(expired) and not world.has_file(expired)
        assert not world.is_deleted(fresh) and world.has_file(fresh)
        assert "RUN_SUCCESS" in done.stdout + done.stderr
        for secret in (TEST_AWS_SECRET, AZURITE_KEY):  # the run's whole log, no credential
            assert secret not in done.stdout + done.stderr
    finally:
        world.engine.dispose()
