"""Two cleanup runs at once (a manual run during the scheduled one) split the work safely.

Both runs are real `dagster job execute` processes against PostgreSQL. Each is held at its
`after_select` checkpoint until both have counted the same candidates, then both are
released together, so their marking and deleting overlap. Afterwards every candidate is
deleted exactly once: the two runs' `deletedCount`s add up to the number of candidates, no
run found an object already gone (which is what deleting twice looks like), both runs
succeeded (no deadlock), and nothing is left pending.

The second test makes them compete for the very same rows: 1,500 entries are already in the
journal when both runs are released, so both sweep it at once; the journal's leases must
give each entry to exactly one of them.
"""

from __future__ import annotations

import sqlalchemy as sa

from snapshot_ops.defs.resources import SnapshotDatabase
from snapshot_ops_tests.support.scenarios import bulk_add, start_job, state, wait_paused
from snapshot_ops_tests.support.world import NOW

CANDIDATES = 1500


def run_two_at_once(world, tmp_path) -> None:
    """Start two `dagster job execute` runs, hold both at `after_select` until both have
    counted the same candidates, release them together and wait; both must succeed."""
    runs = []
    for name in ("scheduled", "manual"):
        gate = tmp_path / f"gate-{name}"
        gate.mkdir()
        process = start_job(
            world,
            tmp_path / name,
            batch_size=25,
            SNAPSHOT_OPS_CRASH_AT="after_select",
            SNAPSHOT_OPS_CRASH_ACTION=f"pause:{gate}",
        )
        runs.append((process, gate))
    for process, gate in runs:
        wait_paused(gate, process)
    for _, gate in runs:
        (gate / "paused").unlink()  # both go on from the same starting point
    outputs = [process.communicate(timeout=300)[0] for process, _ in runs]
    assert [p.returncode for p, _ in runs] == [0, 0], "\n".join(o[-3000:] for o in outputs)


def test_two_runs_at_once_never_delete_or_count_twice(pg_world, tmp_path):
    expired = bulk_add(pg_world, CANDIDATES)
    kept = bulk_add(pg_world, 50, linked=True, label="linked")
    run_two_at_once(pg_world, tmp_path)

    now = state(pg_world)
    assert all(now[i] == (True, False) for i in expired)
    assert all(now[i] == (False, True) for i in kept)
    logs = pg_world.run_log()
    assert [log.status for log in logs] == ["succeeded", "succeeded"]
    assert [log.candidate_count for log in logs] == [CANDIDATES, CANDIDATES]
    split = [(log.marked_count, log.deleted_count, log.missing_count) for log in logs]
    assert sum(log.deleted_count for log in logs) == CANDIDATES, split
    assert sum(log.marked_count for log in logs) == CANDIDATES
    assert sum(log.missing_count for log in logs) == 0
    assert sum(log.bytes_reclaimed for log in logs) == 100 * CANDIDATES
    assert pg_world.pending() == []


def test_two_runs_compete_for_the_same_journal_entries(pg_world, tmp_path):
    # 1,500 rows marked deleted and journaled with their objects still present, as a killed
    # run leaves them: both runs' finish_pending_deletes sweep the same entries at once.
    ids = bulk_add(pg_world, CANDIDATES)
    catalog = SnapshotDatabase(url=pg_world.db_url).open_catalog()
    try:
        catalog.ensure_own_tables()
        with pg_world.engine.begin() as conn:
            conn.execute(
                sa.update(pg_world.files)
                .where(pg_world.files.c.fileId.in_(ids))
                .values(deletedAt=NOW)
            )
            conn.execute(
                sa.insert(catalog.pending),
                [
                    {"file_id": r.fileId, "storage_key": r.storageKey, "size_bytes": 100,
                     "run_id": "killed", "marked_at": NOW}
                    for r in conn.execute(
                        sa.select(pg_world.files).where(pg_world.files.c.fileId.in_(ids))
                    )
                ],
            )  # fmt: skip
    finally:
        catalog.engine.dispose()
    run_two_at_once(pg_world, tmp_path)

    assert all(state(pg_world)[i] == (True, False) for i in ids)
    logs = pg_world.run_log()
    split = [(log.deleted_count, log.missing_count) for log in logs]
    # Each object deleted and counted by exactly one run; one found missing was deleted
    # by the other run too.
    assert sum(log.deleted_count for log in logs) == CANDIDATES, split
    assert sum(log.missing_count for log in logs) == 0, split
    assert sum(log.bytes_reclaimed for log in logs) == 100 * CANDIDATES
    assert pg_world.pending() == []
