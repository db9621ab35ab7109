"""The catalog's reading and releasing of journal entries, and its range boundaries, in
process on both databases.

The job and `python -m snapshot_ops.journal` use these (the end-to-end tier runs them in
subprocesses); here each is called directly, so a change to its SQL fails a test that can
say which rows it touched:

- `journal()` lists every entry with its row's state now, in file_id order, and nothing
  when the job never made its journal;
- `release_pending` makes live again only the rows whose entries it dropped, and never an
  entry a live run holds;
- `settle_pending` whose connection the server drops settles again on a new one and
  counts once;
- `start_run` opens a run's row once, with the first call's figures; `finish_run` closes it
  with its status, errors, the time and the counters it is given, and returns the counters
  the settle transactions added; `running_runs` lists the others still running;
- `release_leases` and `close_crashed_runs` free the entries of runs that ended, and no
  other run's; `close_crashed_runs` and `finish_run_if_running` close only the run-log rows
  of runs still running, with the time they closed them;
- `release_stale` releases, page by page, every entry whose row names another object now,
  and logs each;
- `range_boundaries` returns the every-th candidate's key in the marking walk's order;
- `summarize` gives the figures a run's plan shows (candidates, their known bytes, those
  without a size, expired rows kept because an order links them), and `count_undated` the
  rows no run can date.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re

import pytest
import sqlalchemy as sa

from snapshot_ops.db import (
    CRASHED,
    FAILED,
    MAX_STORED_ERRORS,
    RUNNING,
    SUCCEEDED,
    CandidateSummary,
)
from snapshot_ops.defs.resources import SnapshotDatabase
from snapshot_ops.rules import PERMANENT_TYPE
from snapshot_ops_tests.support.scenarios import DAY
from snapshot_ops_tests.support.world import NOW

pytestmark = pytest.mark.integration

CUTOFF = NOW - 7 * DAY


@pytest.fixture
def catalog(world):
    opened = SnapshotDatabase(url=world.db_url).open_catalog()
    yield opened
    opened.engine.dispose()


def assert_just_now(stamp):
    """`stamp` (as the run log stores it: aware on PostgreSQL, naive UTC on SQLite) is the
    current UTC time, within a minute."""
    if isinstance(stamp, str):
        stamp = dt.datetime.fromisoformat(stamp)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    assert abs(dt.datetime.now(dt.UTC) - stamp) < dt.timedelta(minutes=1), stamp


def naive_utc(stamp):
    """`stamp` as naive UTC, however the run log stored it (aware on PostgreSQL, naive
    UTC on SQLite, where a driver may also hand back text)."""
    if isinstance(stamp, str):
        stamp = dt.datetime.fromisoformat(stamp)
    return stamp.astimezone(dt.UTC).replace(tzinfo=None) if stamp.tzinfo else stamp


def mark(catalog, ids, *, run_id="r1", lease=None):
    """Mark these candidates (and journal them) as run `run_id` would; return marked ids."""
    catalog.start_run(
        run_id=run_id, run_at=NOW, reference_time=NOW, cutoff=CUTOFF, dry_run=False,
        candidate_count=len(ids),
    )  # fmt: skip
    batch = catalog.mark_batch(
        cutoff=CUTOFF, cursor=None, limit=100, run_id=run_id, marked_at=NOW, lease=lease
    )
    marked = {c.file_id for c in batch.marked}
    assert marked == set(ids)
    return marked


def test_the_journal_lists_each_entry_with_its_rows_state_now(world, catalog):
    assert catalog.journal() == []  # the job never ran here: no journal table
    catalog.ensure_own_tables()
    assert catalog.journal() == [] and catalog.pending_count() == 0

    kept, rekeyed, gone = (world.add(age=(10 + i) * DAY) for i in range(3))
    mark(catalog, [kept, rekeyed, gone])
    assert catalog.pending_count() == 3
    with world.engine.begin() as conn:
        conn.execute(
            sa.update(world.files).where(world.files.c.fileId == rekeyed).values(storageKey="new")
        )
        conn.execute(sa.delete(world.files).where(world.files.c.fileId == gone))
        conn.execute(
            sa.update(catalog.pending)
            .where(catalog.pending.c.file_id == kept)
            .values(attempts=2, last_error="Slow Down")
        )

    entries = catalog.journal()
    assert [e["file_id"] for e in entries] == sorted([kept, rekeyed, gone])
    by_id = {e.pop("file_id"): e for e in entries}
    for entry in by_id.values():
        assert dt.datetime.fromisoformat(entry.pop("marked_at")).replace(tzinfo=dt.UTC) == NOW
    key = {i: f"{i[:2]}/{i}.pdf" for i in (kept, rekeyed, gone)}
    common = {"run_id": "r1"}
    assert by_id == {
        kept: {
            "storage_key": key[kept], "row_storage_key": key[kept], "row_marked": True,
            "attempts": 2, "last_error": "Slow Down", **common,
        },
        rekeyed: {
            "storage_key": key[rekeyed], "row_storage_key": "new", "row_marked": True,
            "attempts": 0, "last_error": None, **common,
        },
        gone: {
            "storage_key": key[gone], "row_storage_key": None, "row_marked": None,
            "attempts": 0, "last_error": None, **common,
        },
    }  # fmt: skip
    assert catalog.pending_count() == 3


def test_release_makes_live_only_the_rows_whose_entries_it_dropped(world, catalog):
    catalog.ensure_own_tables()
    free = [world.add(age=(10 + i) * DAY) for i in range(4)]
    mark(catalog, free)
    held, lapsed = world.add(age=20 * DAY), world.add(age=21 * DAY)
    mark(catalog, [held, lapsed], run_id="r2", lease=dt.timedelta(minutes=5))
    with world.engine.begin() as conn:  # r2's lease on `lapsed` ran out a minute ago
        conn.execute(
            sa.update(catalog.pending)
            .where(catalog.pending.c.file_id == lapsed)
            .values(lease_until=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
        )
    unjournaled = world.add(age=30 * DAY, deleted=True)  # marked, but no entry
    assert catalog.release_pending([]) == []

    released = catalog.release_pending(
        [free[0], free[1], free[1], held, lapsed, unjournaled, "not-a-file"]
    )
    assert sorted(released) == sorted([free[0], free[1], lapsed])
    assert {i: world.is_deleted(i) for i in [*free, held, lapsed, unjournaled]} == {
        free[0]: False, free[1]: False, free[2]: True, free[3]: True,
        held: True, lapsed: False, unjournaled: True,
    }  # fmt: skip
    assert [e.file_id for e in world.pending()] == sorted([free[2], free[3], held])
    assert catalog.pending_count() == 3
    assert all(world.has_file(i) for i in [*free, held, lapsed])  # objects are not touched

    assert catalog.release_pending([free[0], free[2]]) == [free[2]]  # a second release
    assert not world.is_deleted(free[2]) and catalog.pending_count() == 2


def test_range_boundaries_are_every_kth_candidate_in_marking_order(world, catalog):
    catalog.ensure_own_tables()
    # Seven candidates, oldest first; two share a createdAt, so fileId orders them.
    ages = [40, 35, 30, 30, 20, 15, 10]
    ids = [world.add(age=age * DAY) for age in ages]
    walk = sorted(zip(ages, ids, strict=True), key=lambda a: (-a[0], a[1]))
    in_order = [i for _, i in walk]
    # Not candidates: too young, linked, already deleted, another type.
    world.add(age=6 * DAY)
    world.add(age=50 * DAY, linked=True)
    world.add(age=50 * DAY, deleted=True)
    world.add(age=50 * DAY, snapshot_type="order")

    def boundaries(every, most):
        return [file_id for _, file_id in catalog.range_boundaries(CUTOFF, every=every, most=most)]

    assert boundaries(3, 5) == [in_order[2], in_order[5]]
    assert boundaries(3, 1) == [in_order[2]]
    assert boundaries(2, 3) == [in_order[1], in_order[3], in_order[5]]
    assert boundaries(1, 10) == in_order
    assert boundaries(7, 5) == [in_order[6]]
    assert boundaries(8, 5) == []
    # Each boundary is a key the walk resumes after: the candidates after the first.
    first = catalog.range_boundaries(CUTOFF, every=3, most=1)[0]
    after = catalog.mark_batch(
        cutoff=CUTOFF, cursor=first, limit=100, run_id="r1", marked_at=NOW, dry_run=True
    )
    assert [c.file_id for c in after.marked] == in_order[3:]


def test_a_failed_runs_leases_are_free_at_once_and_no_other_runs(world, catalog):
    catalog.ensure_own_tables()
    failed = [world.add(age=(10 + i) * DAY) for i in range(2)]
    mark(catalog, failed, run_id="failed", lease=dt.timedelta(minutes=5))
    held = [world.add(age=20 * DAY)]
    mark(catalog, held, run_id="live", lease=dt.timedelta(minutes=5))
    free = [world.add(age=21 * DAY)]
    mark(catalog, free, run_id="unleased")

    catalog.release_leases("failed")

    # A third run gets the failed run's entries and the free one now, not the live run's.
    claimed, shared = catalog.claim_pending(
        run_id="next", now=dt.datetime.now(dt.UTC), lease=dt.timedelta(minutes=5)
    )
    assert sorted(e.file_id for e in claimed) == sorted(failed + free) and shared == []
    assert {e.file_id: e.claimed_by for e in world.pending()} == {
        failed[0]: "next", failed[1]: "next", free[0]: "next", held[0]: "live",
    }  # fmt: skip


def test_mark_batch_passes_each_bound_to_the_read_and_the_mark(world, catalog):
    catalog.ensure_own_tables()
    ids = [world.add(age=(20 - i) * DAY) for i in range(5)]  # oldest first
    catalog.start_run(
        run_id="r1", run_at=NOW, reference_time=NOW, cutoff=CUTOFF, dry_run=False,
        candidate_count=5,
    )  # fmt: skip

    def batch(**bounds):
        args = dict(cutoff=CUTOFF, cursor=None, limit=100, run_id="r1", marked_at=NOW)
        return catalog.mark_batch(**(args | bounds))

    rehearsal = batch(dry_run=True)
    assert [c.file_id for c in rehearsal.marked] == ids and world.live_rows() == 5
    assert world.pending() == []

    first = batch(limit=2)
    assert [c.file_id for c in first.marked] == ids[:2]

    # The 2nd candidate left is the upper bound; the store refuses the 1st one's key.
    upper = catalog.range_boundaries(CUTOFF, every=2, most=1)[0]
    refused_key = world.row(ids[2]).storageKey
    second = batch(
        cursor=first.cursor,
        upper=upper,
        refusals=lambda keys: {k: "test refusal" for k in keys if k == refused_key},
    )
    assert [c.file_id for c in second.marked] == [ids[3]]
    assert [(c.file_id, why) for c, why in second.refused] == [(ids[2], "test refusal")]
    assert [i for i in ids if world.is_deleted(i)] == [ids[0], ids[1], ids[3]]

    # A batch whose every key the store refuses marks nothing, and the walk goes on past it.
    refused = batch(cursor=second.cursor, refusals=lambda keys: dict.fromkeys(keys, "refused"))
    assert (refused.marked, refused.attached_meanwhile) == ([], [])
    assert [c.file_id for c, _ in refused.refused] == [ids[4]] and refused.cursor is not None
    assert not world.is_deleted(ids[4])


def test_rows_that_stop_being_candidates_after_the_read_are_not_marked(world, catalog):
    # The read takes no lock (the marking loop reads the next batch while it marks this
    # one), so lock_and_mark applies the whole rule again under its lock: a row made
    # permanent, re-dated or marked by another run since the read stays as it is now.
    catalog.ensure_own_tables()
    ids = [world.add(age=(20 - i) * DAY) for i in range(4)]
    catalog.start_run(
        run_id="r1", run_at=NOW, reference_time=NOW, cutoff=CUTOFF, dry_run=False,
        candidate_count=4,
    )  # fmt: skip
    read = catalog.read_batch(cutoff=CUTOFF, cursor=None, limit=10)
    assert sorted(c.file_id for c in read.passed.values()) == sorted(ids)
    files = world.files
    with world.engine.begin() as conn:
        for file_id, change in zip(
            ids[:3],
            [{"snapshotType": PERMANENT_TYPE}, {"createdAt": NOW - DAY}, {"deletedAt": NOW}],
            strict=True,
        ):
            conn.execute(sa.update(files).where(files.c.fileId == file_id).values(**change))

    batch = catalog.lock_and_mark(read, cutoff=CUTOFF, run_id="r1", marked_at=NOW)

    assert [c.file_id for c in batch.marked] == [ids[3]]
    assert [e.file_id for e in world.pending()] == [ids[3]]
    assert [world.is_deleted(i) for i in ids] == [False, False, True, True]


def test_closing_crashed_runs_closes_only_running_rows_and_frees_their_leases(world, catalog):
    catalog.ensure_own_tables()
    crashed = [world.add(age=(10 + i) * DAY) for i in range(2)]
    mark(catalog, crashed, run_id="crashed", lease=dt.timedelta(minutes=5))
    live = [world.add(age=20 * DAY)]
    mark(catalog, live, run_id="live", lease=dt.timedelta(minutes=5))
    mark(catalog, [], run_id="finished")
    catalog.finish_run("finished", status=SUCCEEDED, errors=[])
    reason = "the run ended without closing its log"

    catalog.close_crashed_runs([], reason)  # nothing to close: nothing changes
    catalog.close_crashed_runs(["crashed", "finished"], reason)

    runs = {r.run_id: r for r in world.run_log()}
    assert {i: (r.status, r.error_count) for i, r in runs.items()} == {
        "crashed": (CRASHED, 1), "live": (RUNNING, 0), "finished": (SUCCEEDED, 0),
    }  # fmt: skip
    assert json.loads(runs["crashed"].errors) == [reason]
    assert_just_now(runs["crashed"].finished_at)
    assert runs["live"].finished_at is None
    claimed, _ = catalog.claim_pending(
        run_id="next", now=dt.datetime.now(dt.UTC), lease=dt.timedelta(minutes=5)
    )
    assert sorted(e.file_id for e in claimed) == sorted(crashed)


def test_a_failed_run_is_closed_only_if_still_running_and_no_other_run(world, catalog):
    catalog.ensure_own_tables()
    for run_id in ("failed", "other", "finished"):
        mark(catalog, [], run_id=run_id)
    catalog.finish_run("finished", status=SUCCEEDED, errors=[])
    errors = [f"error {n}" for n in range(MAX_STORED_ERRORS + 1)]

    catalog.finish_run_if_running("failed", errors=errors)
    catalog.finish_run_if_running("finished", errors=["too late"])

    runs = {r.run_id: r for r in world.run_log()}
    assert {i: (r.status, r.error_count) for i, r in runs.items()} == {
        "failed": (FAILED, MAX_STORED_ERRORS + 1), "other": (RUNNING, 0),
        "finished": (SUCCEEDED, 0),
    }  # fmt: skip
    assert json.loads(runs["failed"].errors) == errors[:MAX_STORED_ERRORS]
    assert json.loads(runs["finished"].errors) == []
    assert_just_now(runs["failed"].finished_at)
    assert runs["other"].finished_at is None


def test_a_run_log_row_is_opened_once_with_the_first_calls_figures(world, catalog):
    catalog.ensure_own_tables()
    opened = {"run_at": NOW, "reference_time": NOW - DAY, "cutoff": CUTOFF, "dry_run": True}
    catalog.start_run(run_id="r", candidate_count=7, **opened)
    # A re-execution's later step opens the same run's row again: nothing changes.
    catalog.start_run(
        run_id="r", run_at=NOW + DAY, reference_time=NOW, cutoff=NOW, dry_run=False,
        candidate_count=9,
    )  # fmt: skip

    [row] = world.run_log()
    assert (row.run_id, row.status, row.candidate_count, bool(row.dry_run)) == (
        "r", RUNNING, 7, True,
    )  # fmt: skip
    assert [naive_utc(getattr(row, k)) for k in ("run_at", "reference_time", "cutoff")] == [
        naive_utc(opened[k]) for k in ("run_at", "reference_time", "cutoff")
    ]
    counters = ("marked_count", "deleted_count", "missing_count", "bytes_reclaimed")
    assert [getattr(row, k) for k in counters] == [0, 0, 0, 0]
    assert (row.error_count, row.finished_at) == (0, None)


def test_finishing_a_run_closes_its_row_and_returns_what_it_settled(world, catalog):
    catalog.ensure_own_tables()
    for run_id in ("dry", "other"):
        mark(catalog, [], run_id=run_id)
    # What settle transactions added while the run went on (settle_pending).
    with world.engine.begin() as conn:
        conn.execute(
            sa.update(catalog.runs)
            .where(catalog.runs.c.run_id == "dry")
            .values(deleted_count=3, missing_count=1, bytes_reclaimed=300)
        )

    figures = catalog.finish_run("dry", status=SUCCEEDED, errors=["one"], marked_count=5)

    assert figures == {
        "marked_count": 5, "deleted_count": 3, "missing_count": 1, "bytes_reclaimed": 300,
    }  # fmt: skip
    runs = {r.run_id: r for r in world.run_log()}
    dry, other = runs["dry"], runs["other"]
    assert (dry.status, dry.marked_count, dry.error_count) == (SUCCEEDED, 5, 1)
    assert json.loads(dry.errors) == ["one"]
    assert_just_now(dry.finished_at)
    assert (other.status, other.marked_count, other.finished_at) == (RUNNING, 0, None)


def test_a_settle_whose_connection_is_dropped_settles_on_a_new_one(pg_world, caplog):
    # The server terminates the settle's backend after its DELETE, before it adds the
    # counts to the run's row: that transaction rolls back, and the settle is made again
    # on a new connection, so the store's answer is neither lost nor counted twice.
    catalog = SnapshotDatabase(url=pg_world.db_url).open_catalog()
    admin = sa.create_engine(pg_world.engine.url, poolclass=sa.pool.NullPool)
    dropped: list[int] = []

    def drop_once(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE snapshot_ops.cleanup_runs") and not dropped:
            dropped.append(cursor.connection.get_backend_pid())
            with admin.connect() as other:
                other.execute(sa.select(sa.func.pg_terminate_backend(dropped[0], 5000)))

    try:
        catalog.ensure_own_tables()
        ids = sorted(pg_world.add(age=(10 + i) * DAY) for i in range(5))
        mark(catalog, ids, lease=dt.timedelta(minutes=5))
        sa.event.listen(catalog.engine, "before_cursor_execute", drop_once)
        # Two objects deleted, one already gone, one failed, one a live row names now.
        answer = {
            "deleted": {ids[0]: 100, ids[1]: 250}, "missing": [ids[2]],
            "failed": {ids[3]: (0, "refused")}, "shared": [ids[4]],
        }  # fmt: skip
        with caplog.at_level(logging.WARNING, logger="snapshot_ops.db.journal"):
            settled = catalog.settle_pending(run_id="r1", now=NOW, **answer)
        again = catalog.settle_pending(run_id="r1", now=NOW, **answer)
    finally:
        catalog.engine.dispose()
        admin.dispose()

    assert len(dropped) == 1
    assert (settled.deleted, settled.missing, settled.bytes_reclaimed) == (2, 1, 350)
    assert settled.file_ids == {ids[0], ids[1], ids[2], ids[4]}
    assert (again.deleted, again.missing, again.bytes_reclaimed) == (0, 0, 0)
    [failed] = pg_world.pending()  # released once, with one failed attempt
    assert (failed.file_id, failed.attempts, failed.claimed_by) == (ids[3], 1, None)
    [run] = pg_world.run_log()
    # deletedCount counts what was removed; the one already gone is counted apart.
    assert (run.deleted_count, run.missing_count, run.bytes_reclaimed) == (2, 1, 350)
    [warning] = caplog.records
    assert warning.getMessage().startswith(
        "the database dropped the connection while run r1 settled 5 journal entries; "
        "settling them again on a new connection: "
    )
    assert re.search("terminat|closed the connection", warning.getMessage().partition(": ")[2])


def test_a_settle_that_fails_otherwise_is_not_tried_again(world, catalog):
    # The run's row is gone (its table dropped): the UPDATE fails on a live connection.
    catalog.ensure_own_tables()
    ids = [world.add(age=10 * DAY)]
    mark(catalog, ids, lease=dt.timedelta(minutes=5))
    catalog.runs.drop(world.engine)
    tries: list[str] = []
    sa.event.listen(
        catalog.engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, *_: tries.append(statement.split()[0]),
    )
    with pytest.raises(sa.exc.DBAPIError, match="cleanup_runs"):
        catalog.settle_pending(run_id="r1", now=NOW, deleted={ids[0]: 100}, missing=[], failed={})
    assert tries.count("DELETE") == 1
    assert [e.file_id for e in world.pending()] == ids  # rolled back: still journaled


def test_running_runs_are_those_still_running_besides_the_asking_one(world, catalog):
    catalog.ensure_own_tables()
    for run_id in ("asking", "crashed", "finished"):
        mark(catalog, [], run_id=run_id)
    catalog.finish_run("finished", status=SUCCEEDED, errors=[])

    assert catalog.running_runs(besides="asking") == ["crashed"]
    assert sorted(catalog.running_runs(besides="finished")) == ["asking", "crashed"]


def test_stale_entries_are_released_in_pages_and_each_is_logged(world, catalog, caplog):
    from snapshot_ops.cleanup import release_stale

    catalog.ensure_own_tables()
    stale = [world.add(age=(10 + i) * DAY) for i in range(5)]
    kept = world.add(age=30 * DAY)
    mark(catalog, [*stale, kept])
    old_key = {i: world.row(i).storageKey for i in stale}
    with world.engine.begin() as conn:  # the application points each row at a new object
        for file_id in stale:
            conn.execute(
                sa.update(world.files)
                .where(world.files.c.fileId == file_id)
                .values(storageKey=f"fixed/{file_id}.pdf")
            )
    limits: list[int] = []
    stale_pending = catalog.stale_pending

    def paged(*, limit):
        limits.append(limit)
        return stale_pending(limit=limit)

    catalog.stale_pending = paged
    with caplog.at_level(logging.INFO, logger="snapshot_ops.cleanup"):
        report = release_stale(catalog, batch_size=2)

    assert sorted(report.released) == sorted(stale) and limits == [2, 2, 2]
    assert not any(world.is_deleted(i) for i in stale) and world.is_deleted(kept)
    assert [e.file_id for e in world.pending()] == [kept]
    logged = [r.getMessage() for r in caplog.records if r.name == "snapshot_ops.cleanup"]
    for file_id in stale:
        assert f"released {file_id}: its row no longer names {old_key[file_id]!r}" in logged
    assert len(logged) == len(stale)


def test_entries_backing_off_are_listed_in_file_id_order_until_their_time(world, catalog):
    # Marked (and journaled) in "createdAt" order, which is not their file_id order here.
    ids = sorted(world.add(age=(10 + i) * DAY) for i in range(3))
    catalog.ensure_own_tables()
    mark(catalog, ids)
    now = dt.datetime.now(dt.UTC)
    waits = {ids[0]: dt.timedelta(hours=2), ids[1]: dt.timedelta(0), ids[2]: DAY}  # 0: due now
    p = catalog.pending  # the job's own table object: times stored in its format
    with world.engine.begin() as conn:  # last file_id first: stored out of file_id order
        for file_id, wait in reversed(waits.items()):
            conn.execute(
                sa.update(p)
                .where(p.c.file_id == file_id)
                .values(attempts=2, last_error="Slow Down", next_attempt_at=now + wait)
            )
    backed_off = catalog.backed_off(now)
    assert [(b.file_id, b.attempts, b.last_error) for b in backed_off] == [
        (ids[0], 2, "Slow Down"), (ids[2], 2, "Slow Down"),
    ]  # fmt: skip


def test_the_plans_figures_count_candidates_their_sizes_and_the_linked_rows_kept(world, catalog):
    # Known bytes sum the sizes above 0; a NULL or negative size is unknown, and 0 is a
    # known size that adds nothing. Linked, young, already marked and permanent rows are no
    # candidates; of the linked ones, only the expired parse session's counts as kept.
    for size in (0, None, -5, 7, 100):
        world.add(age=8 * DAY, size=size)
    world.add(age=8 * DAY, size=1000, linked=True)
    world.add(age=6 * DAY, size=1000)
    world.add(age=6 * DAY, size=1000, linked=True)
    world.add(age=8 * DAY, size=1000, deleted=True)
    world.add(age=8 * DAY, size=1000, snapshot_type=PERMANENT_TYPE)
    world.add(age=8 * DAY, size=1000, snapshot_type=PERMANENT_TYPE, linked=True)

    assert catalog.summarize(CUTOFF) == CandidateSummary(
        candidates=5, known_bytes=107, unknown_size=2, kept_linked=1
    )
    # With no candidate, every figure is 0 (no sum of nothing).
    assert catalog.summarize(CUTOFF - 30 * DAY) == CandidateSummary(0, 0, 0, 0)


def test_undated_rows_are_counted_only_where_a_dated_one_would_be_a_candidate(nullable_world):
    # Live, unlinked parse-session snapshots without "createdAt": no run can expire them,
    # so they are counted and reported. Linked, already marked, permanent or dated rows
    # are not.
    world = nullable_world
    counted = [world.add(age=8 * DAY) for _ in range(2)]
    others = [
        world.add(age=8 * DAY, linked=True),
        world.add(age=8 * DAY, deleted=True),
        world.add(age=8 * DAY, snapshot_type=PERMANENT_TYPE),
    ]
    world.add(age=8 * DAY)
    with world.engine.begin() as conn:
        conn.execute(
            sa.update(world.files)
            .where(world.files.c.fileId.in_([*counted, *others]))
            .values(createdAt=None)
        )

    catalog = SnapshotDatabase(url=world.db_url).open_catalog()
    try:
        assert catalog.count_undated() == 2
    finally:
        catalog.engine.dispose()
