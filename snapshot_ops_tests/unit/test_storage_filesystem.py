"""The filesystem backend: deletes regular files under its root and nothing else.

Keys that could leave the root (`..`, absolute, NUL, backslash, empty, symlinks on the
way or as the object) are refused and the file they point at stays; a missing object is
reported as missing, not as an error.
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
        "a/x.pdf/inner.pdf",  # a file on the way
        "folder.pdf",  # a folder
        "a/pipe.pdf",  # not a regular file
        "../outside/secret.pdf",  # the shared key checks
    ]

    refused = backend.refusals(keys)

    assert sorted(refused) == sorted(keys[4:])
    assert "symlink" in refused["a/link.pdf"] and "folder" in refused["folder.pdf"]
    assert all(repr(key) in reason for key, reason in refused.items())
    # Asking touches nothing, and what it refuses the delete refuses too.
    assert (root / "a" / "x.pdf").read_bytes() == b"12345"
    assert os.path.islink(root / "a" / "link.pdf")
    assert (outside / "secret.pdf").read_bytes() == b"keep me"
    results = backend.delete_many(keys[4:])
    assert {r.outcome for r in results} == {Outcome.REFUSED}
