"""The evidence behind "already missing" (snapshot_ops.sentinel, preflight's storage check),
on a real database and a real folder store.

- `search` looks keys up one at a time and stops at the first object that exists; a later
  group of keys is not even read while an earlier one found an object.
- `gather`: an object older than the retention proves the store (a candidate's, a linked
  file's, a journaled one's; a journaled object younger than that is not looked at);
  otherwise a sample of younger live rows' objects, one per span of the retention, must
  have at least 3 and two thirds of its objects there. Objects written since the store
  went away (the newest rows') do not make that on their own.
- A `Sentinel` asked about missing objects costs one lookup while its object is there; when
  it is gone, the evidence is gathered again by the same rule; when it does not hold, the
  sentinel says why (the store, the object it saw, the switch), unless the run accepts
  missing objects, or no live row names another object and the same batch just deleted
  some. The journal sweep is judged the same way.
- A batch deleted while the store is gone settles what it really deleted and keeps the
  rest journaled, with the reason, for the next run.
- The start-of-run check: a healthy store costs one lookup; candidates' objects removed by
  hand are not a stop while the evidence holds; journaled objects alone, with no live row
  to vouch for the store, are not a stop either (the sentinel judges the sweep).
- In every representation of "createdAt", the witness reads tell old linked files from
  young ones and sample the oldest row of each span of the retention.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest

from snapshot_ops import preflight
from snapshot_ops.cleanup import delete_marked, finish_pending
from snapshot_ops.db import Catalog, PendingDelete, make_engine
from snapshot_ops.sentinel import STRATA, Sentinel, StorageMismatch, Window, gather, search
from snapshot_ops.storage.filesystem import FilesystemBackend
from snapshot_ops_tests.support.scenarios import bulk_add
from snapshot_ops_tests.support.time_representations import (
    REPRESENTATIONS,
    RepWorld,
    set_database_timezone,
)
from snapshot_ops_tests.support.world import NOW

pytestmark = pytest.mark.integration

DAY = dt.timedelta(days=1)
CUTOFF = NOW - 7 * DAY
WINDOW = Window(CUTOFF, NOW)
#: The span of the retention each sampled row stands for.
SPAN = 7 * DAY / STRATA


class CountingFolder(FilesystemBackend):
    """The real folder backend, counting the keys it is asked to look up."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.looked_up: list[str] = []

    def sizes(self, keys: Sequence[str]) -> dict[str, int | None]:
        self.looked_up.extend(keys)
        return super().sizes(keys)


@pytest.fixture
def parts(world):
    catalog = Catalog(make_engine(world.db_url))
    catalog.ensure_own_tables()
    storage = CountingFolder(str(world.root))
    yield world, catalog, storage
    storage.close()
    catalog.engine.dispose()


def remove(world, file_ids) -> None:
    for file_id in file_ids:
        (world.root / world.row(file_id).storageKey).unlink()


def key(world, file_id: str) -> str:
    return world.row(file_id).storageKey


def across_the_retention(world, count: int = STRATA) -> list[str]:
    """One young live snapshot in each of the `count` newest spans of the retention,
    oldest first."""
    return [world.add(age=(STRATA - n - 0.5) * SPAN) for n in range(STRATA - count, STRATA)]


def test_search_stops_at_the_first_object_and_reads_no_later_group(parts):
    world, _, storage = parts
    gone, there = bulk_add(world, 2, label="gone"), bulk_add(world, 1, label="there")
    remove(world, gone)
    read: list[str] = []

    def later() -> list[str]:
        read.append("later")
        return ["never/looked.pdf"]

    found = search(
        storage,
        [
            ("first", lambda: [key(world, i) for i in gone]),
            ("second", lambda: [key(world, gone[0]), key(world, there[0])]),
            ("third", later),
        ],
    )

    assert found.found == key(world, there[0])
    # The repeated key is looked up once; the third group is never read.
    assert storage.looked_up == [key(world, gone[0]), key(world, gone[1]), key(world, there[0])]
    assert found.lookups == 3 and read == []
    assert "2 first (" in found.describe() and "1 second (" in found.describe()


