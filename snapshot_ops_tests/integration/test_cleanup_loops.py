"""The two loops below the ops: the cap holds inside the marking loop, and objects of rows
marked by a run that stopped before deleting are finished by the next run. A loop's report
is the sum of its batches' reports."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import threading
import time

import pytest
import sqlalchemy as sa

from snapshot_ops import checkpoints, cleanup
from snapshot_ops.cleanup import DeleteReport, mark_and_delete
from snapshot_ops.db import BackedOff, Catalog, make_engine
from snapshot_ops.rules import make_policy
from snapshot_ops.storage.filesystem import FilesystemBackend
from snapshot_ops_tests.support.world import NOW

pytestmark = pytest.mark.integration

DAY = dt.timedelta(days=1)


def catalog_for(world) -> Catalog:
    catalog = Catalog(make_engine(world.db_url))
    catalog.ensure_own_tables()
    return catalog


def policy(max_deletions: int = 1000):
    return make_policy(
        reference_time=NOW.isoformat(), retention_days=7, max_deletions=max_deletions, now=NOW
    )


def test_adding_reports_adds_every_count_and_joins_every_list():
    # One report per batch, or a batch's and the rows it kept or released: the refused rows
    # of every batch must reach release_refused, and every count the run's figures. The
    # entries waiting out a backoff are listed once, though two steps of a re-execution may
    # both list one.
    w1, w2 = (BackedOff(i, 2, NOW, "AccessDenied", NOW - DAY) for i in ("w1", "w2"))
    first = DeleteReport(
        removed=1, missing=2, bytes_reclaimed=300, errors=["e1"], kept_shared=["s1"],
        refused=["r1"], released=["l1"], waiting=(w1,),
    )  # fmt: skip
    second = DeleteReport(
        removed=10, missing=20, bytes_reclaimed=3000, errors=["e2"], kept_shared=["s2"],
        refused=["r2"], released=["l2"], waiting=(w1, w2),
    )  # fmt: skip

    total = first + second

    assert dataclasses.asdict(total) == {
        "removed": 11, "missing": 22, "bytes_reclaimed": 3300, "errors": ["e1", "e2"],
        "kept_shared": ["s1", "s2"], "refused": ["r1", "r2"], "released": ["l1", "l2"],
        "waiting": (dataclasses.asdict(w1), dataclasses.asdict(w2)),
    }  # fmt: skip
    assert DeleteReport() + first == first


@pytest.mark.parametrize("cap", [3, 5])
def test_marking_never_goes_past_the_cap(world, cap):
    # Candidates can appear after the up-front count; the loop itself stops at the cap. With
    # batches of 2, a cap of 5 leaves room for one row when the third batch is read ahead.
    ids = [world.add(age=(8 + n) * DAY) for n in range(cap + 2)]
    catalog = catalog_for(world)
    backend = FilesystemBackend(str(world.root))
    marked, deleted = mark_and_delete(
        catalog, backend, policy(max_deletions=cap), run_id="r", marked_at=NOW, batch_size=2
    )
    backend.close()
    catalog.engine.dispose()
    assert marked.marked_count == cap and deleted.removed == cap
    assert sum(world.has_file(i) for i in ids) == 2
    # Oldest first: the keyset order is "createdAt".
    assert [world.is_deleted(i) for i in ids] == [False] * 2 + [True] * cap


def test_marked_but_undeleted_objects_are_finished_by_the_next_run(world):
    ids = [world.add(age=10 * DAY, size=50) for _ in range(3)]
    catalog = catalog_for(world)
    # A run that marked, then stopped before any delete (no storage to delete with).
    mark_and_delete(catalog, None, policy(), run_id="crashed", marked_at=NOW, batch_size=2)
    catalog.engine.dispose()
    assert all(world.is_deleted(i) and world.has_file(i) for i in ids)
    assert len(world.pending()) == 3

    result = world.run()

    assert result.success
    assert all(world.is_deleted(i) and not world.has_file(i) for i in ids)
    assert world.pending() == []
    [log] = world.run_log()
    assert (log.deleted_count, log.bytes_reclaimed, log.marked_count) == (3, 150, 0)


def test_progress_is_reported_at_most_every_interval_and_at_the_end(world):
    # Each batch takes 4 s by this clock; with an 8 s interval (not the default 10 s) every
    # second batch reports, exactly at the interval.
    ids = [world.add(age=(8 + n) * DAY) for n in range(7)]
    ticks = iter(range(1000, 2000, 4))  # started at 1000, not 0
    reports = []
    catalog = catalog_for(world)
    backend = FilesystemBackend(str(world.root))
    marked, _ = mark_and_delete(
        catalog,
        backend,
        policy(),
        run_id="r",
        marked_at=NOW,
        batch_size=1,
        progress=reports.append,
        candidates=7,
        progress_interval=8,
        clock=lambda: next(ticks),
    )
    backend.close()
    catalog.engine.dispose()
    assert marked.marked_count == 7 and not any(world.has_file(i) for i in ids)
    # Started at 1000; batches end 4, 8 (reported), 12, 16 (reported), 20, 24 (reported),
    # 28, the walk's empty read at 32 (reported), the end at 36.
    assert [r.marked for r in reports] == [2, 4, 6, 7, 7]
    assert [r.elapsed_seconds for r in reports] == [8, 16, 24, 32, 36]
    final = reports[-1]
    assert (final.marked, final.deleted, final.total) == (7, 7, 7)
    assert final.eta_seconds == 0 and final.rate == pytest.approx(7 / 36)


def test_a_long_run_logs_growing_progress_in_the_event_log(world, monkeypatch):
    from dagster import DagsterInstance

    from snapshot_ops import cleanup

    monkeypatch.setattr(cleanup, "PROGRESS_INTERVAL_SECONDS", 0.0)  # every batch reports
    ids = [world.add(age=(8 + n) * DAY) for n in range(5)]
    with DagsterInstance.ephemeral() as instance:
        result = world.run(instance=instance, batch_size=2)
        assert result.success
        lines = [
            e.user_message
            for e in instance.all_logs(result.run_id)
            if e.user_message.startswith("progress: ")
        ]
    assert not any(world.has_file(i) for i in ids)
    marked = [int(line.split()[1].replace(",", "")) for line in lines]
    assert marked == sorted(marked) and marked[0] < 5 and marked[-1] == 5
    assert lines[-1].startswith("progress: 5 rows marked, 5 objects deleted of 5 in ")


def test_a_batch_short_of_the_cap_reads_on(world):
    # The next batch is read while the current one is marked, but only as many rows as the
    # cap leaves if every row read is marked. A row that changes between the read and the
    # lock is not marked: the loop must read on to reach the cap, and no further.
    ids = [world.add(age=(11 - n) * DAY) for n in range(4)]  # oldest first
    catalog = catalog_for(world)
    changed: list[str] = []

    class ChangingStore(FilesystemBackend):
        def refusals(self, keys):
            if not changed:  # the application re-keys the second row meanwhile
                changed.append(ids[1])
                with world.engine.begin() as conn:
                    conn.execute(
                        sa.update(world.files)
                        .where(world.files.c.fileId == ids[1])
                        .values(storageKey=f"{ids[1][:2]}/{ids[1]}.other")
                    )
            return super().refusals(keys)

    backend = ChangingStore(str(world.root))
    marked, _ = mark_and_delete(
        catalog, backend, policy(max_deletions=2), run_id="r", marked_at=NOW, batch_size=2
    )
    backend.close()
    catalog.engine.dispose()
    assert changed == [ids[1]]
    assert marked.marked_count == 2
    assert [world.is_deleted(i) for i in ids] == [True, False, True, False]


def test_bytes_reclaimed_take_the_rows_size_and_measure_only_unknown_ones(world):
    # A row's "sizeBytes" is the figure when it is 0 or more; NULL or negative means
    # unknown, and the object is measured before it is deleted (each object here: 10 bytes,
    # or as many as its row says when that is positive).
    sizes = {world.add(age=10 * DAY, size=size): size for size in (0, None, -5, 1, 7)}
    catalog = catalog_for(world)
    backend = FilesystemBackend(str(world.root))
    marked, deleted = mark_and_delete(
        catalog, backend, policy(), run_id="r", marked_at=NOW, batch_size=10
    )
    backend.close()
    catalog.engine.dispose()
    assert not any(world.has_file(i) for i in sizes)
    assert marked.bytes_marked == 1 + 7  # what the rows say they hold
    assert (deleted.removed, deleted.bytes_reclaimed) == (5, 0 + 10 + 10 + 1 + 7)


def test_the_marking_loop_ends_with_one_line_of_every_count(world, caplog, monkeypatch):
    # Ten rows marked: four objects go, three are gone already, the store fails one, and
    # new live rows name the last two's keys once they are marked, before their objects are
    # deleted. Every count differs, so no count can stand in for another.
    import logging

    from snapshot_ops.storage.base import DeleteResult, Outcome

    going = [world.add(age=10 * DAY) for _ in range(4)]
    for _ in range(3):
        world.add(age=10 * DAY, with_file=False)
    failing = world.add(age=10 * DAY)
    shared = [world.add(age=10 * DAY) for _ in range(2)]
    failing_key = world.row(failing).storageKey
    reached = checkpoints.reached

    def note(name: str) -> None:
        reached(name)
        if name == "before_delete":
            for file_id in shared:
                world.add(age=DAY, key=world.row(file_id).storageKey, with_file=False)

    monkeypatch.setattr(checkpoints, "reached", note)

    class Store(FilesystemBackend):
        def delete_many(self, keys):
            done = {r.key: r for r in super().delete_many([k for k in keys if k != failing_key])}
            failed = DeleteResult(failing_key, Outcome.FAILED, "refused")
            return [done.get(k, failed) for k in keys]

    catalog = catalog_for(world)
    backend = Store(str(world.root))
    with caplog.at_level(logging.INFO, logger="snapshot_ops.cleanup"):
        mark_and_delete(catalog, backend, policy(), run_id="r", marked_at=NOW, batch_size=10)
    backend.close()
    catalog.engine.dispose()
    assert not any(world.has_file(i) for i in going)
    assert all(world.has_file(i) for i in [failing, *shared])
    assert caplog.messages[-1] == (
        "marked 10 rows deleted (0 attached meanwhile, kept); deleted 4 objects, "
        "3 already missing, 1 failed, 2 kept because a live row shares them"
    )


def test_the_journal_sweep_pages_through_every_entry_once(world):
    # Six rows an earlier run marked and journaled, then stopped. Three have an object a
    # live row names by now (dropped from the journal, object kept), one the store fails
    # (it stays, tried once), two go. In file_id order and pages of 2: the first page is
    # all shared, so the sweep steps past it on the shared ids alone; the second mixes a
    # shared entry after one that goes. The failure's 2,600-character error is kept to
    # its first 2,000.
    from snapshot_ops.cleanup import finish_pending
    from snapshot_ops.storage.base import DeleteResult, Outcome

    ids = sorted(world.add(age=10 * DAY) for _ in range(6))
    shared, failing, going = [ids[0], ids[1], ids[3]], ids[4], [ids[2], ids[5]]
    catalog = catalog_for(world)
    mark_and_delete(catalog, None, policy(), run_id="earlier", marked_at=NOW, batch_size=10)
    for file_id in shared:
        world.add(age=DAY, key=world.row(file_id).storageKey, with_file=False)
    failing_key = world.row(failing).storageKey
    requests: list[list[str]] = []

    class FailingStore(FilesystemBackend):
        def delete_many(self, keys):
            requests.append(list(keys))
            done = super().delete_many([k for k in keys if k != failing_key])
            failed = DeleteResult(failing_key, Outcome.FAILED, "test failure " * 200)
            by_key = {r.key: r for r in done}
            return [by_key.get(k, failed) for k in keys]

    backend = FailingStore(str(world.root))
    report = finish_pending(
        catalog, backend, run_id="sweep", lease=dt.timedelta(minutes=5), batch_size=2
    )
    backend.close()
    catalog.engine.dispose()
    key = {i: world.row(i).storageKey for i in ids}
    assert requests == [[key[ids[2]]], [key[ids[4]], key[ids[5]]]]
    assert (report.removed, report.kept_shared) == (2, shared)
    assert [e.file_id for e in world.pending()] == [failing]
    [entry] = world.pending()
    assert entry.attempts == 1
    assert entry.last_error == ("test failure " * 200)[:2000]  # the journal keeps 2,000 chars
    assert not any(world.has_file(i) for i in going)
    assert all(world.has_file(i) for i in [*shared, failing])


def test_the_journal_sweep_reports_progress_at_most_every_interval_and_at_the_end(world):
    from snapshot_ops.cleanup import finish_pending

    ids = [world.add(age=(8 + n) * DAY) for n in range(5)]
    catalog = catalog_for(world)
    mark_and_delete(catalog, None, policy(), run_id="earlier", marked_at=NOW, batch_size=10)
    ticks = iter(range(1000, 2000, 2))  # started at 1000, not 0
    reports = []
    backend = FilesystemBackend(str(world.root))
    finish_pending(
        catalog,
        backend,
        run_id="sweep",
        lease=dt.timedelta(minutes=5),
        batch_size=1,
        progress=reports.append,
        candidates=5,
        progress_interval=7,
        clock=lambda: next(ticks),
    )
    backend.close()
    catalog.engine.dispose()
    assert not any(world.has_file(i) for i in ids)
    # Started at 1000; pages of one end 2, 4, 6, 8 (reported), 10, and the end at 12 is
    # reported although only 4 s passed since.
    assert [(r.deleted, r.total, r.elapsed_seconds) for r in reports] == [(4, 5, 8), (5, 5, 12)]
    assert all(r.marked == 0 for r in reports)


def test_a_failed_batch_stops_the_marking_and_cancels_the_batches_still_queued(world, monkeypatch):
    # DELETER_THREADS batches are deleted at once while MAX_BATCHES_IN_FLIGHT more wait.
    # The first delete raises once that many batches are in; every other delete is held a
    # second, long past the failure, so the queued batches are still queued when the loop
    # sees it. The loop marks at most the batch it was blocked on and one more, the queued
    # batches never reach the store, and the run raises the store's error. What was marked
    # and not deleted stays journaled for the next run's sweep: nothing is lost.
    batch_size, in_flight = 2, cleanup.DELETER_THREADS + cleanup.MAX_BATCHES_IN_FLIGHT
    ids = [world.add(age=(8 + n) * DAY) for n in range(10 * batch_size)]
    all_in, failed = threading.Event(), threading.Event()
    marks, deletes = itertools.count(1), itertools.count()
    reached = checkpoints.reached

    def note(name: str) -> None:
        reached(name)
        if name == "after_mark_batch" and next(marks) == in_flight:
            all_in.set()

    monkeypatch.setattr(checkpoints, "reached", note)

    class FailingOnce(FilesystemBackend):
        def delete_many(self, keys):
            if next(deletes) == 0:
                assert all_in.wait(30)
                failed.set()
                raise ConnectionError("the store went away")
            assert failed.wait(30)
            time.sleep(1.0)
            return super().delete_many(keys)

    catalog = catalog_for(world)
    backend = FailingOnce(str(world.root))
    with pytest.raises(ConnectionError, match="the store went away"):
        mark_and_delete(catalog, backend, policy(), run_id="r", marked_at=NOW, batch_size=2)
    backend.close()
    catalog.engine.dispose()

    marked = {i for i in ids if world.is_deleted(i)}
    gone = {i for i in ids if not world.has_file(i)}
    assert in_flight * batch_size <= len(marked) <= (in_flight + 2) * batch_size
    # Only the batches the deleting threads held when the first failed were deleted.
    assert batch_size <= len(gone) <= cleanup.DELETER_THREADS * batch_size
    assert gone <= marked
    assert {e.file_id for e in world.pending()} == marked - gone
