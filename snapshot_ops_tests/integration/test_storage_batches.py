"""One key never holds the other keys of its batch hostage, on every backend.

Against moto's S3 server and Azurite behind the fault proxy, and real folders:

- a batch the store rejects as a whole because of one key in it (400, as S3 answers
  MalformedXML) is halved until that key goes alone by a single-object delete: every other
  key is deleted in the same call, with a bounded number of extra requests;
- a key the store keeps refusing alone fails with the store's reason, naming the key; a
  404 to it counts as gone only when the object is gone, not the bucket or container;
- Azure deletes a blob with its snapshots, in a batch and alone;
- keys an S3 XML body cannot carry intact (control characters, U+FFFE, a carriage return)
  never go in a batch but by `DeleteObject`, the key in the URL; Azure's batch carries any
  name; a key that is not valid Unicode (a lone surrogate) is refused on every backend;
- a failure of the store or the connection (throttling, 5xx, 403, a hang-up) is never
  split: every request still carries the whole batch, and no single deletes are sent;
- a store that answers a batch 405 or 501 (it has no batch delete) gets that one batch
  request from a backend, and every key by the single-object delete, in that call and every
  later one;
- a key a 200 batch answer fails with a passing error (S3 `InternalError`, `SlowDown`;
  an Azure 500 or 503 sub-response) is sent again in the same call and deleted; one that
  fails on every try fails after `max_attempts` tries, saying so;
- on the filesystem, a key the operating system cannot encode is that key's result, and
  the other keys of the same thread's slice are deleted.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from snapshot_ops.storage import Outcome
from snapshot_ops.storage.filesystem import FilesystemBackend
from snapshot_ops_tests.support.faultproxy import (
    Fault,
    Seen,
    azure_error,
    s3_error,
    s3_result_as_error,
)
from snapshot_ops_tests.support.stores import NO_BATCHES, PASSING, Store

BACKENDS = ["s3", "azure"]
KEYS = [f"s/{n}.pdf" for n in range(8)]
BAD = KEYS[5]


def is_batch(seen: Seen) -> bool:
    return seen.is_s3_delete_objects or seen.is_blob_batch


def is_single_delete(seen: Seen) -> bool:
    return seen.method == "DELETE"


def batch_keys(store: Store, seen: Seen) -> list[str]:
    """The full keys one batch request carried, in the order sent."""
    if seen.is_s3_delete_objects:
        return seen.s3_delete_keys()
    return [name.split(f"{store.name}/", 1)[1] for name in seen.blob_batch_names()]


def holding(store: Store, key: str) -> Callable[[Seen], bool]:
    """Matches batch requests that carry `key`."""
    full_key = store.full_key(key)
    return lambda seen: is_batch(seen) and full_key in batch_keys(store, seen)


def single_delete_of(store: Store, key: str) -> Callable[[Seen], bool]:
    full_key = store.full_key(key)
    return lambda seen: is_single_delete(seen) and seen.path.endswith("/" + full_key)


def reject_batches_holding(store: Store, key: str) -> None:
    """The store rejects, as a whole, every batch request that carries `key`."""
    if store.url.startswith("s3://"):
        message = "The XML you provided was not well-formed"
        fault = s3_error(holding(store, key), 400, "MalformedXML", message, times=100)
    else:
        fault = azure_error(holding(store, key), 400, "InvalidInput", times=100)
    store.proxy.add_fault(fault)


def delete(store: Store, keys: list[str], **options: float) -> list:
    backend = store.open(**options)
    try:
        return backend.delete_many(keys)
    finally:
        backend.close()


@pytest.fixture(params=BACKENDS)
def object_store(request: pytest.FixtureRequest) -> Store:
    return request.getfixturevalue(f"{request.param}_store")


def test_a_rejected_batch_is_halved_until_the_key_at_fault_goes_alone(object_store):
    store = object_store
    for key in KEYS:
        store.put(key, b"x")
    reject_batches_holding(store, BAD)

    results = delete(store, KEYS)

    assert [r.outcome for r in results] == [Outcome.DELETED] * len(KEYS)
    assert not any(store.exists(key) for key in KEYS)
    sent = [sorted(batch_keys(store, s)) for s in store.proxy.requests(is_batch)]
    halves = [KEYS, KEYS[:4], KEYS[4:], KEYS[4:6], KEYS[6:], KEYS[4:5], KEYS[5:6]]
    assert sorted(sent) == sorted([store.full_key(k) for k in h] for h in halves)
    [alone] = store.proxy.requests(is_single_delete)
    assert single_delete_of(store, BAD)(alone)


def test_a_key_the_store_refuses_alone_fails_by_name_and_the_others_go(object_store):
    store = object_store
    for key in KEYS:
        store.put(key, b"x")
    reject_batches_holding(store, BAD)
    if store.url.startswith("s3://"):
        refusal = "InvalidArgument"
        store.proxy.add_fault(
            s3_error(single_delete_of(store, BAD), 400, refusal, "Invalid key", times=100)
        )
    else:
        refusal = "InvalidInput"
        store.proxy.add_fault(azure_error(single_delete_of(store, BAD), 400, refusal, times=100))

    results = delete(store, KEYS)

    expected = [Outcome.FAILED if key == BAD else Outcome.DELETED for key in KEYS]
    assert [r.outcome for r in results] == expected
    failed = results[KEYS.index(BAD)]
    assert repr(store.full_key(BAD)) in failed.error and refusal in failed.error
    assert [key for key in KEYS if store.exists(key)] == [BAD]


#: A store's 404 to a key deleted alone, by what is gone: (S3's code, Azure's code).
NOT_FOUND = {
    "object": ("NoSuchKey", "BlobNotFound"),
    "bucket": ("NoSuchBucket", "ContainerNotFound"),
}


@pytest.mark.parametrize("gone", list(NOT_FOUND))
def test_a_404_to_a_key_alone_is_missing_only_when_its_object_is_gone(object_store, gone):
    # The object gone (an S3-compatible store's NoSuchKey; S3 itself answers 204, and
    # Azure's BlobNotFound) counts as already deleted; the bucket or container gone is a
    # failure: the key stays pending.
    store = object_store
    for key in KEYS:
        store.put(key, b"x")
    reject_batches_holding(store, BAD)
    s3_code, azure_code = NOT_FOUND[gone]
    if store.url.startswith("s3://"):
        code = s3_code
        store.proxy.add_fault(s3_error(single_delete_of(store, BAD), 404, code, "Not Found", 100))
    else:
        code = azure_code
        store.proxy.add_fault(azure_error(single_delete_of(store, BAD), 404, code, times=100))

    results = delete(store, KEYS)

    outcome = Outcome.MISSING if gone == "object" else Outcome.FAILED
    assert [r.outcome for r in results] == [outcome if k == BAD else Outcome.DELETED for k in KEYS]
    if gone == "bucket":
        error = results[KEYS.index(BAD)].error
        assert repr(store.full_key(BAD)) in error and code in error, error
    assert [key for key in KEYS if store.exists(key)] == [BAD]


@pytest.mark.parametrize("failure", ["unknown-code", "hang-up"])
def test_a_key_alone_that_fails_otherwise_fails_by_name_and_the_others_go(object_store, failure):
    # An error code the SDK does not know (a plain string, not its enum) is still named;
    # a connection that hangs up (after the SDK's retries) fails the key, not the call.
    store = object_store
    for key in KEYS:
        store.put(key, b"x")
    reject_batches_holding(store, BAD)
    alone = single_delete_of(store, BAD)
    if failure == "hang-up":
        fault = Fault(alone, None, hang_up=True, times=100)
    elif store.url.startswith("s3://"):
        fault = s3_error(alone, 409, "SomeNewConflict", "Held by another writer", times=100)
    else:
        fault = azure_error(alone, 409, "SomeNewConflict", times=100)
    store.proxy.add_fault(fault)

    results = delete(store, KEYS, max_attempts=2)

    assert [r.outcome for r in results] == [
        Outcome.FAILED if k == BAD else Outcome.DELETED for k in KEYS
    ]
    error = results[KEYS.index(BAD)].error
    assert repr(store.full_key(BAD)) in error
    if failure == "unknown-code":  # and S3's message (Azure's SDK gives its own)
        assert "SomeNewConflict" in error, error
        assert "Held by another writer" in error or not store.url.startswith("s3://"), error
    assert [key for key in KEYS if store.exists(key)] == [BAD]


@pytest.mark.parametrize("alone", [False, True], ids=["in-a-batch", "alone"])
def test_azure_deletes_a_blob_with_its_snapshots(azure_store, alone):
    # A blob snapshot holds the same expired bytes; Azure refuses to delete a blob that
    # has snapshots unless they go with it (409 SnapshotsPresent).
    store = azure_store
    for key in KEYS:
        store.put(key, b"x")
    store.container.get_blob_client(store.full_key(BAD)).create_snapshot()
    if alone:
        reject_batches_holding(store, BAD)

    results = delete(store, KEYS)

    assert [r.outcome for r in results] == [Outcome.DELETED] * len(KEYS)
    assert list(store.container.list_blobs(include=["snapshots"])) == []
    assert len(store.proxy.requests(is_single_delete)) == alone


def test_every_key_the_store_rejects_in_a_batch_is_found(object_store):
    store = object_store
    keys = [f"m/{n:02d}.pdf" for n in range(20)]
    bad = [keys[0], keys[7], keys[8], keys[19]]
    for key in keys:
        store.put(key, b"x")
    for key in bad:
        reject_batches_holding(store, key)

    results = delete(store, keys)

    assert all(r.outcome is Outcome.DELETED for r in results)
    assert not any(store.exists(key) for key in keys)
    singles = store.proxy.requests(is_single_delete)
    assert sorted(s.path.rsplit("/", 1)[1] for s in singles) == sorted(
        k.rsplit("/", 1)[1] for k in bad
    )
    # Each bad key costs at most two batches per halving: 2 * 4 * ceil(log2(20)) + 1.
    assert len(store.proxy.requests(is_batch)) <= 2 * len(bad) * 5 + 1


def whole_store_failures() -> list[tuple[str, Callable[[Store], list[Fault]]]]:
    """Failures of the store or the connection: none of them says anything about a key."""

    def s3_or_azure(s3: tuple[int, str], azure: tuple[int, str]) -> Callable[[Store], list]:
        def faults(store: Store) -> list[Fault]:
            if store.url.startswith("s3://"):
                return [s3_error(is_batch, *s3, "refused", times=100)]
            return [azure_error(is_batch, *azure, times=100)]

        return faults

    return [
        ("throttled", s3_or_azure((503, "SlowDown"), (503, "ServerBusy"))),
        ("server-error", s3_or_azure((500, "InternalError"), (500, "InternalError"))),
        ("forbidden", s3_or_azure((403, "AccessDenied"), (403, "AuthorizationFailure"))),
        ("expired-token", s3_or_azure((400, "ExpiredToken"), (403, "AuthenticationFailed"))),
        ("no-bucket", s3_or_azure((404, "NoSuchBucket"), (404, "ContainerNotFound"))),
        ("hang-up", lambda store: [Fault(is_batch, None, hang_up=True, times=100)]),
    ]


@pytest.mark.parametrize(
    "failure", [f for _, f in whole_store_failures()], ids=[n for n, _ in whole_store_failures()]
)
def test_a_store_or_connection_failure_is_never_split(object_store, failure):
    store = object_store
    for key in KEYS:
        store.put(key, b"x")
    for fault in failure(store):
        store.proxy.add_fault(fault)

    results = delete(store, KEYS, max_attempts=2)

    assert [r.outcome for r in results] == [Outcome.FAILED] * len(KEYS)
    assert all(repr(store.full_key(k)) in r.error for k, r in zip(KEYS, results, strict=True))
    assert all(store.exists(key) for key in KEYS)
    batches = store.proxy.requests(is_batch)
    assert 1 <= len(batches) <= 2  # the SDK's own attempts, nothing more
    assert all(len(batch_keys(store, b)) == len(KEYS) for b in batches)
    assert store.proxy.requests(is_single_delete) == []


@pytest.mark.parametrize("status", list(NO_BATCHES))
def test_a_store_without_batch_deletes_is_asked_once_and_gets_single_deletes(object_store, status):
    store = object_store
    first, later = KEYS[:5], KEYS[5:]
    for key in KEYS:
        store.put(key, b"x")
    store.refuse_batches(status)
    backend = store.open(parallel_batches=3)
    try:
        before = backend.delete_requests
        results = backend.delete_many(first) + backend.delete_many(later)
        after = backend.delete_requests
    finally:
        backend.close()

    assert [r.outcome for r in results] == [Outcome.DELETED] * len(KEYS)
    assert not any(store.exists(key) for key in KEYS)
    [batch] = store.proxy.requests(is_batch)  # the first call's only; none in the second
    assert sorted(batch_keys(store, batch)) == sorted(store.full_key(k) for k in first)
    singles = store.proxy.requests(is_single_delete)
    assert sorted(s.path.rsplit("/", 1)[1] for s in singles) == sorted(
        k.rsplit("/", 1)[1] for k in KEYS
    )
    assert 1 <= store.proxy.max_in_flight <= 3  # parallel_batches bounds the singles too
    assert (before, after.split(" ", 1)[0]) == ("batch", "single")
    assert str(status) in after


@pytest.mark.parametrize("kind", list(PASSING))
def test_a_key_a_batch_answer_fails_with_a_passing_error_is_sent_again(object_store, kind):
    store = object_store
    for key in KEYS:
        store.put(key, b"x")
    store.fail_in_batches(BAD, kind, times=1)

    results = delete(store, KEYS)

    assert [r.outcome for r in results] == [Outcome.DELETED] * len(KEYS)
    assert not any(store.exists(key) for key in KEYS)
    sent = [batch_keys(store, s) for s in store.proxy.requests(is_batch)]
    assert sent == [[store.full_key(k) for k in KEYS], [store.full_key(BAD)]]
    assert store.proxy.requests(is_single_delete) == []


@pytest.mark.parametrize("kind", list(PASSING))
def test_a_key_failing_on_every_try_fails_after_max_attempts(object_store, kind):
    store = object_store
    for key in KEYS:
        store.put(key, b"x")
    store.fail_in_batches(BAD, kind, times=1_000)

    results = delete(store, KEYS, max_attempts=3)

    expected = [Outcome.FAILED if key == BAD else Outcome.DELETED for key in KEYS]
    assert [r.outcome for r in results] == expected
    error = results[KEYS.index(BAD)].error
    code = PASSING[kind][0] if store.url.startswith("s3://") else PASSING[kind][2]
    assert repr(store.full_key(BAD)) in error and code in error, error
    assert error.endswith("(tried 3 times)"), error
    assert [key for key in KEYS if store.exists(key)] == [BAD]
    carrying = [s for s in store.proxy.requests(is_batch) if holding(store, BAD)(s)]
    assert len(carrying) == 3


def test_a_key_failing_for_good_in_a_batch_answer_is_tried_once(object_store):
    store = object_store
    for key in KEYS:
        store.put(key, b"x")
    store.refuse_deleting(BAD)  # S3 AccessDenied, an Azure 412 for a leased blob

    results = delete(store, KEYS, max_attempts=3)

    assert results[KEYS.index(BAD)].outcome is Outcome.FAILED
    assert "tried" not in results[KEYS.index(BAD)].error
    assert len(store.proxy.requests(is_batch)) == 1


XML_UNSAFE = ["x/b\x01.pdf", "x/c\r.pdf", "x/d\ufffe.pdf", "x/e\x1f.pdf"]


@pytest.mark.parametrize(
    "code, outcome, keys",
    [("NoSuchKey", Outcome.MISSING, KEYS), ("AccessDenied", Outcome.FAILED, [BAD])],
    ids=["missing", "failed-alone-in-its-batch"],
)
def test_s3_per_key_errors_decide_each_key(s3_store, code, outcome, keys):
    # An <Error> entry in a DeleteObjects answer: NoSuchKey (an S3-compatible store's way
    # to say the object was gone) counts as gone, a code that is not passing fails that key
    # with the store's code and message, tried once. In the second case the answer lists no
    # key as deleted. (Passing codes: test_per_key_passing_errors.py.)
    store = s3_store
    for key in keys:
        store.put(key, b"x")
    rewrite = s3_result_as_error(store.full_key(BAD), code, "As the store says")
    store.proxy.add_fault(Fault(is_batch, None, rewrite=rewrite, times=1))

    results = delete(store, keys)

    assert [r.outcome for r in results] == [outcome if k == BAD else Outcome.DELETED for k in keys]
    if outcome is Outcome.FAILED:
        error = results[keys.index(BAD)].error
        assert f"{store.full_key(BAD)!r}: {code} As the store says" == error


def test_s3_keys_xml_cannot_carry_go_by_delete_object(s3_store):
    store = s3_store
    keys = ["x/a.pdf", *XML_UNSAFE, "x/z\t.pdf"]
    for key in keys:
        store.put(key, b"x")

    results = delete(store, keys)

    assert [r.outcome for r in results] == [Outcome.DELETED] * len(keys)
    assert store.all_keys() == set()
    [batch] = store.proxy.requests(is_batch)
    assert batch.s3_delete_keys() == [store.full_key("x/a.pdf"), store.full_key("x/z\t.pdf")]
    singles = store.proxy.requests(is_single_delete)
    assert sorted(s.path for s in singles) == sorted(
        f"/{store.bucket}/{store.full_key(k)}" for k in XML_UNSAFE
    )


def test_azure_batches_carry_any_name_it_allows_and_refuse_control_characters(azure_store):
    # A Blob Batch carries every name percent-encoded, so no allowed name needs to go alone;
    # Azure's naming rules allow no control character, so those keys are refused, unsent.
    store = azure_store
    keys = ["x/a.pdf", "x/d\ufffe.pdf", "x/sp ace #%?.pdf", "x/\u00e9t\u00e9.pdf"]
    control = ["x/b\x01.pdf", "x/c\r.pdf", "x/e\x1f.pdf"]
    for key in keys + control:
        store.put(key, b"x")

    results = delete(store, keys + control)

    assert [r.outcome for r in results] == [Outcome.DELETED] * len(keys) + [Outcome.REFUSED] * len(
        control
    )
    assert all("control character" in r.error for r in results[len(keys) :])
    assert not any(store.exists(key) for key in keys)
    assert all(store.exists(key) for key in control)
    [batch] = store.proxy.requests(is_batch)
    assert batch_keys(store, batch) == [store.full_key(k) for k in keys]
    assert store.proxy.requests(is_single_delete) == []


def test_a_key_that_is_not_valid_unicode_is_refused_and_never_sent(object_store):
    store = object_store
    store.put("u/a.pdf", b"x")
    store.put("u/c.pdf", b"x")
    bad = "u/b\ud800.pdf"

    results = delete(store, ["u/a.pdf", bad, "u/c.pdf"])
    backend = store.open()
    try:
        sizes = backend.sizes([bad])
    finally:
        backend.close()

    assert [r.outcome for r in results] == [Outcome.DELETED, Outcome.REFUSED, Outcome.DELETED]
    assert repr(bad) in results[1].error
    assert not store.exists("u/a.pdf") and not store.exists("u/c.pdf")
    [batch] = store.proxy.requests(is_batch)
    assert batch_keys(store, batch) == [store.full_key("u/a.pdf"), store.full_key("u/c.pdf")]
    assert sizes == {bad: None}


def test_an_unreadable_azure_batch_answer_fails_each_key(azure_store):
    store = azure_store
    for key in KEYS[:3]:
        store.put(key, b"x")
    store.proxy.add_fault(
        Fault(is_batch, 202, b"not a batch answer", {"Content-Type": "text/plain"})
    )

    results = delete(store, KEYS[:3])

    assert [r.outcome for r in results] == [Outcome.FAILED] * 3
    assert all("unreadable" in r.error for r in results)
    assert store.proxy.requests(is_single_delete) == []


@pytest.mark.unit
@pytest.mark.integration  # also run with the rest of this file's tier
@pytest.mark.parametrize("bad", ["a/2\ud800.pdf", "a\ud800/2.pdf"], ids=["file", "folder"])
def test_a_file_name_the_os_cannot_encode_never_stops_the_slice(tmp_path, bad):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    for name in ("1.pdf", "3.pdf"):
        (root / "a" / name).write_bytes(b"x")
    keys = ["a/1.pdf", bad, "a/3.pdf"]
    backend = FilesystemBackend(str(root), workers=1)  # one slice holds all three keys
    try:
        sizes = backend.sizes(keys)
        results = backend.delete_many(keys)
    finally:
        backend.close()

    assert sizes == {"a/1.pdf": 1, bad: None, "a/3.pdf": 1}
    assert [r.outcome for r in results] == [Outcome.DELETED, Outcome.REFUSED, Outcome.DELETED]
    assert repr(bad) in results[1].error
    assert not (root / "a" / "1.pdf").exists() and not (root / "a" / "3.pdf").exists()
