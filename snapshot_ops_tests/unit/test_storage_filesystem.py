"""The filesystem backend: deletes regular files under its root and nothing else.

Keys that could leave the root (`..`, absolute, NUL, backslash, empty, symlinks on the
way or as the object) are refused and the file they point at stays; a missing object is
reported as missing, not as an error, but a missing root fails every key.
"""

from __future__ import annotations

import os

import pytest

from snapshot_ops.errors import ConfigError
from snapshot_ops.storage import Outcome, RefusedKey, check_key, open_storage
from snapshot_ops.storage.filesystem import FilesystemBackend

pytestmark = pytest.mark.unit


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    (root / "a" / "x.pdf").write_bytes(b"12345")
    (outside / "secret.pdf").write_bytes(b"keep me")
    os.symlink(outside, root / "link_dir")
    os.symlink(outside / "secret.pdf", root / "a" / "link.pdf")
    backend = FilesystemBackend(str(root))
    yield root, outside, backend
    backend.close()


@pytest.mark.parametrize(
    "key",
    [
        "",
        "../outside/secret.pdf",
        "a/../../outside/secret.pdf",
        "/etc/passwd",
        "a//x.pdf",
        "a/./x.pdf",
        "a\\x.pdf",
        "a/x.pdf\x00",
        None,
    ],
)
def test_check_key_refuses_keys_that_could_leave_the_root(key):
    with pytest.raises(RefusedKey):
        check_key(key)


@pytest.mark.parametrize("key", ["a/x.pdf", "2026/11/ünï code.pdf", "a b/c d.pdf"])
def test_check_key_accepts_plain_relative_keys(key):
    assert check_key(key) == key


def test_deletes_a_file_and_reports_missing_ones(layout):
    root, _, backend = layout
    results = backend.delete_many(["a/x.pdf", "a/nope.pdf", "no/such/dir.pdf"])
    assert [r.outcome for r in results] == [Outcome.DELETED, Outcome.MISSING, Outcome.MISSING]
    assert not (root / "a" / "x.pdf").exists()


def test_a_root_that_no_longer_exists_fails_every_key_instead_of_missing(tmp_path):
    # Its volume went away: that says nothing about any object, which may be on it still.
    root = tmp_path / "mount-point"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.pdf").write_bytes(b"12345")
    backend = FilesystemBackend(str(root))
    try:
        (root / "a" / "x.pdf").unlink()
        (root / "a").rmdir()
        root.rmdir()
        results = backend.delete_many(["a/x.pdf", "b.pdf"])
        assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.FAILED]
        assert all("does not exist (any more)" in r.error for r in results)
        assert backend.sizes(["a/x.pdf"]) == {"a/x.pdf": None}
    finally:
        backend.close()


@pytest.mark.parametrize(
    "key", ["../outside/secret.pdf", "link_dir/secret.pdf", "a/link.pdf", "/" + "x"]
)
def test_refused_keys_touch_nothing(layout, key):
    _, outside, backend = layout
    [result] = backend.delete_many([key])
    assert result.outcome is Outcome.REFUSED
    assert (outside / "secret.pdf").read_bytes() == b"keep me"
    assert os.path.islink(layout[0] / "a" / "link.pdf")


def test_a_folder_is_not_deleted(layout):
    root, _, backend = layout
    [result] = backend.delete_many(["a"])
    assert result.outcome is Outcome.REFUSED
    assert (root / "a" / "x.pdf").exists()


def test_sizes_of_present_missing_and_refused_keys(layout):
    _, _, backend = layout
    # A refused key has no size: were the symlink's target measured, a run would count as
    # reclaimed the bytes of a file outside the root that it never deletes.
    keys = ["a/x.pdf", "a/nope.pdf", "link_dir/secret.pdf", "a/link.pdf", "a"]
    assert backend.sizes(keys) == {
        "a/x.pdf": 5,
        "a/nope.pdf": None,
        "link_dir/secret.pdf": None,
        "a/link.pdf": None,
        "a": None,
    }


def test_list_keys_lists_regular_files_only(layout):
    _, _, backend = layout
    assert list(backend.list_keys()) == ["a/x.pdf"]


def test_open_storage_rejects_unusable_urls(tmp_path):
    with pytest.raises(ConfigError, match="not an existing folder"):
        open_storage((tmp_path / "missing").as_uri())
    with pytest.raises(ConfigError, match="unsupported storage URL"):
        open_storage("ftp://example/x")
    with pytest.raises(ConfigError, match="file:///absolute/root"):
        open_storage("file://host/x")


