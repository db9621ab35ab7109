"""What the object-store backends send: batch sizes, checksums, parallelism, retries.

Seen at the fault-injecting proxy in front of moto's S3 server and Azurite: DeleteObjects
carries at most 1,000 keys and a correct Content-MD5 and asks for the verbose answer, a
Blob Batch at most 256 deletes, no more batches run at once than configured, throttling is
retried by the SDK, a batch the store keeps failing leaves every key in it failed (to stay
pending) with its object, and a size the store refuses is unknown and logged with the
object and the store's answer.
"""

from __future__ import annotations

import pytest

from snapshot_ops.storage import Outcome
from snapshot_ops_tests.support.faultproxy import Fault, Seen, azure_error, s3_error
from snapshot_ops_tests.support.stores import AZURITE_KEY, TEST_AWS_SECRET


def s3_deletes(seen: Seen) -> bool:
    return seen.is_s3_delete_objects


def blob_batches(seen: Seen) -> bool:
    return seen.is_blob_batch


def test_s3_batches_hold_at_most_1000_keys_with_content_md5(s3_store):
    keys = [f"k/{i:05d}.pdf" for i in range(2_500)]
    for key in keys[:3]:
        store_key = key
        s3_store.put(store_key, b"x")
    backend = s3_store.open(parallel_batches=2)
    try:
        results = backend.delete_many(keys)
    finally:
        backend.close()

    assert all(r.gone for r in results) and len(results) == len(keys)
    requests = s3_store.proxy.requests(s3_deletes)
    assert sorted(len(r.s3_delete_keys()) for r in requests) == [500, 1000, 1000]
    assert all(r.content_md5_matches() for r in requests)
    # The verbose answer: a key counts as deleted only when the answer lists it. In quiet
    # mode S3 lists errors only (moto lists every key either way, so the request is read).
    assert all(b"<Quiet>false</Quiet>" in r.body for r in requests)
    assert sorted(k for r in requests for k in r.s3_delete_keys()) == [
        s3_store.full_key(k) for k in keys
    ]
    assert 1 <= s3_store.proxy.max_in_flight <= 2
    assert s3_store.all_keys() == set()


def test_azure_batches_hold_at_most_256_deletes(azure_store):
    keys = [f"k/{i:04d}.pdf" for i in range(600)]
    for key in keys[:3]:
        azure_store.put(key, b"x")
    backend = azure_store.open(parallel_batches=2)
    try:
        results = backend.delete_many(keys)
    finally:
        backend.close()

    assert [r.outcome for r in results[:3]] == [Outcome.DELETED] * 3
    assert {r.outcome for r in results[3:]} == {Outcome.MISSING}
    requests = azure_store.proxy.requests(blob_batches)
    assert sorted(r.blob_batch_deletes() for r in requests) == [88, 256, 256]
    assert 1 <= azure_store.proxy.max_in_flight <= 2
    assert azure_store.all_keys() == set()


def throttled(backend_name: str) -> Fault:
    """The store's throttling answer to one batch delete: S3's 503 SlowDown, Blob Storage's
    503 ServerBusy (both retryable by their SDKs' standard retry policies)."""
    if backend_name == "s3":
        return s3_error(s3_deletes, 503, "SlowDown", "Please reduce your request rate.")
    return azure_error(blob_batches, 503, "ServerBusy")


@pytest.mark.parametrize("backend_name", ["s3", "azure"])
def test_throttling_is_retried_by_the_sdk(request, backend_name):
    store = request.getfixturevalue(f"{backend_name}_store")
    store.put("t/1.pdf", b"x")
    fault = throttled(backend_name)
    store.proxy.add_fault(fault)
    backend = store.open()
    try:
        [result] = backend.delete_many(["t/1.pdf"])
    finally:
        backend.close()

    assert result.outcome is Outcome.DELETED
    assert len(store.proxy.requests(fault.match)) == 2
    assert not store.exists("t/1.pdf")


@pytest.mark.parametrize("backend_name", ["s3", "azure"])
def test_a_batch_that_keeps_failing_fails_each_key(request, backend_name):
    store = request.getfixturevalue(f"{backend_name}_store")
    keys = ["o/1.pdf", "o/2.pdf"]
    for key in keys:
        store.put(key, b"x")
    match = s3_deletes if backend_name == "s3" else blob_batches
    store.proxy.add_fault(Fault(match, 500, b"", times=100))
    backend = store.open(max_attempts=2)
    try:
        results = backend.delete_many(keys)
    finally:
        backend.close()

    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.FAILED]
    assert all(key in (r.error or "") for key, r in zip(keys, results, strict=True))
    assert len(store.proxy.requests(match)) == 2  # max_attempts, first one included
    assert all(store.exists(key) for key in keys)
    for r in results:  # the SDK's error text must not carry a secret
        assert TEST_AWS_SECRET not in (r.error or "") and AZURITE_KEY not in (r.error or "")


@pytest.mark.parametrize("backend_name", ["s3", "azure"])
def test_a_size_the_store_refuses_is_unknown_and_logged(request, backend_name, caplog):
    # e.g. a role without s3:GetObject: the run still deletes, with that object's bytes
    # unknown, and the warning names the object and the store's answer.
    store = request.getfixturevalue(f"{backend_name}_store")
    for key in ("z/a.pdf", "z/b.pdf"):
        store.put(key, b"xyz")
    denied = store.full_key("z/b.pdf")

    def head_of_denied(seen: Seen) -> bool:
        return seen.method == "HEAD" and seen.path.endswith("/" + denied)

    if backend_name == "s3":
        store.proxy.add_fault(s3_error(head_of_denied, 403, "AccessDenied", "denied", times=9))
        answer = "403"  # a HEAD answer has no body: botocore's code is the status
    else:
        store.proxy.add_fault(azure_error(head_of_denied, 403, "AuthorizationFailure", times=9))
        answer = "Operation returned an invalid status 'Forbidden'"
    backend = store.open()
    try:
        with caplog.at_level("WARNING", logger="snapshot_ops.storage"):
            sizes = backend.sizes(["z/a.pdf", "z/b.pdf"])
    finally:
        backend.close()

    assert sizes == {"z/a.pdf": 3, "z/b.pdf": None}
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("snapshot_ops.")]
    assert warnings == [f"size of {denied} unknown: {answer}"]
