"""Object-store faults during a real run lose nothing, and the next run finishes the job.

The whole Dagster job runs against S3 (moto's server) and Azure Blob (Azurite), with
PostgreSQL as the application database, while the fault-injecting proxy in front of the
store makes it misbehave:

- some deletes fail: per-key `AccessDenied` errors inside a 200 DeleteObjects answer, or
  leased blobs that a Blob Batch answers 412 for;
- a batch delete times out: the proxy holds it longer than the client's read timeout, on
  every attempt, and either drops it or hands it to the store late (the store deleted the
  objects, the client never heard);
- the store throttles (503 SlowDown / ServerBusy): briefly, which the SDK's retries absorb,
  or for longer than the retries last;
- the store's answer leaves one key out (no `<Deleted>` entry in S3's answer, a missing
  sub-response in Azure's): nothing confirmed that key, so its row stays pending;
- a key that an S3 batch body cannot carry (a control character) sits among others: the
  others are deleted in the same run, and the key goes by itself.

After each faulty run: every row an order needs (and every fresh row) is live with its
object; every marked row whose object still exists is in the pending journal; the failures
are in the run log's `errors` and the run ended failed, except a throttle the SDK absorbed
(then it succeeded and the proxy saw the retried requests). Then the fault is removed and
the next run must finish with exact counts, leaving exactly the objects that must stay.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from snapshot_ops.defs.resources import SnapshotStorage
from snapshot_ops_tests.support.faultproxy import (
    Fault,
    Seen,
    s3_error,
    without_blob_subresponse,
    without_s3_result,
)
from snapshot_ops_tests.support.jobs import run_cleanup
from snapshot_ops_tests.support.stores import TEST_RETRY, Store
from snapshot_ops_tests.support.waiting import wait_until
from snapshot_ops_tests.support.world import World

DAY = dt.timedelta(days=1)
EXPIRED = 12
BATCH = 4  # three delete batches of four keys each
SIZE = 100
BACKENDS = ["s3", "azure"]
#: The timeout tests' client read timeout; the proxy holds a request longer than this.
READ_TIMEOUT = 1.0


@pytest.fixture(params=BACKENDS)
def object_world(request, postgres_url, storage_root):
    """A World on PostgreSQL whose objects live in moto's S3 or in Azurite."""
    store = request.getfixturevalue(f"{request.param}_store")
    world = World(postgres_url, storage_root, store)
    yield world
    world.engine.dispose()


def is_delete(seen: Seen) -> bool:
    return seen.is_s3_delete_objects or seen.is_blob_batch


def seed(world: World) -> tuple[list[str], list[str]]:
    """Expired rows to delete, and rows that must stay: linked to orders, or too young."""
    expired = [world.add(age=(8 + n / 10) * DAY, size=SIZE) for n in range(EXPIRED)]
    keep = [world.add(age=30 * DAY, linked=True) for _ in range(3)]
    keep += [world.add(age=6 * DAY) for _ in range(2)]
    return expired, keep


def run(world: World, **storage: float) -> object:
    """Run the job in process as of NOW against the world's store."""
    options = {**TEST_RETRY, **storage}
    return run_cleanup(
        world.db_url, SnapshotStorage(url=world.store.url, **options), batch_size=BATCH
    )


def assert_nothing_lost(world: World, keep: list[str]) -> None:
    """Rows that must stay are live with their objects; a marked row's object that still
    exists is in the pending journal, so a later run deletes it."""
    for file_id in keep:
        assert not world.is_deleted(file_id), file_id
        assert world.has_file(file_id), file_id
    pending = {p.file_id for p in world.pending()}
    with world.engine.connect() as conn:
        marked = conn.execute(
            world.files.select().where(world.files.c.deletedAt.is_not(None))
        ).all()
    left = {r.fileId for r in marked if world.store.exists(r.storageKey)}
    assert left <= pending, f"marked rows whose object stays with no journal entry: {left}"


