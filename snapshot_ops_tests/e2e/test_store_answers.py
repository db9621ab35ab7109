"""Stores that are not S3, passing errors, and known failures, through the real job.

The whole Dagster job runs in process against moto's S3 server and Azurite, each behind the
fault proxy, with PostgreSQL as the application database:

- A store that answers every batch request 405 MethodNotAllowed or 501 NotImplemented (it
  has no batch delete): all 11 expired objects are deleted in one run, each by one single
  delete the proxy sees, after one batch request in the whole run (not one per batch); on
  S3 with max_deletes_per_second and parallel_batches set, the single deletes keep both.
- A 200 batch answer failing some keys with a passing error (S3 `InternalError` or
  `SlowDown`, Azure 500 or 503 for a blob): those keys are sent again and deleted in the
  same run, which succeeds. A key that fails on every try is reported once, saying how many
  tries, and the run fails; with the store back, the next run deletes it.
- A key whose delete failed twice waits out its backoff: a later run does not send it and
  succeeds, with a warning and `backingOff` in its metadata; the asset check
  `no_pending_deletes_backing_off` fails, naming it as the oldest; a run with a new failure
  fails, and its alert lists only that new failure, with one line counting the known one.

After each run, every row that must stay is live with its object, and every marked row
whose object is still there is in the journal.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
from dagster import DagsterEventType, DagsterInstance, build_run_status_sensor_context

from snapshot_ops.defs.assets import BACKING_OFF_CHECK
from snapshot_ops.defs.resources import SnapshotStorage
from snapshot_ops.defs.sensors import failure_alert_sensors
from snapshot_ops.settings import AlertSettings
from snapshot_ops_tests.support.jobs import run_cleanup, step_metadata
from snapshot_ops_tests.support.stores import (
    NO_BATCHES,
    PASSING,
    TEST_RETRY,
    Store,
    is_batch_request,
)
from snapshot_ops_tests.support.world import World

DAY = dt.timedelta(days=1)
EXPIRED = 11
BATCH = 4  # three marked batches: 4, 4 and 3 rows
SIZE = 100


@pytest.fixture(params=["s3", "azure"])
def object_world(request, postgres_url, storage_root):
    """A World on PostgreSQL whose objects live in moto's S3 or in Azurite."""
    store = request.getfixturevalue(f"{request.param}_store")
    world = World(postgres_url, storage_root, store)
    yield world
    world.engine.dispose()


def seed(world: World) -> tuple[list[str], list[str]]:
    """EXPIRED rows to delete (oldest last), and rows that must stay: linked, or young."""
    expired = [world.add(age=(8 + n / 10) * DAY, size=SIZE) for n in range(EXPIRED)]
    keep = [world.add(age=30 * DAY, linked=True) for _ in range(3)]
    keep += [world.add(age=6 * DAY) for _ in range(2)]
    return expired, keep


def run(world: World, instance: DagsterInstance | None = None, **storage: float):
    """The job in process as of NOW against the world's store."""
    options = {**TEST_RETRY, **storage}
    return run_cleanup(
        world.db_url,
        SnapshotStorage(url=world.store.url, **options),
        batch_size=BATCH,
        instance=instance,
    )


def is_single_delete(seen) -> bool:
    return seen.method == "DELETE"


def assert_nothing_lost(world: World, keep: list[str]) -> None:
    for file_id in keep:
        assert not world.is_deleted(file_id) and world.has_file(file_id), file_id
    pending = {p.file_id for p in world.pending()}
    with world.engine.connect() as conn:
        marked = conn.execute(
            world.files.select().where(world.files.c.deletedAt.is_not(None))
        ).all()
    left = {r.fileId for r in marked if world.store.exists(r.storageKey)}
    assert left <= pending, f"marked rows whose object stays with no journal entry: {left}"


def assert_all_gone(world: World, expired: list[str], keep: list[str]) -> None:
    assert_nothing_lost(world, keep)
    assert all(world.is_deleted(i) and not world.has_file(i) for i in expired)
    assert world.pending() == []
    store: Store = world.store
    assert store.all_keys() == {store.full_key(world.row(i).storageKey) for i in keep}


