"""The key checks and the batch shape every object store shares (storage/base.py).

`check_key` refuses each kind of unsafe key with a reason that names the kind. The shared
`delete_in_batches` is driven here over real files (a filesystem backend plays the store that
answers per name) and a real thread pool: each key gets one result in the order given,
duplicates are sent once, no batch exceeds its size, and a refused key is reported with its
reason and never sent. The object stores' own use of it is covered against moto's S3 server
and Azurite in test_storage_contract.py.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from snapshot_ops.storage import Outcome, RefusedKey, check_key
from snapshot_ops.storage.base import chunked, delete_in_batches
from snapshot_ops.storage.filesystem import FilesystemBackend

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "^empty storage key$"),
        (None, "^empty storage key$"),
        ("a/x.pdf\x00", "NUL byte"),
        ("a\\x.pdf", "backslash"),
        ("/etc/passwd", "absolute"),
        ("/", "absolute"),
        (".", "empty, '.' or '..' segment"),
        ("..", "empty, '.' or '..' segment"),
        ("a//x.pdf", "empty, '.' or '..' segment"),
        ("a/../x.pdf", "empty, '.' or '..' segment"),
        ("a/", "empty, '.' or '..' segment"),
    ],
)
def test_each_kind_of_unsafe_key_is_refused_with_its_reason(key, reason):
    with pytest.raises(RefusedKey, match=reason):
        check_key(key)


def test_chunked_splits_into_full_batches_and_a_remainder():
    assert list(chunked(["a", "b", "c", "d", "e"], 2)) == [["a", "b"], ["c", "d"], ["e"]]
    assert list(chunked(["a", "b"], 2)) == [["a", "b"]]
    assert list(chunked([], 2)) == []


@pytest.fixture
def store(tmp_path):
    """A folder of objects under the prefix `p`, and a backend deleting in it."""
    for name in ("1.pdf", "2.pdf", "3.pdf", "4.pdf", "5.pdf", "keep.pdf"):
        (tmp_path / "p").mkdir(exist_ok=True)
        (tmp_path / "p" / name).write_bytes(b"data")
    (tmp_path / "p" / "folder.pdf").mkdir()  # the store refuses it, with a reason
    backend = FilesystemBackend(str(tmp_path))
    yield tmp_path, backend
    backend.close()


def test_delete_in_batches_answers_each_key_in_order_sending_each_name_once(store):
    root, backend = store
    sent: list[list[str]] = []

    def delete_batch(names: list[str]):
        sent.append(list(names))
        return {result.key: result for result in backend.delete_many(names)}

    def delete_one(name: str):
        raise AssertionError(f"{name} was sent alone, though every name fits in a batch")

    keys = [
        "5.pdf",
        "1.pdf",
        "../escape.pdf",
        "2.pdf",
        "1.pdf",
        "3.pdf",
        "gone.pdf",
        "4.pdf",
        "folder.pdf",
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = delete_in_batches(
            keys,
            name_of=lambda key: f"p/{check_key(key)}",
            batch_size=2,
            pool=pool,
            delete_batch=delete_batch,
            delete_one=delete_one,
        )

    assert [r.key for r in results] == keys
    assert [r.outcome for r in results] == [
        Outcome.DELETED,
        Outcome.DELETED,
        Outcome.REFUSED,
        Outcome.DELETED,
        Outcome.DELETED,
        Outcome.DELETED,
        Outcome.MISSING,
        Outcome.DELETED,
        Outcome.REFUSED,
    ]
    # A key refused before sending keeps check_key's reason; the store's answer keeps its own.
    assert "empty, '.' or '..' segment" in results[2].error
    assert "not a regular file" in results[8].error
    assert all(r.error is None for r in results if r.outcome is not Outcome.REFUSED)
    assert all(len(batch) <= 2 for batch in sent)
    names = sorted(name for batch in sent for name in batch)
    assert names == sorted(
        f"p/{n}" for n in ("1.pdf", "2.pdf", "3.pdf", "4.pdf", "5.pdf", "gone.pdf", "folder.pdf")
    )
    assert sorted(p.name for p in (root / "p").iterdir()) == ["folder.pdf", "keep.pdf"]
