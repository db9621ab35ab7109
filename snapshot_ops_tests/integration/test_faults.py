"""Real faults mid-run lose nothing: failures land in `errors`, the run ends failed, and the
next run finishes the job.

- Storage refusing some deletes: files made immutable with `chattr +i` (root cannot unlink
  them either), so the filesystem itself returns EPERM for those keys.
- The database connection dropping: at a checkpoint the run pauses, the test kills every
  other backend of the database with `pg_terminate_backend`, and the run goes on: once
  while the store deletes (after the store deleted a batch, before its leased journal entries
  are settled; no transaction is open then), once between marking transactions (a pooled
  connection that died while idle).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading

import pytest
import sqlalchemy as sa

from snapshot_ops import checkpoints
from snapshot_ops_tests.support.commands import run_command
from snapshot_ops_tests.support.scenarios import bulk_add, state, wait_paused


def chattr(flag: str, *paths) -> subprocess.CompletedProcess:
    return run_command(["chattr", flag, *map(str, paths)], returncode=None)


@pytest.fixture
def immutable(storage_root):
    """Make files immutable; always made mutable again so the folder can be removed."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed (package e2fsprogs)")
    probe = storage_root / "probe"
    probe.write_bytes(b"p")
    if chattr("+i", probe).returncode != 0:
        probe.unlink()
        pytest.skip("this filesystem does not support the immutable attribute")
    chattr("-i", probe)
    probe.unlink()
    made: list = []

    def make(*paths) -> None:
        made.extend(paths)
        assert chattr("+i", *paths).returncode == 0

    yield make
    if made:
        chattr("-i", *made)


def test_storage_refusing_some_deletes_fails_the_run_and_the_next_run_finishes(world, immutable):
    ids = bulk_add(world, 10)
    stuck = ids[:3]
    immutable(*[world.root / world.row(i).storageKey for i in stuck])

    result = world.run(batch_size=4)

    assert not result.success
    now = state(world)
    assert all(now[i] == (True, True) for i in stuck)  # marked, object still there
    assert all(now[i] == (True, False) for i in ids[3:])
    [log] = world.run_log()
    assert (log.status, log.deleted_count, log.error_count) == ("failed", 7, 3)
    assert all("Operation not permitted" in e for e in json.loads(log.errors))
    assert sorted(p.file_id for p in world.pending()) == sorted(stuck)
    assert all(p.attempts == 1 for p in world.pending())

    chattr("-i", *[world.root / world.row(i).storageKey for i in stuck])
    assert world.run(batch_size=4).success
    assert all(s == (True, False) for s in state(world).values())
    assert world.pending() == []
    assert world.run_log()[1].deleted_count == 3


def terminate_other_backends(engine: sa.Engine) -> int:
    """Terminate every other connection to the database and wait until each has exited.

    pg_terminate_backend without a timeout only signals the backend: a connection the job
    checks out right after could still answer its ping and die in its next statement.
    With a timeout (PostgreSQL 14+) it returns once the backend is gone (5 s at most).
    """
    with engine.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
        conn.commit()
    return killed


def run_with_connection_drop(world, tmp_path, monkeypatch, at: str):
    """Run the job in process; when it pauses at `at`, kill its database connections."""
    monkeypatch.setenv(checkpoints.CRASH_AT, at)
    monkeypatch.setenv(checkpoints.CRASH_ACTION, f"pause:{tmp_path}")
    checkpoints.reset()
    killed: list[int] = []
    admin = sa.create_engine(world.engine.url, poolclass=sa.pool.NullPool)

    def dropper() -> None:
        wait_paused(tmp_path)
        killed.append(terminate_other_backends(admin))
        (tmp_path / "paused").unlink()

    thread = threading.Thread(target=dropper, daemon=True)
    thread.start()
    # The application's own engine is one of the victims too: start it afresh afterwards.
    result = world.run(batch_size=5)
    thread.join(timeout=60)
    monkeypatch.delenv(checkpoints.CRASH_AT)
    admin.dispose()
    world.engine.dispose()
    assert killed and killed[0] >= 1
    return result


def test_connection_dropped_while_the_store_deletes_loses_nothing(pg_world, tmp_path, monkeypatch):
    # The store has deleted a batch whose journal entries are not settled yet. The deleter
    # holds no transaction at that instant (the entries are leased, committed), so killing
    # the job's connections rolls none of its work back: the pool replaces them and the
    # batch is settled and counted. Another deleting thread may be settling its batch at
    # that instant: that settle is made again on a new connection (settle_pending). The
    # marking thread may be in the middle of a statement, though: that statement dies with
    # its connection and fails the run (its transaction rolls back whole), and the next run
    # finishes. Either way nothing is lost and every object is counted exactly once, as
    # deleted.
    ids = bulk_add(pg_world, 12)

    result = run_with_connection_drop(pg_world, tmp_path, monkeypatch, "after_store_delete:1")
    if not result.success:
        assert pg_world.run(batch_size=5).success

    assert all(state(pg_world)[i] == (True, False) for i in ids)
    assert pg_world.pending() == []
    logs = pg_world.run_log()
    assert logs[-1].status == "succeeded"
    assert sum(log.deleted_count for log in logs) == 12
    assert sum(log.missing_count for log in logs) == 0


def test_connection_dropped_between_transactions_is_replaced(pg_world, tmp_path, monkeypatch):
    ids = bulk_add(pg_world, 12)
    kept = bulk_add(pg_world, 3, linked=True, label="linked")

    result = run_with_connection_drop(pg_world, tmp_path, monkeypatch, "after_mark_batch:1")

    # The pool checks a connection before use, so a connection that died while idle is
    # replaced and the run completes.
    assert result.success
    now = state(pg_world)
    assert all(now[i] == (True, False) for i in ids)
    assert all(now[i] == (False, True) for i in kept)
    [log] = pg_world.run_log()
    assert (log.status, log.deleted_count) == ("succeeded", 12)
