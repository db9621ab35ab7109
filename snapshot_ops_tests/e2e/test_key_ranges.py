"""A run split into key ranges, in process: each range marks exactly its own candidates.

`ranges` splits the candidates into contiguous ranges of the keyset order ("createdAt",
"fileId"), each marked and deleted by its own `mark_and_delete_expired[range_N]` step.
These tests pin down that the ranges cover every candidate once (each range's count is its
own, a dry run's total is the candidates', not more), that max_deletions holds for the run
as a whole when candidates appear after the split, that the default is one range, and that
an in-process run connects to the database and opens the store once, not once per step.
Runs on other executors are in test_distributed_executors.py; a range killed and
re-executed is in test_reexecution.py.
"""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from snapshot_ops import checkpoints, db
from snapshot_ops.defs import resources
from snapshot_ops.planning import share_deletions
from snapshot_ops.settings import MAX_RANGES, cleanup_ranges
from snapshot_ops_tests.support.scenarios import DAY, bulk_add, state, wait_paused

pytestmark = pytest.mark.e2e

MARKING = "mark_and_delete_expired"


def range_outputs(result) -> dict[str, dict]:
    """Step key -> output metadata of each marking step of the run."""
    return {
        e.step_key: {k: v.value for k, v in e.step_output_data.metadata.items()}
        for e in result.events_for_node(MARKING)
        if e.event_type_value == "STEP_OUTPUT"
    }


def test_each_range_marks_exactly_its_own_candidates(world):
    expired = bulk_add(world, 10)
    linked = bulk_add(world, 3, linked=True, label="linked")
    fresh = bulk_add(world, 2, age=3 * DAY, label="fresh")

    result = world.run(ranges=3, batch_size=3)

    assert result.success
    outputs = range_outputs(result)
    # 10 candidates, every 4th a boundary: 4 + 4 + 2, each range its own.
    assert {k: v["marked"] for k, v in outputs.items()} == {
        f"{MARKING}[range_0]": 4,
        f"{MARKING}[range_1]": 4,
        f"{MARKING}[range_2]": 2,
    }
    assert sum(v["deleted"] for v in outputs.values()) == 10
    now = state(world)
    assert all(now[i] == (True, False) for i in expired)
    assert all(now[i] == (False, True) for i in linked + fresh)
    [log] = world.run_log()
    assert (log.status, log.deleted_count, log.marked_count) == ("succeeded", 10, 10)
    assert world.pending() == []


def test_a_dry_run_over_ranges_counts_each_candidate_once(world):
    bulk_add(world, 10)

    result = world.run(ranges=4, batch_size=2, dry_run=True)

    assert result.success
    # 10 candidates, every 3rd a boundary: 3 + 3 + 3 + 1.
    assert [v["marked"] for _, v in sorted(range_outputs(result).items())] == [3, 3, 3, 1]
    [record] = [
        e
        for e in result.events_for_node("record_cleanup_run")
        if e.event_type_value == "STEP_OUTPUT"
    ]
    assert record.step_output_data.metadata["deletedCount"].value == 0
    assert result.output_for_node("record_cleanup_run")["wouldDelete"] == 10
    assert world.live_rows() == 10


def test_default_is_one_range_over_every_key(world, monkeypatch):
    monkeypatch.delenv("SNAPSHOT_OPS_RANGES", raising=False)
    bulk_add(world, 5)

    result = world.run(batch_size=2)

    assert result.success
    assert {k: v["marked"] for k, v in range_outputs(result).items()} == {f"{MARKING}[range_0]": 5}


def test_more_ranges_than_candidates_makes_fewer_ranges(world):
    bulk_add(world, 2)

    result = world.run(ranges=5)

    assert result.success
    assert sorted(v["marked"] for v in range_outputs(result).values()) == [1, 1]


def test_max_deletions_holds_across_ranges_when_candidates_appear(world, tmp_path, monkeypatch):
    """Counted 9 candidates at max_deletions 9; 6 more become candidates (their order links
    are removed) before the ranges mark. The run marks 9 in all, not 9 per range."""
    bulk_add(world, 9, label="a")
    later = bulk_add(world, 6, linked=True, label="b")
    gate = tmp_path / "gate"
    gate.mkdir()
    monkeypatch.setenv(checkpoints.CRASH_AT, "after_select")
    monkeypatch.setenv(checkpoints.CRASH_ACTION, f"pause:{gate}")
    checkpoints.reset()
    outcome: list = []
    run = threading.Thread(
        target=lambda: outcome.append(world.run(ranges=3, batch_size=2, max_deletions=9))
    )
    run.start()
    try:
        wait_paused(gate)
        with world.engine.begin() as conn:
            conn.execute(sa.delete(world.attachments).where(world.attachments.c.fileId.in_(later)))
    finally:
        (gate / "paused").unlink(missing_ok=True)
        run.join(timeout=120)
        checkpoints.reset()

    [result] = outcome
    assert result.success
    [log] = world.run_log()
    assert (log.marked_count, log.deleted_count) == (9, 9)
    assert world.live_rows() == 6
    assert sum(v["marked"] for v in range_outputs(result).values()) == 9


def test_an_in_process_run_opens_the_database_and_the_store_once(world, monkeypatch):
    engines: list[object] = []
    backends: list[object] = []
    make_engine, open_storage = db.make_engine, resources.open_storage

    def counted_engine(url: str):
        engines.append(url)
        return make_engine(url)

    def counted_storage(*args, **kwargs):
        backends.append(args)
        return open_storage(*args, **kwargs)

    monkeypatch.setattr(resources, "make_engine", counted_engine)
    monkeypatch.setattr(resources, "open_storage", counted_storage)
    bulk_add(world, 6)

    assert world.run(ranges=2, batch_size=2).success

    assert (len(engines), len(backends)) == (1, 1)
    assert world.live_rows() == 0


@pytest.mark.unit
def test_the_shares_of_max_deletions_add_up_to_it():
    assert share_deletions(100, [4, 4, 2]) == [34, 34, 32]
    assert share_deletions(10, [4, 4, 2]) == [4, 4, 2]
    assert share_deletions(11, [4, 4, 2]) == [4, 4, 3]
    assert share_deletions(7, [4, 4, 2]) == [4, 3, 0]  # counts past the cap
    assert share_deletions(5, [0]) == [5]


@pytest.mark.unit
def test_ranges_setting(monkeypatch):
    monkeypatch.delenv("SNAPSHOT_OPS_RANGES", raising=False)
    assert cleanup_ranges() == 1
    monkeypatch.setenv("SNAPSHOT_OPS_RANGES", "4")
    assert cleanup_ranges() == 4
    assert cleanup_ranges(2) == 2  # the run config wins
    for bad in ("0", "four", str(MAX_RANGES + 1)):
        monkeypatch.setenv("SNAPSHOT_OPS_RANGES", bad)
        with pytest.raises(Exception, match="SNAPSHOT_OPS_RANGES"):
            cleanup_ranges()
