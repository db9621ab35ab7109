"""The storage contract every backend keeps: filesystem, S3 (moto's server), Azure (Azurite).

Each test runs once per backend against the real service and checks the objects in the
store afterwards: deletes happen, a missing object counts as gone, unsafe keys are refused
and never sent, a key the store refuses fails alone while the rest of its batch is deleted,
sizes are read from the store, and listing stays under the prefix (or, without one, names
every object whole).
"""

from __future__ import annotations

from snapshot_ops.storage import Outcome, open_storage
from snapshot_ops_tests.support.stores import TEST_RETRY, AzureStore, S3Store

UNSAFE_KEYS = ["", "/etc/passwd", "../outside.pdf", "a/../../outside.pdf", "a//b.pdf", "./a.pdf"]


def test_deletes_the_objects_and_nothing_else(store):
    for key in ("a/1.pdf", "a/2.pdf", "b/3.pdf", "keep/4.pdf"):
        store.put(key, b"data")
    backend = store.open()
    try:
        results = backend.delete_many(["a/1.pdf", "a/2.pdf", "b/3.pdf"])
    finally:
        backend.close()

    assert [(r.key, r.outcome) for r in results] == [
        ("a/1.pdf", Outcome.DELETED),
        ("a/2.pdf", Outcome.DELETED),
        ("b/3.pdf", Outcome.DELETED),
    ]
    assert store.all_keys() == {store.full_key("keep/4.pdf")}


def test_an_object_already_gone_counts_as_gone(store):
    store.put("here.pdf", b"data")
    backend = store.open()
    try:
        here, gone = backend.delete_many(["here.pdf", "never/was.pdf"])
    finally:
        backend.close()

    assert here.outcome is Outcome.DELETED
    assert gone.gone and gone.error is None
    # S3's DeleteObjects answers "Deleted" for a key that did not exist.
    assert gone.outcome is (Outcome.MISSING if store.reports_missing else Outcome.DELETED)
    assert store.all_keys() == set()


def test_unsafe_keys_are_refused_and_never_sent(store):
    store.put_raw("outside.pdf", b"outside the prefix")
    store.put("a.pdf", b"inside")
    store.put("ok.pdf", b"inside")
    backend = store.open()
    try:
        results = backend.delete_many([*UNSAFE_KEYS, "ok.pdf"])
    finally:
        backend.close()

    assert [r.outcome for r in results] == [Outcome.REFUSED] * len(UNSAFE_KEYS) + [Outcome.DELETED]
    assert all(r.error for r in results[:-1])
    assert store.all_keys() == {"outside.pdf", store.full_key("a.pdf")}
    if store.proxy is not None:  # the one request sent carried only the safe key
        [request] = store.proxy.requests(lambda s: s.is_s3_delete_objects or s.is_blob_batch)
        if request.is_s3_delete_objects:
            assert request.s3_delete_keys() == [store.full_key("ok.pdf")]
        else:
            assert request.blob_batch_deletes() == 1


def test_a_key_the_store_refuses_fails_alone(store):
    blocked = store.refusable_key("p/2.pdf")
    for key in ("p/1.pdf", "p/3.pdf") + ((blocked,) if store.refused_object_survives else ()):
        store.put(key, b"data")
    store.refuse_deleting(blocked)
    backend = store.open()
    try:
        results = backend.delete_many(["p/1.pdf", blocked, "p/3.pdf"])
    finally:
        backend.close()

    assert [r.outcome for r in results] == [Outcome.DELETED, Outcome.FAILED, Outcome.DELETED]
    assert blocked in results[1].error and store.refusal in results[1].error
    assert not store.exists("p/1.pdf") and not store.exists("p/3.pdf")
    if store.refused_object_survives:
        assert store.exists(blocked)


def test_sizes_come_from_the_store(store):
    store.put("s/ten.pdf", b"0123456789")
    store.put("s/empty.pdf", b"")
    backend = store.open()
    try:
        sizes = backend.sizes(["s/ten.pdf", "s/empty.pdf", "s/missing.pdf", "../s/ten.pdf"])
    finally:
        backend.close()

    assert sizes == {"s/ten.pdf": 10, "s/empty.pdf": 0, "s/missing.pdf": None, "../s/ten.pdf": None}