def test_refusals_name_what_a_delete_would_refuse_before_anything_is_marked(layout):
    root, outside, backend = layout
    (root / "folder.pdf").mkdir()
    os.mkfifo(root / "a" / "pipe.pdf")
    (root / "a" / "long").mkdir()
    keys = [
        "a/x.pdf",  # a regular file: deletable
        "a/nope.pdf",  # missing: counts as already deleted, not refused
        "no/such/dir.pdf",  # a missing folder on the way: likewise
        "a/long/" + "n" * 300,  # too long a name: the delete fails (and is retried), no refusal
        "a/link.pdf",  # the object is a symlink
        "link_dir/secret.pdf",  # a symlink on the way
        "link_dir/deeper/secret.pdf",  # a symlink further up the way
        "a/x.pdf/inner.pdf",  # a file on the way
        "folder.pdf",  # a folder
        "a/pipe.pdf",  # not a regular file
        "../outside/secret.pdf",  # the shared key checks
    ]

    refused = backend.refusals(keys)

    with pytest.raises(RefusedKey) as shared_check:
        check_key("../outside/secret.pdf")
    assert refused == {
        "a/link.pdf": "storage key 'a/link.pdf' is a symlink",
        "link_dir/secret.pdf": (
            "storage key 'link_dir/secret.pdf' goes through 'link_dir', "
            "which is a symlink or not a folder"
        ),
        "link_dir/deeper/secret.pdf": (
            "storage key 'link_dir/deeper/secret.pdf' goes through 'link_dir', "
            "which is a symlink or not a folder"
        ),
        "a/x.pdf/inner.pdf": (
            "storage key 'a/x.pdf/inner.pdf' goes through 'x.pdf', "
            "which is a symlink or not a folder"
        ),
        "folder.pdf": "storage key 'folder.pdf' is a folder",
        "a/pipe.pdf": "storage key 'a/pipe.pdf' is not a regular file",
        "../outside/secret.pdf": str(shared_check.value),
    }
    # Asking touches nothing, and what it refuses the delete refuses too.
    assert (root / "a" / "x.pdf").read_bytes() == b"12345"
    assert os.path.islink(root / "a" / "link.pdf")
    assert (outside / "secret.pdf").read_bytes() == b"keep me"
    results = backend.delete_many(keys[4:])
    assert [(r.key, r.outcome, r.error) for r in results] == [
        (key, Outcome.REFUSED, refused[key]) for key in keys[4:]
    ]


def test_a_key_the_file_system_fails_on_is_a_failure_naming_the_key(layout):
    root, _, backend = layout
    too_long = "a/" + "n" * 300
    not_encodable = "a/\ud800.pdf"  # a lone surrogate, not one that escapes a byte: no file name
    results = backend.delete_many([too_long, not_encodable])
    assert [(r.key, r.outcome) for r in results] == [
        (too_long, Outcome.FAILED),
        (not_encodable, Outcome.REFUSED),
    ]
    assert results[0].error == f"{too_long!r}: File name too long"
    assert results[1].error == (
        f"storage key {not_encodable!r} is not a usable file name: 'utf-8' codec can't "
        "encode character '\\ud800' in position 0: surrogates not allowed"
    )
    assert (root / "a" / "x.pdf").exists()


@pytest.mark.parametrize("workers", [1, 32])
def test_keys_at_every_depth_are_deleted_and_every_folder_closed(tmp_path, workers):
    # With one worker every key is in one slice, whose open folders are reused from key to
    # key: a folder must be found under its own path, not a shorter one, and opened once.
    root = tmp_path / "root"
    keys = [
        "top.pdf",
        "x/f0.pdf",
        "x/y/f1.pdf",
        "x/y/z/f2.pdf",
        "x/y/z/w/f3.pdf",
        "x/z/f4.pdf",
        "y/z/w/f5.pdf",
    ]
    for key in keys:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(b"s")
    (root / "x" / "y" / "keep.pdf").write_bytes(b"k")
    backend = FilesystemBackend(str(root), workers=workers)
    open_before = len(os.listdir("/proc/self/fd"))
    try:
        results = backend.delete_many(keys)
        open_after = len(os.listdir("/proc/self/fd"))
    finally:
        backend.close()

    assert [(r.key, r.outcome) for r in results] == [(key, Outcome.DELETED) for key in keys]
    assert open_after == open_before
    assert [p.relative_to(root).as_posix() for p in sorted(root.rglob("*"))] == [
        "x",
        "x/y",
        "x/y/keep.pdf",
    ]


def test_the_root_must_be_an_absolute_folder_and_is_named_as_resolved(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(root, tmp_path / "mount")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as refused:
        FilesystemBackend("root")
    assert str(refused.value) == "storage root must be an absolute path, got 'root'"
    backend = FilesystemBackend(str(tmp_path / "mount"))
    backend.close()
    assert backend.description == f"file://{os.path.realpath(root)}"
