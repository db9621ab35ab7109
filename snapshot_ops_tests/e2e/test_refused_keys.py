"""A key the storage refuses never holds its row marked: refused before marking, released at
delete time, and a journal entry that cannot succeed has a way out.

- Keys the backend would refuse (a symlink as the object or on the way, a folder; on S3 a key
  over 1,024 bytes, on Azure a name the service cannot take) are found before the mark is
  committed: their rows stay live, nothing is sent or touched, and every run names them.
- A key the store refuses when deleting (the file became a symlink after the check, or an
  entry journaled before keys were checked) releases its row: live again, entry dropped.
- A journal entry whose row's `"storageKey"` was fixed since it was marked is released by the
  next run, which then deletes the row's real object by its new key.
- `python -m snapshot_ops.journal list / release` shows and releases entries, without SQL.

Runs through the real job on PostgreSQL and SQLite with real folders (and on moto's S3 and
Azurite for the object stores), and looks at rows, files, the journal and the run log.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import urllib.parse
from pathlib import Path

import pytest
import sqlalchemy as sa

from snapshot_ops import checkpoints
from snapshot_ops.db import Catalog, make_engine
from snapshot_ops_tests.support.commands import python_module, run_command
from snapshot_ops_tests.support.jobs import step_metadata
from snapshot_ops_tests.support.scenarios import wait_paused
from snapshot_ops_tests.support.stores import FolderStore, S3Store
from snapshot_ops_tests.support.world import NOW, World

DAY = dt.timedelta(days=1)
#: A name longer than NAME_MAX: the filesystem fails its delete (ENAMETOOLONG) every time.
TOO_LONG = "n" * 300 + ".pdf"


def last_errors(world: World) -> list[str]:
    return json.loads(world.run_log()[-1].errors)


def names(errors: list[str], file_id: str, key: str) -> bool:
    """Whether one of `errors` names the row and its key."""
    return any(file_id in e and repr(key) in e for e in errors)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside the storage root that symlinks under the root point at."""
    outside = tmp_path / "outside"
    outside.mkdir()
    path = outside / "secret.pdf"
    path.write_bytes(b"keep")
    return path


def refusable(world: World, secret: Path, kind: str) -> str:
    """Arrange under the root an object of `kind` that the store refuses; return its key."""
    if kind == "symlink":  # the object itself is a symlink to a file outside the root
        (world.root / "links").mkdir(exist_ok=True)
        (world.root / "links" / "l.pdf").symlink_to(secret)
        return "links/l.pdf"
    if kind == "symlink_on_the_way":  # a folder on the way is a symlink out of the root
        (world.root / "evil").symlink_to(secret.parent)
        return "evil/secret.pdf"
    if kind == "folder":  # a folder where the file should be
        (world.root / "folder.pdf").mkdir()
        (world.root / "folder.pdf" / "inner.pdf").write_bytes(b"inner")
        return "folder.pdf"
    raise AssertionError(kind)


def untouched(world: World, secret: Path, kind: str) -> bool:
    """Whether what `refusable` arranged is still exactly there."""
    if kind == "symlink":
        link = world.root / "links" / "l.pdf"
        return link.is_symlink() and os.readlink(link) == str(secret)
    if kind == "symlink_on_the_way":
        return (world.root / "evil").is_symlink() and secret.read_bytes() == b"keep"
    if kind == "folder":
        return (world.root / "folder.pdf" / "inner.pdf").read_bytes() == b"inner"
    raise AssertionError(kind)


def journal_as_before(world: World, file_id: str) -> None:
    """Mark a row and journal its object as the job did before it asked the storage first
    (and as a crash between marking and deleting leaves it): the stuck entry of the field."""
    row = world.row(file_id)
    catalog = Catalog(make_engine(world.db_url))
    catalog.ensure_own_tables()
    with catalog.engine.begin() as conn:
        conn.execute(
            sa.update(catalog.files).where(catalog.files.c.fileId == file_id).values(deletedAt=NOW)
        )
        conn.execute(
            sa.insert(catalog.pending).values(
                file_id=file_id,
                storage_key=row.storageKey,
                size_bytes=row.sizeBytes,
                run_id="an-earlier-run",
                marked_at=NOW,
                attempts=3,
                last_error="refused at delete time",
            )
        )
    catalog.engine.dispose()


def fix_key(world: World, file_id: str, key: str) -> Path:
    """The row's owner points it at the real object (which they write); return its path."""
    path = world.root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"r" * 100)
    with world.engine.begin() as conn:
        conn.execute(
            sa.update(world.files).where(world.files.c.fileId == file_id).values(storageKey=key)
        )
    return path


# -- refused before marking -------------------------------------------------------------------