def assert_finished(world: World, expired: list[str], keep: list[str]) -> None:
    """The end state of an uninterrupted run: exactly the objects that must stay remain."""
    assert_nothing_lost(world, keep)
    assert all(world.is_deleted(i) and not world.has_file(i) for i in expired)
    assert world.pending() == []
    store: Store = world.store
    assert store.all_keys() == {store.full_key(world.row(i).storageKey) for i in keep}


def wait_idle(store: Store, timeout: float = 15) -> None:
    """Wait until the proxy answered every request (a held one may outlive its client)."""
    wait_until(
        lambda: store.proxy.in_flight == 0,
        timeout=timeout,
        what=lambda: f"the proxy to answer its {store.proxy.in_flight} requests in flight",
    )


def test_deletes_the_store_refuses_stay_pending_and_the_next_run_finishes(object_world):
    world, store = object_world, object_world.store
    expired, keep = seed(world)
    refused = expired[1:10:4]  # one key in each of the three batches
    for file_id in refused:
        store.refuse_deleting(world.row(file_id).storageKey)

    first = run(world)

    assert_nothing_lost(world, keep)
    assert not first.success
    assert all(world.is_deleted(i) and world.has_file(i) for i in refused)
    assert all(world.is_deleted(i) and not world.has_file(i) for i in expired if i not in refused)
    assert sorted((p.file_id, p.attempts) for p in world.pending()) == sorted(
        (i, 1) for i in refused
    )
    [log] = world.run_log()
    assert (log.status, log.deleted_count, log.error_count) == ("failed", EXPIRED - 3, 3)
    errors = json.loads(log.errors)
    assert len(errors) == 3 and all(store.refusal in e for e in errors)
    assert {i for i in refused if any(i in e for e in errors)} == set(refused)

    for file_id in refused:
        store.release(world.row(file_id).storageKey)
    second = run(world)

    assert second.success
    assert_finished(world, expired, keep)
    log = world.run_log()[-1]
    assert (log.status, log.deleted_count, log.bytes_reclaimed, log.error_count) == (
        "succeeded",
        3,
        3 * SIZE,
        0,
    )


@pytest.mark.parametrize("store_acts", [False, True], ids=["dropped", "done-late"])
def test_a_batch_that_times_out_stays_pending_and_the_next_run_finishes(object_world, store_acts):
    world, store = object_world, object_world.store
    expired, keep = seed(world)
    attempts = 2
    # Every attempt of the first batch (the oldest rows) is held past the client's read
    # timeout; then the store either never sees it (dropped) or deletes the objects nobody
    # hears about. Other batches, deleted alongside by the second deleter thread, pass.
    oldest = expired[-1].encode()
    store.proxy.add_fault(
        Fault(
            lambda seen: is_delete(seen) and oldest in seen.body,
            None if store_acts else 500,
            delay=READ_TIMEOUT + 1.0,
            times=attempts,
        )
    )

    first = run(world, max_attempts=attempts, read_timeout_seconds=READ_TIMEOUT)
    wait_idle(store)

    assert_nothing_lost(world, keep)
    assert not first.success
    assert all(world.is_deleted(i) for i in expired)
    timed_out = {p.file_id for p in world.pending()}
    assert len(timed_out) == BATCH
    assert all(world.has_file(i) != store_acts for i in timed_out)
    assert not any(world.has_file(i) for i in expired if i not in timed_out)
    [log] = world.run_log()
    assert (log.status, log.deleted_count, log.error_count) == ("failed", EXPIRED - BATCH, BATCH)
    assert all("timed out" in e.lower() or "timeout" in e.lower() for e in json.loads(log.errors))
    held = store.proxy.requests(is_delete)
    assert len(held) == EXPIRED // BATCH + attempts - 1  # the first batch was sent twice

    second = run(world, max_attempts=attempts, read_timeout_seconds=READ_TIMEOUT)

    assert second.success
    assert_finished(world, expired, keep)
    log = world.run_log()[-1]
    # Only Azure tells a blob the late request already removed from one deleted now: those
    # are counted as already missing, not as deleted.
    missing = BATCH if store_acts and store.reports_missing else 0
    assert (log.status, log.deleted_count, log.error_count) == ("succeeded", BATCH - missing, 0)
    assert log.missing_count == missing