# -- a store without batch deletes -------------------------------------------------------------


@pytest.mark.parametrize("status", list(NO_BATCHES))
def test_a_store_without_batch_deletes_has_every_object_deleted_in_one_run(object_world, status):
    world, store = object_world, object_world.store
    expired, keep = seed(world)
    store.refuse_batches(status)

    result = run(world)

    assert result.success
    assert_all_gone(world, expired, keep)
    [log] = world.run_log()
    assert (log.status, log.deleted_count, log.error_count) == ("succeeded", EXPIRED, 0)
    assert log.bytes_reclaimed == EXPIRED * SIZE
    # One batch request in the run (three batches were marked), then one delete per key.
    assert len(store.proxy.requests(is_batch_request)) == 1
    singles = [s.path for s in store.proxy.requests(is_single_delete)]
    wanted = [store.full_key(world.row(i).storageKey) for i in expired]
    # (Azurite's paths carry its account name first.)
    assert len(singles) == EXPIRED
    assert all(sum(path.endswith(f"/{key}") for path in singles) == 1 for key in wanted)
    metadata = step_metadata(result, "mark_and_delete_expired")
    assert (
        metadata["deleteRequests"].startswith("single (")
        and str(status) in metadata["deleteRequests"]
    )


def keys_per_window(arrivals: list[float], window: float = 1.0) -> int:
    """The most requests that arrived within any `window` seconds."""
    return max(sum(1 for t in arrivals if start <= t < start + window) for start in arrivals)


def test_single_deletes_keep_the_rate_limit_and_the_parallel_bound(
    s3_store, postgres_url, storage_root
):
    world = World(postgres_url, storage_root, s3_store)
    expired, keep = seed(world)
    s3_store.refuse_batches(405)

    result = run(world, max_deletes_per_second=4, parallel_batches=2)

    assert result.success
    assert_all_gone(world, expired, keep)
    singles = s3_store.proxy.requests(is_single_delete)
    assert len(singles) == EXPIRED
    # A delete admitted at the end of a window may reach the store a little later.
    assert keys_per_window([s.at for s in singles]) <= 4 + 1
    assert 1 <= s3_store.proxy.max_in_flight <= 2
    world.engine.dispose()


# -- passing errors in a batch answer ----------------------------------------------------------


@pytest.mark.parametrize("kind", list(PASSING))
def test_keys_failed_with_a_passing_error_are_deleted_in_the_same_run(object_world, kind):
    world, store = object_world, object_world.store
    expired, keep = seed(world)
    flaky = [expired[0], expired[-1]]  # in the last batch and the first
    for file_id in flaky:
        store.fail_in_batches(world.row(file_id).storageKey, kind, times=2)

    result = run(world)  # max_attempts 3: the third try goes through

    assert result.success
    assert_all_gone(world, expired, keep)
    [log] = world.run_log()
    assert (log.status, log.deleted_count, log.missing_count, log.error_count) == (
        "succeeded",
        EXPIRED,
        0,
        0,
    )
    for file_id in flaky:
        key = store.full_key(world.row(file_id).storageKey)
        carrying = [s for s in store.proxy.requests(is_batch_request) if key in s.body.decode()]
        assert len(carrying) == 3, file_id


@pytest.mark.parametrize("kind", list(PASSING))
def test_a_key_failing_on_every_try_is_reported_once_and_the_next_run_deletes_it(
    object_world, kind
):
    world, store = object_world, object_world.store
    expired, keep = seed(world)
    stuck = expired[4]
    store.fail_in_batches(world.row(stuck).storageKey, kind, times=1_000)

    first = run(world)

    assert not first.success
    assert_nothing_lost(world, keep)
    assert world.is_deleted(stuck) and world.has_file(stuck)
    assert all(not world.has_file(i) for i in expired if i != stuck)
    assert [(p.file_id, p.attempts) for p in world.pending()] == [(stuck, 1)]
    [log] = world.run_log()
    assert (log.status, log.deleted_count, log.error_count) == ("failed", EXPIRED - 1, 1)
    [error] = json.loads(log.errors)
    assert stuck in error and error.endswith("(tried 3 times)"), error

    store.proxy.key_faults.clear()  # the store recovers
    second = run(world)

    assert second.success
    assert_all_gone(world, expired, keep)
    log = world.run_log()[-1]
    assert (log.status, log.deleted_count, log.error_count) == ("succeeded", 1, 0)