def test_symlink_and_folder_keys_are_never_marked(world, secret):
    kinds = ("symlink", "symlink_on_the_way", "folder")
    # Oldest first, in batches of 2: the first batch holds only refused rows, which must
    # neither end nor stall the walk.
    refused = {
        world.add(age=31 * DAY, key=refusable(world, secret, k), with_file=False): k for k in kinds
    }
    good = [world.add(age=30 * DAY) for _ in range(2)]

    for _ in range(2):  # every run reports them again, and never marks them
        result = world.run(batch_size=2)

        assert not result.success
        assert world.pending() == []
        for file_id, kind in refused.items():
            assert not world.is_deleted(file_id), kind
            assert untouched(world, secret, kind), kind
        errors = last_errors(world)
        assert len(errors) == len(refused)
        for file_id in refused:
            assert names(errors, file_id, world.row(file_id).storageKey), errors
    assert secret.read_bytes() == b"keep"
    assert all(world.is_deleted(i) and not world.has_file(i) for i in good)
    assert step_metadata(result, "mark_and_delete_expired")["refusedKeys"] == len(refused)


def test_a_key_the_store_cannot_take_is_never_marked_nor_sent(store_world, tmp_path):
    world, store = store_world, store_world.store
    if isinstance(store, FolderStore):
        target = tmp_path / "target.pdf"
        target.write_bytes(b"keep")
        key = "links/l.pdf"
        (store.base / store.full_key("links")).mkdir(parents=True)
        (store.base / store.full_key(key)).symlink_to(target)
        sent_as = None
    elif isinstance(store, S3Store):
        key = "long/" + "\u00e9" * 505  # 1,015 bytes; 1,025 with the prefix "snapshots/"
        store.put("long/other.pdf", b"x")
        sent_as = store.full_key(key)
    else:
        key = "dots/name."  # Azure does not keep a trailing dot: it could reach "dots/name"
        store.put("dots/name", b"another object")
        sent_as = store.full_key(key)
    bad = world.add(age=30 * DAY, key=key, with_file=False)
    good = world.add(age=30 * DAY)

    result = world.run()

    assert not result.success
    assert not world.is_deleted(bad)
    assert world.is_deleted(good) and not world.has_file(good)
    assert world.pending() == []
    assert names(last_errors(world), bad, key)
    if isinstance(store, FolderStore):
        assert target.read_bytes() == b"keep"
    else:
        batches = store.proxy.requests(lambda s: s.is_s3_delete_objects or s.is_blob_batch)
        assert batches and all(sent_as.encode() not in r.body for r in batches)
        encoded = urllib.parse.quote(sent_as).encode()
        assert all(encoded not in r.path.encode() for r in store.proxy.requests(bool))
        if not isinstance(store, S3Store):
            assert store.exists("dots/name")


def test_the_storage_is_asked_outside_any_transaction_and_a_key_changed_meanwhile_waits(
    world, secret
):
    # The application changes the row's key while the storage is being asked about the old
    # one. The write goes through at once (no transaction of the job holds the database or
    # the row), and the row is not marked under a key that was never checked.
    row = world.add(age=30 * DAY)
    new_key = refusable(world, secret, "symlink")
    catalog = Catalog(make_engine(world.db_url))
    catalog.ensure_own_tables()
    asked: list[list[str]] = []

    def refusals_while_the_application_writes(keys):
        asked.append(list(keys))
        with world.engine.begin() as conn:
            if not world.db_url.startswith("sqlite"):
                conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
            conn.execute(
                sa.update(world.files).where(world.files.c.fileId == row).values(storageKey=new_key)
            )
        return {}

    try:
        batch = catalog.mark_batch(
            cutoff=NOW - 7 * DAY,
            cursor=None,
            limit=10,
            run_id="r1",
            marked_at=NOW,
            refusals=refusals_while_the_application_writes,
        )
    finally:
        catalog.engine.dispose()

    assert asked == [[f"{row[:2]}/{row}.pdf"]]
    assert batch.marked == [] and batch.cursor is not None
    assert not world.is_deleted(row) and world.row(row).storageKey == new_key
    assert world.pending() == []


# -- a fixed row is picked up by the next run --------------------------------------------------


@pytest.mark.parametrize("kind", ["symlink", "symlink_on_the_way", "folder", "too_long"])
def test_a_fixed_row_is_deleted_by_its_new_key_in_the_next_run(world, secret, kind):
    if kind == "too_long":  # the store fails it (not refuses it), every run
        (world.root / "a").mkdir()
        old_key = f"a/{TOO_LONG}"
    else:
        old_key = refusable(world, secret, kind)
    stuck = world.add(age=30 * DAY, key=old_key, with_file=False)
    journal_as_before(world, stuck)
    real = fix_key(world, stuck, f"fixed/{stuck}.pdf")

    result = world.run()

    assert result.success, last_errors(world)
    assert world.is_deleted(stuck) and not real.exists()
    assert world.pending() == []
    [log] = world.run_log()
    assert (log.error_count, log.deleted_count, log.bytes_reclaimed) == (0, 1, 100)
    assert step_metadata(result, "finish_pending_deletes")["releasedRows"] == 1
    if kind != "too_long":
        assert untouched(world, secret, kind)