def test_a_sentinel_that_is_there_costs_one_lookup_and_none_without_missing(parts):
    world, catalog, storage = parts
    [witness] = bulk_add(world, 1, age=DAY, label="young")
    sentinel = Sentinel(catalog, storage, key(world, witness), window=WINDOW)

    assert sentinel.doubt([]) is None
    assert storage.looked_up == []
    assert sentinel.doubt(["a.pdf", "b.pdf"]) is None
    assert storage.looked_up == [key(world, witness)]


def test_a_gone_sentinel_is_replaced_by_another_live_rows_object(parts):
    world, catalog, storage = parts
    seen, other = bulk_add(world, 1, age=DAY, label="seen"), bulk_add(world, 1, linked=True)
    remove(world, seen)
    sentinel = Sentinel(catalog, storage, key(world, seen[0]), window=WINDOW)

    assert sentinel.doubt(["x.pdf"]) is None
    assert sentinel.key == key(world, other[0])


def test_a_store_holding_nothing_is_a_doubt_naming_the_store_and_the_sentinel(parts):
    world, catalog, storage = parts
    rows = bulk_add(world, 2, age=DAY, label="young") + bulk_add(world, 2, linked=True)
    seen = key(world, rows[0])
    remove(world, rows)
    missing = ["m/1.pdf", "m/2.pdf", "m/3.pdf"]

    doubt = Sentinel(catalog, storage, seen, window=WINDOW).doubt(missing)

    assert isinstance(doubt, StorageMismatch)
    message = str(doubt)
    assert message.startswith(f"3 objects came back already missing from {storage.description}")
    assert f"no longer holds {seen!r}" in message
    assert "2 files orders link, older than the retention" in message
    assert "of 1 objects of younger live rows" in message and "0 exist" in message
    assert "accept_missing_objects: true" in message
    # The missing keys themselves are not looked up again.
    assert not set(missing) & set(storage.looked_up)


def test_a_batch_that_deleted_objects_vouches_only_when_no_live_row_names_another(parts):
    world, catalog, storage = parts
    # No live row: the batch's own deletes are the only evidence that the store is there.
    assert Sentinel(catalog, storage, window=WINDOW).doubt(["x.pdf"], deleted_now=2) is None
    assert isinstance(Sentinel(catalog, storage, window=WINDOW).doubt(["x.pdf"]), StorageMismatch)
    # Live rows whose objects are gone too: a store that went away in the middle of the
    # batch (what it deleted came first), so its deletes vouch for nothing.
    rows = bulk_add(world, 2, age=DAY, label="young")
    remove(world, rows)
    assert isinstance(
        Sentinel(catalog, storage, window=WINDOW).doubt(["x.pdf"], deleted_now=2), StorageMismatch
    )


def test_accepting_missing_objects_looks_nothing_up(parts):
    world, catalog, storage = parts
    assert Sentinel(catalog, storage, None, accept_missing=True).doubt(["x.pdf"]) is None
    assert storage.looked_up == []


def test_a_batch_deleted_while_the_store_is_gone_keeps_the_missing_journaled(parts):
    world, catalog, storage = parts
    batch_ids = bulk_add(world, 4, label="expired")
    witnesses = bulk_add(world, 2, age=DAY, label="young")
    [linked] = bulk_add(world, 1, linked=True, label="linked")  # older than the retention
    catalog.start_run(
        run_id="r", run_at=NOW, reference_time=NOW, cutoff=CUTOFF, dry_run=False,
        candidate_count=4,
    )  # fmt: skip
    marked = catalog.mark_batch(
        cutoff=CUTOFF, cursor=None, limit=10, run_id="r", marked_at=NOW,
        lease=dt.timedelta(minutes=5),
    )  # fmt: skip
    entries = [PendingDelete(c.file_id, c.storage_key, c.size_bytes, 0) for c in marked.marked]
    sentinel = Sentinel(catalog, storage, key(world, witnesses[0]), window=WINDOW)
    # Two objects are still there; the rest of the store is gone.
    remove(world, batch_ids[:2] + witnesses + [linked])

    with pytest.raises(StorageMismatch, match="2 objects came back already missing"):
        delete_marked(catalog, storage, entries, run_id="r", sentinel=sentinel)

    [log] = world.run_log()
    assert (log.deleted_count, log.missing_count, log.bytes_reclaimed) == (2, 0, 200)
    kept = {p.file_id: p for p in world.pending()}
    assert set(kept) == set(batch_ids[:2])
    assert all(p.attempts == 1 and p.claimed_by is None for p in kept.values())
    assert all(p.last_error.startswith("not found, not settled: 2 objects") for p in kept.values())
    assert all(world.is_deleted(i) for i in batch_ids)

    # An object older than the retention is back: the next sweep settles the two as
    # already missing.
    (world.root / key(world, linked)).write_bytes(b"x")
    report = finish_pending(
        catalog,
        storage,
        run_id="r",
        lease=dt.timedelta(minutes=5),
        batch_size=10,
        sentinel=Sentinel(catalog, storage, window=WINDOW),
    )
    assert (report.removed, report.missing) == (0, 2) and world.pending() == []