def throttle(store: Store, times: int) -> None:
    """The next `times` batch deletes are answered as a throttling store answers them."""
    if store.url.startswith("s3://"):
        body = (
            b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
            b"</Error>"
        )
        store.proxy.add_fault(
            Fault(is_delete, 503, body, {"Content-Type": "application/xml"}, times=times)
        )
    else:
        store.proxy.add_fault(
            Fault(is_delete, 503, b"", {"x-ms-error-code": "ServerBusy"}, times=times)
        )


def test_a_short_throttle_is_absorbed_by_the_sdk_retries(object_world):
    world, store = object_world, object_world.store
    expired, keep = seed(world)
    throttle(store, times=2)  # attempts: 3, so the first batch goes through on its third

    result = run(world)

    assert result.success
    assert_finished(world, expired, keep)
    [log] = world.run_log()
    assert (log.status, log.deleted_count, log.error_count) == ("succeeded", EXPIRED, 0)
    sent = store.proxy.requests(is_delete)
    assert len(sent) == EXPIRED // BATCH + 2  # the two throttled attempts were retried


def test_a_throttle_longer_than_the_retries_fails_the_run_and_the_next_run_finishes(
    object_world,
):
    world, store = object_world, object_world.store
    expired, keep = seed(world)
    throttle(store, times=1_000)  # throttled for the whole run

    first = run(world, max_attempts=2)

    assert_nothing_lost(world, keep)
    assert not first.success
    assert all(world.is_deleted(i) and world.has_file(i) for i in expired)
    assert sorted(p.file_id for p in world.pending()) == sorted(expired)
    [log] = world.run_log()
    assert (log.status, log.deleted_count, log.error_count) == ("failed", 0, EXPIRED)
    errors = json.loads(log.errors)
    assert all(("SlowDown" in e) or ("Service Unavailable" in e) for e in errors)
    assert len(store.proxy.requests(is_delete)) == 2 * (EXPIRED // BATCH)

    store.proxy.faults.clear()  # the store recovers
    second = run(world, max_attempts=2)

    assert second.success
    assert_finished(world, expired, keep)
    log = world.run_log()[-1]
    assert (log.status, log.deleted_count, log.bytes_reclaimed, log.error_count) == (
        "succeeded",
        EXPIRED,
        EXPIRED * SIZE,
        0,
    )


def test_a_key_left_out_of_the_answer_stays_pending(object_world):
    world, store = object_world, object_world.store
    expired, keep = seed(world)
    unanswered = expired[-1]  # the oldest row: in the first batch
    full_key = store.full_key(world.row(unanswered).storageKey)
    if store.url.startswith("s3://"):
        rewrite = without_s3_result(full_key)
        in_doubt = [unanswered]
        reason = "no result from store"
    else:
        # The SDK pairs sub-responses with deletes by position: one missing, none is sure.
        rewrite = without_blob_subresponse(f"{store.name}/{full_key}")
        in_doubt = expired[-BATCH:]
        reason = f"blob batch answered {BATCH - 1} results for {BATCH} deletes"
    store.proxy.add_fault(Fault(is_delete, None, rewrite=rewrite, times=1_000))

    first = run(world)

    # The store did delete every object; only its answer was short.
    assert not any(world.has_file(i) for i in expired)
    assert_nothing_lost(world, keep)
    assert not first.success
    assert sorted(p.file_id for p in world.pending()) == sorted(in_doubt)
    [log] = world.run_log()
    assert (log.status, log.deleted_count, log.error_count) == (
        "failed",
        EXPIRED - len(in_doubt),
        len(in_doubt),
    )
    errors = json.loads(log.errors)
    assert any(unanswered in e and repr(full_key) in e and reason in e for e in errors), errors

    store.proxy.faults.clear()
    second = run(world)

    assert second.success
    assert_finished(world, expired, keep)
    log = world.run_log()[-1]
    # The first run's deletes did remove them: Azure now finds them already missing (S3
    # cannot tell, and counts them deleted).
    missing = len(in_doubt) if store.reports_missing else 0
    assert (log.status, log.deleted_count, log.missing_count, log.error_count) == (
        "succeeded",
        len(in_doubt) - missing,
        missing,
        0,
    )


BAD_KEY = "2026/11/b\x01.pdf"  # U+0001: no XML 1.0 document can hold it


def bad_key_world(world: World) -> dict[str, str]:
    """Three expired rows whose middle key an S3 batch body cannot carry."""
    return {
        key: world.add(age=9 * DAY, key=key, size=SIZE)
        for key in ("2026/11/a.pdf", BAD_KEY, "2026/11/c.pdf")
    }


def test_a_key_xml_cannot_carry_never_holds_its_batch_hostage(s3_store, postgres_url, storage_root):
    store = s3_store
    world = World(postgres_url, storage_root, store)
    rows = bad_key_world(world)

    result = run(world)

    assert result.success
    assert all(world.is_deleted(i) and not world.has_file(i) for i in rows.values())
    assert world.pending() == []
    [log] = world.run_log()
    assert (log.status, log.deleted_count, log.error_count) == ("succeeded", 3, 0)
    # The two good keys went in one DeleteObjects; the bad one alone, in a DeleteObject's URL.
    [batch] = store.proxy.requests(is_delete)
    assert sorted(batch.s3_delete_keys()) == [
        store.full_key("2026/11/a.pdf"),
        store.full_key("2026/11/c.pdf"),
    ]
    [alone] = store.proxy.requests(lambda seen: seen.method == "DELETE")
    assert alone.path == f"/{store.bucket}/{store.full_key(BAD_KEY)}"


def test_a_control_character_azure_cannot_name_never_holds_its_batch_hostage(
    azure_store, postgres_url, storage_root
):
    """Azure's naming rules allow no control character in a blob name: that key is refused
    before marking (its row stays live, the error names it), and the others still go."""
    store = azure_store
    world = World(postgres_url, storage_root, store)
    rows = bad_key_world(world)

    result = run(world)

    assert not result.success
    bad = rows.pop(BAD_KEY)
    assert all(world.is_deleted(i) and not world.has_file(i) for i in rows.values())
    assert not world.is_deleted(bad) and world.has_file(bad)
    assert world.pending() == []
    [log] = world.run_log()
    assert (log.status, log.deleted_count, log.error_count) == ("failed", 2, 1)
    assert bad in log.errors and "control character" in log.errors
    [batch] = store.proxy.requests(is_delete)
    assert batch.blob_batch_deletes() == 2


def test_a_key_s3_refuses_alone_is_reported_by_name_and_the_others_go(
    s3_store, postgres_url, storage_root
):
    store = s3_store
    world = World(postgres_url, storage_root, store)
    rows = bad_key_world(world)
    full_key = store.full_key(BAD_KEY)
    store.proxy.add_fault(
        s3_error(
            lambda seen: seen.method == "DELETE" and seen.path.endswith(full_key),
            400,
            "InvalidArgument",
            "Invalid key",
            times=1_000,
        )
    )

    first = run(world)
    second = run(world)  # a key that keeps failing holds nothing else up, run after run

    bad = rows[BAD_KEY]
    assert not first.success and not second.success
    assert all(
        world.is_deleted(i) and not world.has_file(i) for k, i in rows.items() if k != BAD_KEY
    )
    assert world.is_deleted(bad) and world.has_file(bad)
    assert [p.file_id for p in world.pending()] == [bad]
    logs = world.run_log()
    assert [(log.deleted_count, log.error_count) for log in logs] == [(2, 1), (0, 1)]
    for log in logs:
        [error] = json.loads(log.errors)
        assert bad in error and repr(full_key) in error and "InvalidArgument" in error
    world.engine.dispose()