# -- refused at delete time: the row is released -------------------------------------------


@pytest.mark.parametrize("kind", ["symlink", "symlink_on_the_way", "folder"])
def test_a_journaled_key_the_store_refuses_releases_its_row(world, secret, kind):
    key = refusable(world, secret, kind)
    stuck = world.add(age=30 * DAY, key=key, with_file=False)
    journal_as_before(world, stuck)

    result = world.run()

    assert not result.success
    assert not world.is_deleted(stuck)  # live again, and not marked again
    assert world.pending() == []
    assert untouched(world, secret, kind)
    errors = last_errors(world)
    assert any(stuck in e and "live again" in e and key in e for e in errors), errors
    assert step_metadata(result, "finish_pending_deletes")["releasedRows"] == 1

    result = world.run()  # the next run refuses it before marking and says so again

    assert not world.is_deleted(stuck) and world.pending() == []
    assert names(last_errors(world), stuck, key)


def test_a_file_replaced_by_a_symlink_after_the_check_releases_its_row(
    world, secret, tmp_path, monkeypatch
):
    victim = world.add(age=30 * DAY)
    path = world.root / world.row(victim).storageKey
    flag = tmp_path / "flag"
    flag.mkdir()
    monkeypatch.setenv(checkpoints.CRASH_AT, "before_delete:1")
    monkeypatch.setenv(checkpoints.CRASH_ACTION, f"pause:{flag}")
    checkpoints.reset()

    def swap() -> None:  # marked and committed as a regular file; now it is a symlink
        wait_paused(flag)
        path.unlink()
        path.symlink_to(secret)
        (flag / "paused").unlink()

    thread = threading.Thread(target=swap, daemon=True)
    thread.start()
    result = world.run()
    thread.join(timeout=60)
    monkeypatch.delenv(checkpoints.CRASH_AT)

    assert not result.success
    assert path.is_symlink() and secret.read_bytes() == b"keep"
    assert not world.is_deleted(victim)
    assert world.pending() == []
    [error] = last_errors(world)
    assert victim in error and "symlink" in error and "live again" in error


# -- the journal command -----------------------------------------------------------------------


def without_snapshot_ops_settings() -> dict[str, str]:
    """This process's environment without any SNAPSHOT_OPS_* variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOT_OPS_")}


def journal_command(world: World, *args: str, returncode: int | None = 0):
    env = {**without_snapshot_ops_settings(), "SNAPSHOT_OPS_DATABASE_URL": world.db_url}
    return run_command(python_module("snapshot_ops.journal", *args), env=env, returncode=returncode)


def test_the_journal_command_lists_and_releases_an_entry_that_cannot_succeed(world):
    (world.root / "a").mkdir()
    key = f"a/{TOO_LONG}"
    stuck = world.add(age=30 * DAY, key=key, with_file=False)
    done = world.add(age=30 * DAY)
    assert not world.run().success  # the store fails it: marked, journaled, retried each run
    assert world.is_deleted(stuck) and [p.file_id for p in world.pending()] == [stuck]

    listed = journal_command(world, "list")

    [entry] = json.loads(listed.stdout)
    assert (entry["file_id"], entry["storage_key"], entry["row_storage_key"]) == (stuck, key, key)
    assert entry["row_marked"] is True and entry["attempts"] == 1
    assert "File name too long" in entry["last_error"]

    # Only rows the journal holds are released: a settled row given alongside stays marked.
    released = journal_command(world, "release", stuck, done, returncode=1)

    assert json.loads(released.stdout) == {"released": [stuck], "not_in_journal": [done]}
    assert done in released.stderr
    assert not world.is_deleted(stuck) and world.pending() == []
    assert world.is_deleted(done)
    assert json.loads(journal_command(world, "list").stdout) == []

    again = journal_command(world, "release", stuck, returncode=1)  # nothing left to release

    assert json.loads(again.stdout) == {"released": [], "not_in_journal": [stuck]}
    assert not world.is_deleted(stuck)

    # The live row can now be fixed, and the next run deletes it by its new key.
    real = fix_key(world, stuck, "a/real.pdf")
    assert world.run().success
    assert world.is_deleted(stuck) and not real.exists()


def test_the_journal_command_without_a_database_says_what_to_set(tmp_path):
    result = run_command(
        python_module("snapshot_ops.journal", "list"),
        env=without_snapshot_ops_settings(),
        returncode=2,
    )
    assert "SNAPSHOT_OPS_DATABASE_URL" in result.stderr