def test_the_start_of_run_check_costs_one_lookup_on_a_healthy_store(parts):
    world, catalog, storage = parts
    bulk_add(world, 30, label="expired")
    check = preflight.check_storage_holds_objects(catalog, storage, WINDOW, accept_missing=False)
    assert check.lookups == 1 and storage.looked_up == [check.sentinel]


def test_candidates_removed_by_hand_are_no_stop_while_the_sample_holds(parts):
    world, catalog, storage = parts
    removed = bulk_add(world, 25, label="removed")
    young = across_the_retention(world)
    remove(world, removed)
    check = preflight.check_storage_holds_objects(catalog, storage, WINDOW, accept_missing=False)
    # The oldest young row's object is the sentinel; every sampled object was looked up.
    assert check.sentinel == key(world, young[0])
    assert check.lookups == 20 + STRATA
    assert check.basis == f"{STRATA} of {STRATA} " + (
        "objects of younger live rows, sampled across the retention exist"
    )
    assert not check.accepted_missing


def test_one_young_object_is_too_few_to_vouch_for_the_store(parts):
    world, catalog, storage = parts
    removed = bulk_add(world, 25, label="removed")
    [young] = bulk_add(world, 1, age=DAY, label="young")
    remove(world, removed)
    with pytest.raises(StorageMismatch, match=r"of 1 objects of younger live rows.* 1 exists"):
        preflight.check_storage_holds_objects(catalog, storage, WINDOW, accept_missing=False)
    assert world.row(young).deletedAt is None


@pytest.mark.parametrize(
    ("removed", "holds"),
    [(0, True), (2, True), (3, True), (4, False), (7, False), (9, False)],
)
def test_a_sample_holds_while_two_thirds_of_it_is_there(parts, removed, holds):
    # 10 spans sampled: up to 3 objects removed by hand leave 7 of 10 (at least two thirds).
    world, catalog, storage = parts
    young = across_the_retention(world)
    remove(world, young[1 : 1 + removed])
    evidence = gather(catalog, storage, WINDOW)
    assert len(evidence.sample) == STRATA and len(evidence.present) == STRATA - removed
    assert evidence.holds is holds
    assert evidence.sentinel == (key(world, young[0]) if holds else None)


@pytest.mark.parametrize(("present", "holds"), [(2, False), (3, True)])
def test_a_sample_needs_three_objects_there(parts, present, holds):
    world, catalog, storage = parts
    across_the_retention(world, present)
    assert gather(catalog, storage, WINDOW).holds is holds


def test_objects_written_since_the_store_went_away_do_not_vouch_for_it(parts):
    # The store is gone; the application wrote the newest rows' objects into the bare
    # mount point: the three newest spans' objects exist, the seven older ones do not.
    world, catalog, storage = parts
    old = bulk_add(world, 3, label="expired") + bulk_add(world, 2, linked=True, label="linked")
    young = across_the_retention(world)
    remove(world, old + young[:7])

    evidence = gather(catalog, storage, WINDOW)

    assert not evidence.holds and evidence.sentinel is None
    assert evidence.present == tuple(key(world, i) for i in young[7:])
    with pytest.raises(StorageMismatch, match="3 exist, where at least 3, and two thirds"):
        preflight.check_storage_holds_objects(catalog, storage, WINDOW, accept_missing=False)
    # Mid-run, the same rule: a sentinel gone is not replaced by the newest objects.
    doubt = Sentinel(catalog, storage, key(world, old[0]), window=WINDOW).doubt(["m/1.pdf"])
    assert isinstance(doubt, StorageMismatch)
    assert f"no longer holds {key(world, old[0])!r}" in str(doubt)