def test_listing_stays_under_the_prefix(store):
    store.put_raw("elsewhere.pdf", b"x")
    for key in ("a/1.pdf", "a/2.pdf", "b/3.pdf"):
        store.put(key, b"x")
    backend = store.open()
    try:
        everything = sorted(backend.list_keys())
        under_a = sorted(backend.list_keys("a"))
    finally:
        backend.close()

    assert everything == ["a/1.pdf", "a/2.pdf", "b/3.pdf"]
    assert under_a == ["a/1.pdf", "a/2.pdf"]


def test_a_backend_at_the_store_top_works_on_whole_object_names(store):
    # A URL without a prefix: the bucket's, container's or folder's top. Keys are then
    # the whole object names, and a prefix nothing is under lists nothing.
    store.put_raw("top.pdf", b"x")
    store.put("a/1.pdf", b"xyz")
    backend = open_storage(store.url.rsplit("/", 1)[0], **TEST_RETRY)
    try:
        everything = sorted(backend.list_keys())
        nothing = list(backend.list_keys("nothing-here"))
        sizes = backend.sizes(["snapshots/a/1.pdf"])
        [result] = backend.delete_many(["top.pdf"])
    finally:
        backend.close()

    assert everything == ["snapshots/a/1.pdf", "top.pdf"]
    assert nothing == []
    assert sizes == {"snapshots/a/1.pdf": 3}
    assert result.outcome is Outcome.DELETED
    assert store.all_keys() == {"snapshots/a/1.pdf"}


def test_duplicate_keys_get_one_result_each(store):
    store.put("dup.pdf", b"x")
    backend = store.open()
    try:
        results = backend.delete_many(["dup.pdf", "dup.pdf"])
    finally:
        backend.close()

    assert [r.key for r in results] == ["dup.pdf", "dup.pdf"]
    assert all(r.gone for r in results)
    assert not store.exists("dup.pdf")


def test_refusals_name_what_the_store_cannot_take_and_send_nothing(store):
    # S3 takes object keys of up to 1,024 bytes (UTF-8, prefix "snapshots/" included);
    # Azure takes blob names of up to 1,024 characters and 254 segments, no control
    # characters, and no segment ending with a dot; a filesystem refuses what is not a
    # regular file.
    fits = "k/" + "\u00e9" * 506  # 1,024 bytes on S3, 528 characters on Azure
    s3_too_long = "k/" + "\u00e9" * 507  # 1,026 bytes
    azure_too_long = "k/" + "x" * 1013  # 1,025 characters (and bytes) with the prefix
    azure_longest = "k/" + "x" * 1012  # 1,024
    # Azure takes at most 254 path segments: the prefix is one.
    azure_deepest, azure_too_deep = "/".join("d" * 253), "/".join("d" * 254)
    backend = store.open()
    try:
        refused = backend.refusals(
            [fits, s3_too_long, azure_too_long, azure_longest, azure_deepest, azure_too_deep]
            + ["a./b.pdf", "c\x01.pdf"]
        )
        unsafe = backend.refusals([*UNSAFE_KEYS, "ok.pdf"])
    finally:
        backend.close()

    assert sorted(unsafe) == sorted(UNSAFE_KEYS)
    assert all(reason for reason in refused.values())
    if isinstance(store, S3Store):
        assert sorted(refused) == sorted([s3_too_long, azure_too_long])
        assert "1026 bytes" in refused[s3_too_long]
    elif isinstance(store, AzureStore):
        expected = [azure_too_long, azure_too_deep, "a./b.pdf", "c\x01.pdf"]
        assert sorted(refused) == sorted(expected)
        assert "1025 characters" in refused[azure_too_long]
        assert "255 path segments" in refused[azure_too_deep]
    else:
        # Names too long for the filesystem fail at delete time instead (retried).
        assert refused == {}
    if store.proxy is not None:
        assert store.proxy.requests(bool) == []  # asking sends nothing
