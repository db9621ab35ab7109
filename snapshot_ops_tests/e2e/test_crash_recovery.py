"""A run killed with SIGKILL at any step loses nothing, and the next run finishes its work.

Each case starts `dagster job execute` as a real process against PostgreSQL and has it kill
itself (SIGKILL, as a power cut or the OOM killer would) at one checkpoint of
snapshot_ops.checkpoints: after selecting, between marking batches, between marking and
deleting, after the store deleted a batch but before the journal was settled, after a
settled batch, and before the run log is written; and three kills at random instants,
which also land inside transactions. Then an ordinary run follows, in the same Dagster
instance once the killed run is reported failed there (as run monitoring does).

Afterwards the rows and files are exactly those of an uninterrupted run (checked against
the same expectation in the first test): no live row whose file is gone, no marked row
whose file stays, nothing pending; the recovering run counts exactly what it finished, the
killed run's log row is closed as crashed with what it settled, and together they count
every object once.
"""

from __future__ import annotations

import random
import signal
import time

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance

from snapshot_ops.rules import PERMANENT_TYPE
from snapshot_ops_tests.support.scenarios import DAY, bulk_add, start_job, state
from snapshot_ops_tests.support.waiting import wait_until

BATCH = 10


def build(world) -> tuple[dict[str, tuple[bool, bool]], set[str]]:
    """A mixed world: fileId -> (deleted, file present) after a clean run, and the ids of
    the rows created without a file."""
    expected: dict[str, tuple[bool, bool]] = {}
    for file_id in bulk_add(world, 30, label="expired"):
        expected[file_id] = (True, False)
    no_file = {world.add(age=12 * DAY, with_file=False) for _ in range(2)}
    expected.update(dict.fromkeys(no_file, (True, False)))
    for file_id in bulk_add(world, 5, linked=True, label="linked"):
        expected[file_id] = (False, True)
    for file_id in bulk_add(world, 5, age=3 * DAY, label="fresh"):
        expected[file_id] = (False, True)
    for file_id in bulk_add(world, 3, snapshot_type=PERMANENT_TYPE, label="order"):
        expected[file_id] = (False, True)
    return expected, no_file


def test_uninterrupted_run_reaches_the_expected_state(pg_world):
    expected, _ = build(pg_world)
    assert pg_world.run(batch_size=BATCH).success
    assert state(pg_world) == expected
    [log] = pg_world.run_log()
    # The two rows without a file are already missing: counted apart, not as deleted.
    assert (log.deleted_count, log.missing_count, log.bytes_reclaimed) == (30, 2, 3000)


@pytest.mark.parametrize(
    "crash_at",
    [
        "after_select",
        "after_mark_batch:2",
        "before_delete",
        "after_store_delete:2",
        "after_settle:1",
        "before_record",
    ],
)
def test_killed_run_then_next_run_equals_uninterrupted(pg_world, tmp_path, crash_at):
    expected, no_file = build(pg_world)

    process = start_job(
        pg_world, tmp_path / "home", batch_size=BATCH, SNAPSHOT_OPS_CRASH_AT=crash_at
    )
    output = process.communicate(timeout=300)[0]
    assert process.returncode == -signal.SIGKILL, output[-3000:]

    between = state(pg_world)
    pending = {p.file_id for p in pg_world.pending()}
    for file_id, (deleted, present) in between.items():
        if not expected[file_id][0]:  # what must stay is untouched, whatever the instant
            assert (deleted, present) == (False, True)
        elif not deleted:  # objects go only after their row is marked
            assert present or file_id in no_file
        elif present:  # a marked row whose object is left is journaled for the next run
            assert file_id in pending
    to_finish = {
        i for i, (deleted, _) in expected.items() if deleted and (not between[i][0] or i in pending)
    }
    already_gone = {i for i in to_finish if not between[i][1]}

    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        [killed_run] = instance.get_runs()
        instance.report_run_failed(killed_run)  # what run monitoring does for a dead worker
        result = pg_world.run(batch_size=BATCH, instance=instance)

    assert result.success
    assert state(pg_world) == expected
    assert pg_world.pending() == []
    killed, recovery = pg_world.run_log()
    assert recovery.status == "succeeded"
    assert (recovery.deleted_count, recovery.missing_count, recovery.bytes_reclaimed) == (
        len(to_finish) - len(already_gone),
        len(already_gone),
        100 * (len(to_finish) - len(already_gone)),
    )
    # The killed run could not close its own log row; the next run closed it as crashed,
    # with what the killed run itself settled, never as a success.
    assert (killed.run_id, killed.status) == (killed_run.run_id, "crashed")
    settled = (killed.deleted_count, killed.missing_count, recovery.deleted_count)
    assert sum(settled) + recovery.missing_count == 32
    assert killed.bytes_reclaimed == 100 * killed.deleted_count


def progress(world) -> tuple[int, int]:
    """(rows marked, journal entries): either moves as soon as a run commits any work."""
    with world.engine.connect() as conn:
        marked = conn.execute(
            sa.select(sa.func.count()).where(world.files.c.deletedAt.is_not(None))
        ).scalar_one()
    try:
        return marked, len(world.pending())
    except sa.exc.ProgrammingError:  # before the first run created the journal
        return marked, 0


def test_kills_at_random_instants_inside_transactions(pg_world, tmp_path):
    # Checkpoints sit between transactions; these kills land at random instants once a run
    # has committed its first work, so also inside a batch being marked or deleted.
    expected, _ = build(pg_world)
    for file_id in bulk_add(pg_world, 600, label="more"):
        expected[file_id] = (True, False)
    rng = random.Random(4)
    for _attempt in range(3):
        before = progress(pg_world)
        process = start_job(pg_world, tmp_path / "home", batch_size=BATCH)
        wait_until(
            lambda before=before, process=process: (
                progress(pg_world) != before or process.poll() is not None
            ),
            timeout=120,
            interval=0.01,
            what="the run to commit its first work",
        )
        time.sleep(rng.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        between = state(pg_world)
        assert all(between[i] == (False, True) for i, s in expected.items() if not s[0])

    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        for killed_run in instance.get_runs():
            instance.report_run_failed(killed_run)  # as run monitoring does
        assert pg_world.run(batch_size=BATCH, instance=instance).success
    assert state(pg_world) == expected
    assert pg_world.pending() == []
    assert [log.status for log in pg_world.run_log()].count("running") == 0