# -- a known failure waiting out its backoff ---------------------------------------------------


def alert_text(instance: DagsterInstance, result, caplog) -> str:
    """The failure alert the run gives (the log destination's sensor, evaluated for it)."""
    [sensor] = failure_alert_sensors(AlertSettings())
    [failure] = [e for e in result.all_events if e.event_type == DagsterEventType.RUN_FAILURE]
    with caplog.at_level(logging.ERROR, logger="snapshot_ops.alerts"):
        sensor(
            build_run_status_sensor_context(
                sensor_name=sensor.name,
                dagster_event=failure,
                dagster_instance=instance,
                dagster_run=result.dagster_run,
            ).for_run_failure()
        )
    [record] = [r for r in caplog.records if r.name == "snapshot_ops.alerts"]
    caplog.clear()
    return record.getMessage()


def warnings_of(instance: DagsterInstance, result) -> list[str]:
    return [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.level == logging.WARNING and not entry.is_dagster_event
    ]


def test_a_key_waiting_out_its_backoff_is_a_warning_and_a_failed_check_not_a_red_run(
    s3_store, postgres_url, storage_root, caplog
):
    world = World(postgres_url, storage_root, s3_store)
    stuck = world.add(age=10 * DAY, size=SIZE)
    s3_store.refuse_deleting(world.row(stuck).storageKey)
    with DagsterInstance.ephemeral() as instance:
        assert not run(world, instance).success  # its first failure: retried next run
        assert not run(world, instance).success  # its second: now it waits an hour
        [entry] = world.pending()
        assert (entry.file_id, entry.attempts) == (stuck, 2)

        fresh = world.add(age=9 * DAY, size=SIZE)
        later = run(world, instance)

        assert later.success
        assert world.is_deleted(fresh) and not world.has_file(fresh)
        assert world.is_deleted(stuck) and world.has_file(stuck)
        assert [(p.file_id, p.attempts) for p in world.pending()] == [(stuck, 2)]
        log = world.run_log()[-1]
        assert (log.status, log.deleted_count, log.error_count, log.errors) == (
            "succeeded",
            1,
            0,
            "[]",
        )
        # Not sent to the store: one DeleteObjects in this run, for the fresh row only.
        assert [stuck in w for w in warnings_of(instance, later) if "backoff" in w] == [True]
        recorded = step_metadata(later, "record_cleanup_run")
        assert recorded["backingOff"] == 1 and recorded["backingOffOldest"].startswith(stuck)
        [check] = [
            e for e in later.get_asset_check_evaluations() if e.check_name == BACKING_OFF_CHECK
        ]
        assert not check.passed
        assert check.metadata["backingOff"].value == 1
        assert check.metadata["oldestFileId"].value == stuck
        assert check.metadata["oldestAttempts"].value == 2
        assert "AccessDenied" in check.metadata["oldestLastError"].value

        # A new failure fails its run; the alert lists it alone and counts the known one.
        new = world.add(age=9 * DAY, size=SIZE)
        s3_store.refuse_deleting(world.row(new).storageKey)
        failing = run(world, instance)

        assert not failing.success
        text = alert_text(instance, failing, caplog)
    lines = text.splitlines()
    errors_at = lines.index("errors (1):")
    [listed] = lines[errors_at + 1 :]
    assert new in listed and stuck not in listed
    [known] = [line for line in lines[:errors_at] if line.startswith("known, not listed:")]
    assert "1 failed delete(s)" in known and stuck in known
    world.engine.dispose()
