"""The journal is worked as committed leases: no transaction on the application's database
stays open while the store works, two runs never settle or count one entry twice, and an
entry whose delete keeps failing backs off without holding up the others.

- A DeleteObjects request held 8 s by the fault proxy: meanwhile the application inserts a
  row into its SQLite database with SQLite's default 5 s busy timeout and succeeds; on
  PostgreSQL no backend of the job sits "idle in transaction" and the application updates
  the rows being deleted at once.
- Two runs holding leases on the same entries (one lease ran out): only the holder's settle
  counts, on both databases.
- A claim takes the next entries after its cursor that no run holds and that are due by its
  instant (at it included), each with its key, size and attempts; on PostgreSQL a claim made
  while another claim's transaction holds the first entries takes the next ones at once
  instead of waiting for them. Only keys a live row names are in use.
- A key whose delete keeps failing: the others go in the same run; after its second failure
  it is retried only after a delay that doubles. Each run that sends it and sees it fail
  reports it by name and fails; a run in between, which does not send it, succeeds with a
  warning naming it (run metadata `backingOff`, `backingOffOldest`).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time

import pytest
import sqlalchemy as sa

from snapshot_ops.db import BACKOFF_BASE, PendingDelete, backoff
from snapshot_ops.defs.resources import SnapshotDatabase
from snapshot_ops_tests.support.faultproxy import Fault, Seen
from snapshot_ops_tests.support.jobs import step_metadata
from snapshot_ops_tests.support.scenarios import DAY, bulk_add, start_job
from snapshot_ops_tests.support.waiting import wait_until
from snapshot_ops_tests.support.world import NOW, World

HELD_SECONDS = 8.0
#: SQLite's default busy timeout (sqlite3.connect's and most drivers').
APP_BUSY_TIMEOUT = 5.0


def is_delete_objects(seen: Seen) -> bool:
    return seen.is_s3_delete_objects


def held_delete_run(world: World, s3_store, home) -> tuple[object, list[str]]:
    """Start a job process whose one DeleteObjects the proxy holds HELD_SECONDS; return it
    once the request is being held, with the fileIds it is deleting."""
    expired = [world.add(age=10 * DAY) for _ in range(3)]
    proxy = s3_store.proxy
    proxy.add_fault(Fault(is_delete_objects, None, delay=HELD_SECONDS))
    process = start_job(world, home, batch_size=100, SNAPSHOT_OPS_STORAGE_URL=s3_store.url)

    def sent() -> bool:
        assert process.poll() is None, process.stdout.read()[-3000:]
        return bool(proxy.requests(is_delete_objects))

    wait_until(sent, timeout=120, interval=0.05, what="the run's DeleteObjects at the proxy")
    time.sleep(0.5)  # the request is in the proxy's hold now
    return process, expired


def finish(process, world: World, expired: list[str]) -> None:
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output[-3000:]
    assert all(world.is_deleted(i) and not world.has_file(i) for i in expired)
    [log] = world.run_log()
    assert (log.status, log.deleted_count) == ("succeeded", 3)


@pytest.mark.e2e
def test_sqlite_application_writes_while_a_delete_request_is_held(
    sqlite_url, storage_root, s3_store, tmp_path
):
    world = World(sqlite_url, storage_root, s3_store)
    try:
        process, expired = held_delete_run(world, s3_store, tmp_path / "home")
        app = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=APP_BUSY_TIMEOUT)
        try:
            started = time.monotonic()
            app.execute(
                'INSERT INTO "SnapshotFiles" ("fileId", "snapshotType", "storageKey", '
                '"createdAt") VALUES (?, ?, ?, ?)',
                ("new-one", "ParseSessionSnapshot", "ne/new-one.pdf", NOW.isoformat()),
            )
            app.commit()  # raises "database is locked" if the job holds the write lock
            waited = time.monotonic() - started
        finally:
            app.close()
        assert s3_store.proxy.in_flight >= 1, "the delete was no longer held: test too slow"
        assert waited < 2.0
        finish(process, world, expired)
    finally:
        world.engine.dispose()


@pytest.mark.e2e
def test_postgres_holds_no_transaction_while_a_delete_request_is_held(
    postgres_url, storage_root, s3_store, tmp_path
):
    world = World(postgres_url, storage_root, s3_store)
    try:
        process, expired = held_delete_run(world, s3_store, tmp_path / "home")
        with world.engine.connect() as conn:
            database = conn.exec_driver_sql("SELECT current_database()").scalar_one()
            idle_in_transaction = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = :db "
                    "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
                ),
                {"db": database},
            ).scalar_one()
        with world.engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '1s'")
            conn.execute(
                sa.update(world.files)
                .where(world.files.c.fileId.in_(expired))
                .values(parseSessionId="touched")
            )
            journal = conn.exec_driver_sql(
                "UPDATE snapshot_ops.pending_deletes SET last_error = NULL"
            ).rowcount
        assert s3_store.proxy.in_flight >= 1, "the delete was no longer held: test too slow"
        assert idle_in_transaction == 0
        assert journal == 3  # the job's own journal rows are not locked either
        finish(process, world, expired)
    finally:
        world.engine.dispose()


def journal(world: World, catalog, count: int) -> list[str]:
    """`count` rows marked deleted with journal entries, as a killed run leaves them."""
    ids = bulk_add(world, count)
    with world.engine.begin() as conn:
        conn.execute(
            sa.update(world.files).where(world.files.c.fileId.in_(ids)).values(deletedAt=NOW)
        )
        conn.execute(
            sa.insert(catalog.pending),
            [
                {
                    "file_id": i,
                    "storage_key": f"bulk/{i[-2:]}/{i}.pdf",
                    "size_bytes": 100,
                    "run_id": "killed",
                    "marked_at": NOW,
                }
                for i in ids
            ],
        )
    return ids


@pytest.mark.integration
def test_only_the_lease_holder_settles_and_counts(world):
    catalog = SnapshotDatabase(url=world.db_url).open_catalog()
    try:
        catalog.ensure_own_tables()
        for run in ("a", "b"):
            catalog.start_run(
                run_id=run, run_at=NOW, reference_time=NOW, cutoff=NOW, dry_run=False,
                candidate_count=0,
            )  # fmt: skip
        ids = journal(world, catalog, 5)
        now = dt.datetime.now(dt.UTC)
        lease = dt.timedelta(minutes=5)
        held, _ = catalog.claim_pending(run_id="a", now=now, lease=lease)
        assert sorted(e.file_id for e in held) == sorted(ids)
        # While a's lease runs, to its last microsecond, b gets nothing; at its end (a
        # lease holds until `lease_until`, not at it), b takes the entries.
        last = now + lease - dt.timedelta(microseconds=1)
        assert catalog.claim_pending(run_id="b", now=last, lease=lease) == ([], [])
        later = now + lease
        taken, _ = catalog.claim_pending(run_id="b", now=later, lease=lease)
        assert len(taken) == 5
        # a, whose lease ran out, answers first: it must change and count nothing, not
        # even release b's entries through a failure.
        by_a = catalog.settle_pending(
            run_id="a",
            now=later,
            deleted={i: 100 for i in ids[:4]},
            missing=[],
            failed={ids[4]: (0, "late answer")},
        )
        assert (by_a.deleted, by_a.missing, by_a.bytes_reclaimed) == (0, 0, 0)
        assert [(e.claimed_by, e.attempts) for e in world.pending()] == [("b", 0)] * 5
        by_b = catalog.settle_pending(
            run_id="b", now=later, deleted={i: 100 for i in ids[:4]}, missing=ids[4:], failed={}
        )
        assert (by_b.deleted, by_b.missing, by_b.bytes_reclaimed) == (4, 1, 400)
        counts = {r.run_id: (r.deleted_count, r.missing_count, r.bytes_reclaimed) for r in
                  world.run_log()}  # fmt: skip
        assert counts == {"a": (0, 0, 0), "b": (4, 1, 400)}
        assert world.pending() == []
    finally:
        catalog.engine.dispose()


@pytest.mark.integration
def test_a_claim_takes_the_next_due_entries_after_its_cursor(world):
    catalog = SnapshotDatabase(url=world.db_url).open_catalog()
    try:
        catalog.ensure_own_tables()
        ids = sorted(journal(world, catalog, 6))
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        due = {ids[3]: now, ids[4]: now + dt.timedelta(microseconds=1)}
        p = catalog.pending.c
        with world.engine.begin() as conn:
            for file_id, at in due.items():
                conn.execute(
                    sa.update(catalog.pending)
                    .where(p.file_id == file_id)
                    .values(next_attempt_at=at, attempts=2)
                )
        # The previous page ended at ids[2], which is still journaled (its delete failed
        # and was released): the next page starts after it. ids[3] is due at exactly `now`,
        # ids[4] one microsecond later, so it waits.
        claimed, shared = catalog.claim_pending(
            run_id="r", now=now, lease=dt.timedelta(minutes=5), after=ids[2], limit=2
        )
        assert claimed == [
            PendingDelete(ids[3], f"bulk/{ids[3][-2:]}/{ids[3]}.pdf", 100, 2),
            PendingDelete(ids[5], f"bulk/{ids[5][-2:]}/{ids[5]}.pdf", 100, 0),
        ]
        assert shared == []
        assert {e.file_id for e in world.pending() if e.claimed_by == "r"} == {ids[3], ids[5]}
    finally:
        catalog.engine.dispose()


def hold(conn, catalog, file_ids: list[str], *, run_id: str, until: dt.datetime) -> None:
    """Lease these journal entries to `run_id` until `until`, as its claim does, in `conn`'s
    transaction."""
    p = catalog.pending.c
    conn.execute(
        sa.update(catalog.pending)
        .where(p.file_id.in_(file_ids))
        .values(claimed_by=run_id, lease_until=until)
    )


@pytest.mark.integration
def test_a_claim_skips_entries_a_competing_claim_is_taking_without_waiting(pg_world):
    # On PostgreSQL, a second claim while a first one's transaction holds the first entries
    # (between its pick and its commit) takes the next ones at once: it neither waits for
    # the first claim's row locks nor takes its entries after them. A claim that waited
    # would fail on the database's lock timeout here.
    with pg_world.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        database = pg_world.engine.url.database
        conn.exec_driver_sql(f"ALTER DATABASE \"{database}\" SET lock_timeout = '2s'")
    catalog = SnapshotDatabase(url=pg_world.db_url).open_catalog()
    try:
        catalog.ensure_own_tables()
        ids = sorted(journal(pg_world, catalog, 6))
        now, lease = dt.datetime.now(dt.UTC), dt.timedelta(minutes=5)
        with pg_world.engine.begin() as first:
            hold(first, catalog, ids[:3], run_id="first", until=now + lease)
            second, _ = catalog.claim_pending(run_id="second", now=now, lease=lease, limit=3)
            assert [e.file_id for e in second] == ids[3:]
        holders = [e.claimed_by for e in pg_world.pending()]
        assert holders == ["first"] * 3 + ["second"] * 3
    finally:
        catalog.engine.dispose()


@pytest.mark.integration
def test_a_claim_passes_over_entries_another_run_holds(world):
    catalog = SnapshotDatabase(url=world.db_url).open_catalog()
    try:
        catalog.ensure_own_tables()
        ids = sorted(journal(world, catalog, 4))
        now, lease = dt.datetime.now(dt.UTC), dt.timedelta(minutes=5)
        with world.engine.begin() as conn:
            hold(conn, catalog, ids[:2], run_id="other", until=now + lease)
        # The first two in file_id order are held: a claim of two takes the two after them.
        claimed, _ = catalog.claim_pending(run_id="r", now=now, lease=lease, limit=2)
        assert [e.file_id for e in claimed] == ids[2:]
    finally:
        catalog.engine.dispose()


@pytest.mark.integration
def test_only_the_keys_a_live_row_names_are_in_use(world):
    catalog = SnapshotDatabase(url=world.db_url).open_catalog()
    try:
        live = world.add(age=DAY)
        marked = world.add(age=10 * DAY, deleted=True)
        key = {i: world.row(i).storageKey for i in (live, marked)}
        asked = [key[live], key[marked], "never/stored.pdf", key[live]]
        assert catalog.shared_keys(asked) == {key[live]}
        assert catalog.shared_keys([key[marked]]) == set()
        assert catalog.shared_keys([]) == set()
    finally:
        catalog.engine.dispose()


def pending_entry(world: World, file_id: str):
    return next(p for p in world.pending() if p.file_id == file_id)


def aware(value) -> dt.datetime:
    value = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@pytest.mark.integration
def test_a_key_that_keeps_failing_backs_off_and_fails_only_the_runs_that_send_it(world):
    # A name longer than the file system allows: every delete of it fails.
    (world.root / "st").mkdir()
    stuck = world.add(age=10 * DAY, with_file=False, key="st/" + "n" * 300 + ".pdf")
    first = world.add(age=10 * DAY)

    # First failure: the others go, and the next run tries it again (a passing outage).
    assert not world.run().success
    assert pending_entry(world, stuck).attempts == 1
    assert not world.has_file(first)
    before = dt.datetime.now(dt.UTC)
    assert not world.run().success
    entry = pending_entry(world, stuck)
    assert entry.attempts == 2
    assert aware(entry.next_attempt_at) - before >= BACKOFF_BASE - dt.timedelta(seconds=1)
    log = world.run_log()[-1]
    assert stuck in log.errors

    # Next run: the stuck key is not sent again (a known failure: a warning, not an error);
    # a new key goes at once.
    second = world.add(age=10 * DAY)
    waiting = world.run()
    assert waiting.success
    assert pending_entry(world, stuck).attempts == 2
    assert not world.has_file(second)
    log = world.run_log()[-1]
    assert (log.status, log.deleted_count, log.error_count) == ("succeeded", 1, 0)
    recorded = step_metadata(waiting, "record_cleanup_run")
    assert recorded["backingOff"] == 1
    assert recorded["backingOffOldest"].startswith(f"{stuck}, marked ")
    assert "failed 2 time(s)" in recorded["backingOffOldest"]

    # Once its delay is over it is tried again, and the next delay doubles.
    with world.engine.begin() as conn:
        conn.execute(
            sa.text(f"UPDATE {pending_table(world)} SET next_attempt_at = :past"),
            {"past": before - DAY},
        )
    again = dt.datetime.now(dt.UTC)
    assert not world.run().success
    entry = pending_entry(world, stuck)
    assert entry.attempts == 3
    delay = aware(entry.next_attempt_at) - again
    assert backoff(3) - dt.timedelta(minutes=1) <= delay <= backoff(3) + dt.timedelta(minutes=1)
    assert backoff(3) == 2 * BACKOFF_BASE


def pending_table(world: World) -> str:
    sqlite = world.db_url.startswith("sqlite")
    return "snapshot_ops_pending_deletes" if sqlite else "snapshot_ops.pending_deletes"


@pytest.mark.integration
def test_the_jobs_reads_take_no_write_lock_on_sqlite(sqlite_url, storage_root):
    # SQLAlchemy begins a transaction for a plain read too. Begun IMMEDIATE, a read would ask
    # for SQLite's database-wide write lock: it would queue behind every application write
    # and, once granted, hold off the application's other writers until it ends.
    world = World(sqlite_url, storage_root)
    catalog = SnapshotDatabase(url=sqlite_url).open_catalog()
    world.add(age=10 * DAY)
    app = sqlite3.connect(
        sqlite_url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False
    )
    try:
        app.execute("BEGIN IMMEDIATE")  # an application write in progress
        app.execute('UPDATE "SnapshotFiles" SET "parseSessionId" = ?', ("writing",))
        commit_later = threading.Timer(3.0, app.execute, ("COMMIT",))
        commit_later.start()
        started = time.monotonic()
        with catalog.reading() as conn:
            rows = conn.execute(sa.select(sa.func.count()).select_from(catalog.files)).scalar()
        waited = time.monotonic() - started
        commit_later.join()
        assert rows == 1
        assert waited < 1.5, f"the read waited {waited:.1f} s for the application's write"
    finally:
        app.close()
        catalog.engine.dispose()
        world.engine.dispose()


@pytest.mark.integration
def test_a_journal_made_by_an_older_version_gets_the_lease_columns(world):
    # The journal as versions without leases created it, holding one entry.
    sqlite = world.db_url.startswith("sqlite")
    with world.engine.begin() as conn:
        if not sqlite:
            conn.exec_driver_sql("CREATE SCHEMA snapshot_ops")
        stamp = "DATETIME" if sqlite else "TIMESTAMP WITH TIME ZONE"
        conn.exec_driver_sql(
            f"CREATE TABLE {pending_table(world)} (file_id TEXT PRIMARY KEY, "
            "storage_key TEXT NOT NULL, size_bytes BIGINT, run_id TEXT NOT NULL, "
            f"marked_at {stamp} NOT NULL, attempts INTEGER DEFAULT 0 NOT NULL, last_error TEXT)"
        )
    file_id = world.add(age=10 * DAY, deleted=True)
    key = world.row(file_id).storageKey
    with world.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"INSERT INTO {pending_table(world)} (file_id, storage_key, size_bytes, "
                "run_id, marked_at) VALUES (:id, :key, 100, 'old', :at)"
            ),
            {"id": file_id, "key": key, "at": NOW},
        )
    assert world.run().success
    assert world.pending() == [] and not world.has_file(file_id)
    assert world.run_log()[-1].deleted_count == 1


@pytest.mark.integration
def test_a_batch_leased_at_marking_is_left_to_its_marker(world):
    # Run a marks a batch (its journal entries leased to it in the marking transaction);
    # run b's journal sweep, on its own connections, must neither delete nor count them.
    from snapshot_ops.cleanup import delete_marked, finish_pending
    from snapshot_ops.storage.filesystem import FilesystemBackend

    ids = [world.add(age=10 * DAY, size=100) for _ in range(4)]
    marker = SnapshotDatabase(url=world.db_url).open_catalog()
    sweeper = SnapshotDatabase(url=world.db_url).open_catalog()
    backend = FilesystemBackend(str(world.root))
    try:
        marker.ensure_own_tables()
        for run in ("a", "b"):
            marker.start_run(
                run_id=run, run_at=NOW, reference_time=NOW, cutoff=NOW, dry_run=False,
                candidate_count=0,
            )  # fmt: skip
        lease, before = dt.timedelta(minutes=5), dt.datetime.now(dt.UTC)
        batch = marker.mark_batch(
            cutoff=NOW - 7 * DAY, cursor=None, limit=10, run_id="a", marked_at=NOW, lease=lease
        )
        after = dt.datetime.now(dt.UTC)
        assert sorted(c.file_id for c in batch.marked) == sorted(ids)
        # Each entry carries its row's size and a lease that ends `lease` after the marking
        # (so a sweep takes it over if run a dies holding it).
        marked = world.pending()
        assert {(e.claimed_by, e.size_bytes) for e in marked} == {("a", 100)}
        assert all(before + lease <= aware(e.lease_until) <= after + lease for e in marked)

        swept = finish_pending(
            sweeper, backend, run_id="b", lease=dt.timedelta(minutes=5), batch_size=10
        )
        assert (swept.removed, swept.missing) == (0, 0) and all(world.has_file(i) for i in ids)

        entries = [PendingDelete(c.file_id, c.storage_key, c.size_bytes, 0) for c in batch.marked]
        report = delete_marked(marker, backend, entries, run_id="a")
        assert (report.removed, report.bytes_reclaimed) == (4, 400)
        assert not any(world.has_file(i) for i in ids) and world.pending() == []
        counts = {r.run_id: (r.marked_count, r.deleted_count) for r in world.run_log()}
        assert counts == {"a": (4, 4), "b": (0, 0)}
    finally:
        backend.close()
        marker.engine.dispose()
        sweeper.engine.dispose()
