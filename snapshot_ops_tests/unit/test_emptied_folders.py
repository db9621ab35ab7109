"""Folders the cleanup empties on the filesystem are removed; nothing else is.

Date-partitioned keys (`2026/10/01/s0.pdf`) leave a folder per day. After a delete, each
folder it emptied is removed bottom up with rmdir: the storage root never, a folder that
still holds a file or a folder never, nothing reached through a symlink. The storage
resource's `remove_empty_folders: false` keeps every folder. Checked on real folders, by the
backend and through the real job.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from snapshot_ops.defs.resources import SnapshotStorage
from snapshot_ops.storage import Outcome
from snapshot_ops.storage.filesystem import FilesystemBackend
from snapshot_ops_tests.support.jobs import run_cleanup
from snapshot_ops_tests.support.world import World

DAY = dt.timedelta(days=1)


def folders(root: Path) -> set[str]:
    """Every folder below `root` (not following symlinks), relative to it."""
    found = set()
    for folder, dirnames, _ in os.walk(root):
        for name in dirnames:
            found.add((Path(folder) / name).relative_to(root).as_posix())
    return found


def put(root: Path, *keys: str) -> None:
    for key in keys:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(b"x")


def delete(root: Path, keys: list[str], **options: bool) -> list:
    backend = FilesystemBackend(str(root), **options)
    try:
        return backend.delete_many(keys)
    finally:
        backend.close()


@pytest.mark.unit
def test_emptied_folders_go_bottom_up_and_the_root_stays(tmp_path):
    root = tmp_path / "root"
    keys = ["2026/10/01/s0.pdf", "2026/10/01/s1.pdf", "2026/10/02/s2.pdf", "top.pdf"]
    put(root, *keys)

    results = delete(root, keys)

    assert all(r.outcome is Outcome.DELETED for r in results)
    assert root.is_dir() and list(root.iterdir()) == []


@pytest.mark.unit
def test_a_folder_that_still_holds_anything_stays_with_its_parents(tmp_path):
    root = tmp_path / "root"
    put(root, "2026/10/01/s0.pdf", "2026/10/01/app.pdf", "2026/10/02/s1.pdf")
    put(root, "2026/11/01/s2.pdf")
    (root / "2026/11/01/empty-but-not-ours").mkdir()

    delete(root, ["2026/10/01/s0.pdf", "2026/10/02/s1.pdf", "2026/11/01/s2.pdf"])

    assert folders(root) == {
        "2026",
        "2026/10",
        "2026/10/01",  # holds app.pdf
        "2026/11",
        "2026/11/01",  # holds a folder
        "2026/11/01/empty-but-not-ours",  # held no deleted file: not touched
    }
    assert (root / "2026/10/01/app.pdf").exists()


@pytest.mark.unit
def test_a_folder_emptied_by_an_earlier_delete_goes_when_its_object_is_found_missing(tmp_path):
    root = tmp_path / "root"
    (root / "2026/10/01").mkdir(parents=True)  # its file was deleted, its folder stayed

    [result] = delete(root, ["2026/10/01/s0.pdf"])

    assert result.outcome is Outcome.MISSING
    assert folders(root) == set()


@pytest.mark.unit
def test_nothing_is_removed_through_a_symlink(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (outside / "empty").mkdir(parents=True)
    put(root, "day/s0.pdf")
    os.symlink(outside, root / "day" / "link")
    os.symlink(outside, root / "linked")

    results = delete(root, ["day/s0.pdf", "linked/empty/x.pdf", "day/link/empty/x.pdf"])

    assert [r.outcome for r in results] == [Outcome.DELETED, Outcome.REFUSED, Outcome.REFUSED]
    assert (outside / "empty").is_dir()
    assert (root / "day" / "link").is_symlink() and (root / "linked").is_symlink()


@pytest.mark.unit
def test_turned_off_every_folder_stays(tmp_path):
    root = tmp_path / "root"
    put(root, "2026/10/01/s0.pdf")

    delete(root, ["2026/10/01/s0.pdf"], remove_empty_folders=False)

    assert folders(root) == {"2026", "2026/10", "2026/10/01"}


@pytest.mark.e2e
@pytest.mark.parametrize("remove", [True, False], ids=["default", "turned-off"])
def test_the_job_removes_the_day_folders_it_empties(sqlite_url, storage_root, remove):
    world = World(sqlite_url, storage_root)
    for day in (1, 2):
        for n in range(2):
            world.add(age=(10 + day) * DAY, key=f"2026/10/0{day}/s{n}.pdf")
    fresh = world.add(age=DAY, key="2026/11/19/s0.pdf")
    storage = SnapshotStorage(url=storage_root.as_uri())
    if not remove:
        storage = SnapshotStorage(url=storage_root.as_uri(), remove_empty_folders=False)

    result = run_cleanup(sqlite_url, storage)

    assert result.success
    assert [log.deleted_count for log in world.run_log()] == [4]
    assert world.has_file(fresh)
    kept = {"2026", "2026/11", "2026/11/19"}
    emptied = {"2026/10", "2026/10/01", "2026/10/02"}
    assert folders(storage_root) == (kept if remove else kept | emptied)
    world.engine.dispose()
