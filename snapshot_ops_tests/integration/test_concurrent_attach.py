"""An order attaching a candidate while the cleanup runs never loses its file (PostgreSQL).

The application attaches by locking the snapshot row and inserting into OrderAttachments
only while `deletedAt` is null. The dangerous moment is an attach that commits while the
cleanup's `SELECT ... FOR UPDATE` waits for that row: the statement's own NOT EXISTS was
judged before the wait and cannot see it, so only the re-check in a new statement saves
the file. The first tests create exactly that moment with two real connections; the last
ones run the job over thousands of candidates while two application threads keep attaching
random ones, and show that the same check catches a check-then-delete cleanup.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import sqlalchemy as sa

from snapshot_ops.cleanup import mark_and_delete
from snapshot_ops.db import Catalog, make_engine
from snapshot_ops.rules import make_policy
from snapshot_ops_tests.support.scenarios import (
    Attacher,
    bulk_add,
    lost_files,
    state,
    wait_for_lock_wait,
)
from snapshot_ops_tests.support.world import NOW

DAY = dt.timedelta(days=1)


def mark_in_thread(url: str, out: list) -> threading.Thread:
    def target() -> None:
        catalog = Catalog(make_engine(url))
        catalog.ensure_own_tables()
        policy = make_policy(
            reference_time=NOW.isoformat(), retention_days=7, max_deletions=100, now=NOW
        )
        marked, _ = mark_and_delete(
            catalog, None, policy, run_id="r1", marked_at=NOW, batch_size=10
        )
        out.append(marked)
        catalog.engine.dispose()

    thread = threading.Thread(target=target)
    thread.start()
    return thread


def test_attach_committed_during_the_lock_wait_keeps_the_file(pg_world):
    target = pg_world.add(age=10 * DAY)
    other = pg_world.add(age=10 * DAY)
    files, attachments = pg_world.files, pg_world.attachments

    with pg_world.engine.connect() as app:
        app.execute(
            sa.select(files.c.fileId)
            .where(files.c.fileId == target, files.c.deletedAt.is_(None))
            .with_for_update()
        )
        app.execute(sa.insert(attachments).values(orderId="o-9", fileId=target))
        out: list = []
        thread = mark_in_thread(pg_world.db_url, out)
        wait_for_lock_wait(pg_world.engine)
        app.commit()  # the attach lands while the cleanup waits for the row
    thread.join(timeout=30)

    [report] = out
    assert report.attached_meanwhile == [target]
    assert not pg_world.is_deleted(target)
    assert pg_world.is_deleted(other)
    assert [p.file_id for p in pg_world.pending()] == [other]


def test_attach_after_the_mark_finds_the_row_deleted(pg_world):
    target = pg_world.add(age=10 * DAY)
    out: list = []
    mark_in_thread(pg_world.db_url, out).join(timeout=30)
    # The application's attach checks deletedAt under the lock and refuses.
    assert pg_world.attach(target) is False
    assert pg_world.is_deleted(target)


# -- at scale: a run over thousands of candidates while the application keeps attaching ----

CANDIDATES = 2000


def race(world, clean) -> tuple[list[Attacher], float, float]:
    """Run `clean()` while two attachers work on the same candidates."""
    ids = bulk_add(world, CANDIDATES)
    attachers = [Attacher(world, ids, seed) for seed in (1, 2)]
    for a in attachers:
        a.start()
    time.sleep(0.2)  # some attaches land before the run starts
    started = time.monotonic()
    clean()
    ended = time.monotonic()
    time.sleep(0.2)
    for a in attachers:
        a.stop.set()
        a.join(timeout=30)
    return attachers, started, ended


def check_then_delete(world) -> None:
    """The rejected design, kept here only to show the race test catches it: select the
    unlinked candidates, then delete each object and mark its row, with no lock and no
    re-check in between."""
    files, attachments = world.files, world.attachments
    with world.engine.connect() as conn:
        rows = conn.execute(
            sa.select(files.c.fileId, files.c.storageKey).where(
                files.c.snapshotType == "ParseSessionSnapshot",
                files.c.deletedAt.is_(None),
                files.c.createdAt < NOW - 7 * DAY,
                ~sa.exists().where(attachments.c.fileId == files.c.fileId),
            )
        ).all()
    for row in rows:
        (world.root / row.storageKey).unlink(missing_ok=True)
        with world.engine.begin() as conn:
            conn.execute(sa.update(files).where(files.c.fileId == row.fileId).values(deletedAt=NOW))


def test_thousands_of_candidates_with_concurrent_attaches_lose_no_file(pg_world):
    attachers, started, ended = race(pg_world, lambda: pg_world.run(batch_size=50))

    assert lost_files(pg_world, attachers) == []
    # The run and the attaches overlapped: attaches succeeded during the run, and others
    # were refused during it because the run had marked the row first.
    during = [t for a in attachers for _, t in a.attached if started < t < ended]
    refused_during = [t for a in attachers for t in a.refused if started < t < ended]
    assert during and refused_during, (len(during), len(refused_during), ended - started)
    # Everything not attached went, and the run log counts exactly that.
    now = state(pg_world)
    attached = {file_id for a in attachers for file_id, _ in a.attached}
    gone = [i for i, s in now.items() if s == (True, False)]
    assert len(gone) + len(attached) == CANDIDATES
    [log] = pg_world.run_log()
    assert (log.status, log.deleted_count, log.missing_count) == ("succeeded", len(gone), 0)
    assert pg_world.pending() == []


def test_the_race_test_catches_a_check_then_delete_cleanup(pg_world):
    # Same scenario, the naive cleanup: the test's assertion must fail against it.
    attachers, _, _ = race(pg_world, lambda: check_then_delete(pg_world))
    assert lost_files(pg_world, attachers) != []