def test_an_old_linked_or_journaled_object_proves_the_store(parts):
    world, catalog, storage = parts
    removed = bulk_add(world, 3, label="removed")
    [linked] = bulk_add(world, 1, linked=True, label="linked")  # 10 days old
    remove(world, removed)
    evidence = gather(catalog, storage, WINDOW)
    assert evidence.sentinel == key(world, linked) and evidence.sample == ()
    assert evidence.lookups == 4

    # Journaled objects: only those of rows older than the retention are looked at.
    remove(world, [linked])
    [marked] = bulk_add(world, 1, age=DAY, label="marked")
    catalog.mark_batch(
        cutoff=NOW, cursor=None, limit=10, run_id="short", marked_at=NOW
    )  # a run with a retention of 0 marked everything unlinked, young ones too
    young = gather(catalog, storage, WINDOW)
    assert young.proof.found is None and key(world, marked) not in young.proof.looked.get(
        "journaled objects older than the retention", []
    )
    (world.root / key(world, removed[0])).write_bytes(b"x")  # an old journaled object
    assert gather(catalog, storage, WINDOW).sentinel == key(world, removed[0])


def test_the_journal_sweep_is_not_settled_on_the_newest_objects_alone(parts):
    world, catalog, storage = parts
    ids = bulk_add(world, 3, label="expired")
    catalog.mark_batch(cutoff=CUTOFF, cursor=None, limit=10, run_id="old", marked_at=NOW)
    young = across_the_retention(world)
    remove(world, ids + young[:7])
    with pytest.raises(StorageMismatch, match="3 objects came back already missing"):
        finish_pending(
            catalog,
            storage,
            run_id="r",
            lease=dt.timedelta(minutes=5),
            batch_size=10,
            sentinel=Sentinel(catalog, storage, window=WINDOW),
        )
    assert len(world.pending()) == 3


def test_journaled_objects_alone_are_no_stop(parts):
    # A run killed after its deletes leaves entries whose objects are gone; with no live
    # row, nothing tells that from a store that is not there: the sweep's sentinel judges.
    world, catalog, storage = parts
    ids = bulk_add(world, 3, label="expired")
    catalog.mark_batch(cutoff=CUTOFF, cursor=None, limit=10, run_id="old", marked_at=NOW)
    remove(world, ids)
    check = preflight.check_storage_holds_objects(catalog, storage, WINDOW, accept_missing=False)
    assert (check.sentinel, check.lookups) == (None, 3)
    with pytest.raises(StorageMismatch):
        finish_pending(catalog, storage, run_id="r", lease=dt.timedelta(minutes=5), batch_size=10)
    assert len(world.pending()) == 3


def test_nothing_to_settle_looks_nothing_up(parts):
    world, catalog, storage = parts
    bulk_add(world, 3, age=DAY, label="young")
    check = preflight.check_storage_holds_objects(catalog, storage, WINDOW, accept_missing=False)
    assert (check.sentinel, check.lookups) == (None, 0) and storage.looked_up == []


@pytest.mark.parametrize("rep", REPRESENTATIONS, ids=str)
def test_the_witness_reads_place_rows_by_age_in_every_time_representation(
    request, storage_root, rep
):
    url = request.getfixturevalue(f"{rep.dialect}_url")
    if rep.dialect == "postgres":
        set_database_timezone(url, rep.database_zone)
    world = RepWorld(url, storage_root, rep)
    catalog = Catalog(make_engine(url), naive_time_zone=rep.naive_time_zone)
    try:
        old = world.add(age=8 * DAY, linked=True)
        young_linked = world.add(age=DAY, linked=True)
        # Two rows in the third tenth of the retention, one in the last; none elsewhere.
        spans = [world.add(age=(STRATA - 2.5) * SPAN), world.add(age=(STRATA - 2.2) * SPAN)]
        newest = world.add(age=dt.timedelta(minutes=5))

        assert dict(catalog.linked_keys(CUTOFF, 5)) == {
            key(world, old): True,
            key(world, young_linked): False,
        }
        sampled = catalog.sampled_keys(WINDOW.strata(STRATA))
        # One row per span, the oldest of each; the young linked row is sampled in its own.
        assert sampled == [key(world, spans[1]), key(world, young_linked), key(world, newest)]
    finally:
        catalog.engine.dispose()
        world.engine.dispose()
