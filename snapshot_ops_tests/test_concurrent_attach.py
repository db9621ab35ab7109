"""An order attaching a candidate while the cleanup runs never loses its file (PostgreSQL).

The application attaches by locking the snapshot row and inserting into OrderAttachments
only while `deletedAt` is null. The dangerous moment is an attach that commits while the
cleanup's `SELECT ... FOR UPDATE` waits for that row: the statement's own NOT EXISTS was
judged before the wait and cannot see it, so only the re-check in a new statement saves
the file. These tests create exactly that moment with two real connections.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
import sqlalchemy as sa

from snapshot_ops.catalog import Catalog, make_engine
from snapshot_ops.cleanup import mark_and_delete
from snapshot_ops.rules import make_policy
from snapshot_ops_tests.conftest import NOW

pytestmark = pytest.mark.integration

DAY = dt.timedelta(days=1)


def wait_for_lock_wait(engine: sa.Engine, timeout: float = 20.0) -> None:
    """Block until some session of this database is waiting on a row lock."""
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
            conn.rollback()
            if waiting:
                return
            time.sleep(0.02)
    raise AssertionError("the cleanup never waited for the attaching transaction's lock")


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
