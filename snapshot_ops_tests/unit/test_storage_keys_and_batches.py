"""The key checks and the batch shape every object store shares (storage/base.py).

`check_key` refuses each kind of unsafe key with a reason that names the kind. The shared
`delete_in_batches` is driven here over real files (a filesystem backend plays the store that
answers per name) and a real thread pool: each key gets one result in the order given,
duplicates are sent once, no batch exceeds its size, and a refused key is reported with its
reason and never sent. A batch the store rejects as a whole is halved down to the one name it
cannot carry, which goes by the single-object delete; names `batchable` excludes go alone
from the start. A store that takes no batch requests (BatchUnsupported) gets one, the first
answer of a `BatchSupport` shared by calls and threads, and every name by the single-object
delete, on the pool; while nothing is known the first batch goes alone, afterwards batches
go out together. A name a batch answer fails on its own (a KeyFailure) is sent again after
the longest wait `KeyRetry.after` gives for its round, at most `attempts` tries, and its
error says how many. `refused_by` and the default `StorageBackend.refusals` report exactly the
keys check_key refuses, each with its reason. The object stores' own use of it is covered
against moto's S3 server and Azurite in test_storage_contract.py.
"""

from __future__ import annotations

import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from snapshot_ops.storage import Outcome, RefusedKey, check_key
from snapshot_ops.storage.base import (
    BatchRejected,
    BatchSupport,
    BatchUnsupported,
    DeleteResult,
    KeyFailure,
    KeyRetry,
    StorageBackend,
    all_failed,
    chunked,
    delete_in_batches,
    prefixed,
    refused_by,
)
from snapshot_ops.storage.filesystem import FilesystemBackend


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


REJECTED = "MalformedXML: the request carried p/6.pdf"


def recording(backend, poison: str = ""):
    """`delete_batch` and `delete_one` over the backend's real files, each recording what it
    was sent; a batch request carrying `poison` (even alone) is rejected as a whole."""
    batches: list[list[str]] = []
    alone: list[str] = []

    def delete_batch(names: list[str]):
        batches.append(list(names))
        if poison in names:
            raise BatchRejected(REJECTED)
        return {result.key: result for result in backend.delete_many(names)}

    def delete_one(name: str):
        alone.append(name)
        return backend.delete_many([name])[0]

    return batches, alone, delete_batch, delete_one


def delete_under_p(keys, delete_batch, delete_one, *, batch_size: int, workers: int, **options):
    """`delete_in_batches` of `keys` as the names `p/<key>`, on a real pool of `workers`
    threads; `options`: its other keyword arguments."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return delete_in_batches(
            keys,
            name_of=lambda key: f"p/{check_key(key)}",
            batch_size=batch_size,
            pool=pool,
            delete_batch=delete_batch,
            delete_one=delete_one,
            **options,
        )


def test_delete_in_batches_answers_each_key_in_order_sending_each_name_once(store):
    root, backend = store
    sent, alone, delete_batch, delete_one = recording(backend)
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
    results = delete_under_p(keys, delete_batch, delete_one, batch_size=2, workers=2)

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
    assert results[8].error == "storage key 'p/folder.pdf' is a folder"
    assert all(r.error is None for r in results if r.outcome is not Outcome.REFUSED)
    assert alone == []  # every name fits in a batch
    assert all(len(batch) <= 2 for batch in sent)
    names = sorted(name for batch in sent for name in batch)
    assert names == sorted(
        f"p/{n}" for n in ("1.pdf", "2.pdf", "3.pdf", "4.pdf", "5.pdf", "gone.pdf", "folder.pdf")
    )
    assert sorted(p.name for p in (root / "p").iterdir()) == ["folder.pdf", "keep.pdf"]


def test_a_rejected_batch_is_halved_down_to_the_one_name_which_goes_alone(store, caplog):
    root, backend = store
    for n in (6, 7, 8):
        (root / "p" / f"{n}.pdf").write_bytes(b"data")
    batches, alone, delete_batch, delete_one = recording(backend, poison="p/6.pdf")
    keys = [f"{n}.pdf" for n in range(1, 9)]
    with caplog.at_level(logging.WARNING):
        results = delete_under_p(keys, delete_batch, delete_one, batch_size=8, workers=1)

    assert [(r.key, r.outcome) for r in results] == [(k, Outcome.DELETED) for k in keys]
    assert sorted(p.name for p in (root / "p").iterdir()) == ["folder.pdf", "keep.pdf"]
    # Each rejected batch is split in two equal halves, the first half first; only the name
    # rejected even alone goes by the single-object delete.
    p = [f"p/{n}.pdf" for n in range(1, 9)]
    assert batches == [p, p[:4], p[4:], p[4:6], p[4:5], p[5:6], p[6:]]
    assert alone == ["p/6.pdf"]
    # The warnings say what was rejected and why, naming the one name that went alone.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4
    assert all(REJECTED in w for w in warnings)
    assert [re.search(r"batch of (\d+)", w).group(1) for w in warnings[:3]] == ["8", "4", "2"]
    assert "batch of one" in warnings[3]
    assert "'p/6.pdf'" in warnings[3]


def test_names_a_batch_cannot_carry_go_alone_and_never_in_a_batch(store):
    root, backend = store
    unbatchable = {"p/2.pdf", "p/4.pdf"}
    batches, alone, delete_batch, delete_one = recording(backend)
    keys = ["1.pdf", "2.pdf", "3.pdf", "4.pdf", "5.pdf", "2.pdf"]
    results = delete_under_p(
        keys,
        delete_batch,
        delete_one,
        batch_size=2,
        workers=2,
        batchable=lambda name: name not in unbatchable,
    )

    assert [(r.key, r.outcome) for r in results] == [(k, Outcome.DELETED) for k in keys]
    assert sorted(p.name for p in (root / "p").iterdir()) == ["folder.pdf", "keep.pdf"]
    assert sorted(map(sorted, batches)) == [["p/1.pdf", "p/3.pdf"], ["p/5.pdf"]]
    assert sorted(alone) == ["p/2.pdf", "p/4.pdf"]  # each once, though 2.pdf is listed twice

    # Only such names, before the store ever answered a batch: nothing waits for one.
    (root / "p" / "2.pdf").write_bytes(b"data")
    support = BatchSupport()
    [result] = delete_under_p(
        ["2.pdf"],
        delete_batch,
        delete_one,
        batch_size=2,
        workers=2,
        batchable=lambda name: name not in unbatchable,
        support=support,
    )
    assert result.outcome is Outcome.DELETED
    assert alone[-1] == "p/2.pdf" and not support.answered.is_set()


def test_refused_by_maps_only_the_refused_keys_to_their_reasons():
    keys = ["a/1.pdf", "/abs.pdf", "b/2.pdf", "a/../x.pdf"]
    seen: list[str] = []

    def check(key: str):
        seen.append(key)
        return check_key(key)

    assert refused_by(check, keys) == {
        "/abs.pdf": "storage key is absolute: '/abs.pdf'",
        "a/../x.pdf": "storage key has an empty, '.' or '..' segment: 'a/../x.pdf'",
    }
    assert seen == keys
    assert refused_by(check_key, ["a/1.pdf"]) == {}


def test_the_default_refusals_apply_the_shared_key_checks_only(store):
    _, backend = store
    keys = ["p/1.pdf", "../x.pdf", "p/folder.pdf", "p/gone.pdf"]
    # The base class's answer (what a backend without its own rules gives): check_key alone.
    assert StorageBackend.refusals(backend, keys) == {
        "../x.pdf": "storage key has an empty, '.' or '..' segment: '../x.pdf'"
    }
    # The filesystem backend adds its own rule on top: a folder is not a file it deletes.
    assert set(backend.refusals(keys)) == {"../x.pdf", "p/folder.pdf"}


def test_a_batch_failed_as_a_whole_fails_each_of_its_names_and_warns_once(caplog):
    with caplog.at_level(logging.WARNING, logger="snapshot_ops.storage.base"):
        results = all_failed(["a/1.pdf", "b/2.pdf"], "503 SlowDown after 5 attempts")

    assert results == {
        "a/1.pdf": DeleteResult(
            "a/1.pdf", Outcome.FAILED, "'a/1.pdf': 503 SlowDown after 5 attempts"
        ),
        "b/2.pdf": DeleteResult(
            "b/2.pdf", Outcome.FAILED, "'b/2.pdf': 503 SlowDown after 5 attempts"
        ),
    }
    assert [r.getMessage() for r in caplog.records] == [
        "503 SlowDown after 5 attempts (2 keys stay pending)"
    ]


@pytest.mark.parametrize(
    ("root", "prefix", "expected"),
    [
        ("", "", ""),
        ("tenant", "", "tenant"),
        ("", "ab", "ab"),
        ("tenant", "ab/cd", "tenant/ab/cd"),
    ],
)
def test_the_object_name_prefix_joins_root_and_a_checked_prefix(root, prefix, expected):
    assert prefixed(root, prefix) == expected


@pytest.mark.parametrize("root", ["", "tenant"])
def test_an_unsafe_prefix_is_refused_under_any_root(root):
    with pytest.raises(RefusedKey):
        prefixed(root, "../other")


# -- a store without batch deletes -------------------------------------------------------------

UNSUPPORTED = "DeleteObjects answered 405 MethodNotAllowed"


def refusing(backend):
    """`delete_batch` of a store without batch requests (recording each, deleting nothing)
    and `delete_one` over the backend's real files (recording each)."""
    batches: list[list[str]] = []
    alone: list[str] = []
    lock = threading.Lock()

    def delete_batch(names: list[str]):
        with lock:
            batches.append(list(names))
        raise BatchUnsupported(UNSUPPORTED)

    def delete_one(name: str):
        with lock:
            alone.append(name)
        return backend.delete_many([name])[0]

    return batches, alone, delete_batch, delete_one


def test_a_store_without_batch_deletes_gets_one_batch_request_and_single_deletes(store, caplog):
    root, backend = store
    batches, alone, delete_batch, delete_one = refusing(backend)
    support = BatchSupport()
    with caplog.at_level(logging.WARNING):
        first = delete_under_p(
            ["1.pdf", "2.pdf", "3.pdf", "gone.pdf", "4.pdf"],
            delete_batch,
            delete_one,
            batch_size=2,
            workers=2,
            support=support,
        )
        later = delete_under_p(
            ["5.pdf"], delete_batch, delete_one, batch_size=2, workers=2, support=support
        )

    assert [r.outcome for r in first + later] == [
        Outcome.DELETED,
        Outcome.DELETED,
        Outcome.DELETED,
        Outcome.MISSING,
        Outcome.DELETED,
        Outcome.DELETED,
    ]
    assert batches == [["p/1.pdf", "p/2.pdf"]]  # the first only, in neither call again
    assert sorted(alone) == [f"p/{n}" for n in ("1.pdf", "2.pdf", "3.pdf", "4.pdf", "5.pdf")] + [
        "p/gone.pdf"
    ]
    assert sorted(p.name for p in (root / "p").iterdir()) == ["folder.pdf", "keep.pdf"]
    assert (support.answered.is_set(), support.refusal) == (True, UNSUPPORTED)
    assert support.describe() == f"single ({UNSUPPORTED})"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{UNSUPPORTED}: the store takes no batch deletes; every key goes by a single-object "
        "delete from now on"
    ]


def test_single_deletes_go_out_on_the_pool_at_once(store):
    _, backend = store
    batches, alone, delete_batch, _ = refusing(backend)
    together = threading.Barrier(3, timeout=10)  # broken unless three are in flight at once

    def delete_one(name: str):
        alone.append(name)
        together.wait()
        return backend.delete_many([name])[0]

    results = delete_under_p(
        ["1.pdf", "2.pdf", "3.pdf"], delete_batch, delete_one, batch_size=3, workers=3
    )

    assert [r.outcome for r in results] == [Outcome.DELETED] * 3
    assert len(batches) == 1 and sorted(alone) == ["p/1.pdf", "p/2.pdf", "p/3.pdf"]


def test_calls_at_once_ask_a_store_without_batch_deletes_one_batch_in_all(store):
    _, backend = store
    batches, alone, delete_batch, delete_one = refusing(backend)
    support = BatchSupport()
    outcomes: dict[str, list[Outcome]] = {}
    start = threading.Barrier(2, timeout=10)

    def call(keys: list[str]) -> None:
        start.wait()
        results = delete_under_p(
            keys, delete_batch, delete_one, batch_size=1, workers=2, support=support
        )
        outcomes[keys[0]] = [r.outcome for r in results]

    threads = [
        threading.Thread(target=call, args=(keys,)) for keys in (["1.pdf", "2.pdf"], ["3.pdf"])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes == {"1.pdf": [Outcome.DELETED] * 2, "3.pdf": [Outcome.DELETED]}
    assert len(batches) == 1
    assert sorted(alone) == ["p/1.pdf", "p/2.pdf", "p/3.pdf"]


def test_a_store_that_stops_taking_batches_gets_no_more_of_them(store):
    # Its first answer took batches (so they go out without waiting); a later batch is
    # refused: that batch's names and every later batch's go alone.
    _, backend = store
    _, alone, _, delete_one = refusing(backend)
    sent: list[list[str]] = []

    def delete_batch(names: list[str]):
        sent.append(list(names))
        if len(sent) > 1:
            raise BatchUnsupported(UNSUPPORTED)
        return {result.key: result for result in backend.delete_many(names)}

    support = BatchSupport()
    delete_under_p(["1.pdf"], delete_batch, delete_one, batch_size=1, workers=1, support=support)
    assert (support.answered.is_set(), support.refusal) == (True, None)
    assert support.describe() == "batch"
    results = delete_under_p(
        ["2.pdf", "3.pdf", "4.pdf"],
        delete_batch,
        delete_one,
        batch_size=1,
        workers=1,
        support=support,
    )

    assert [r.outcome for r in results] == [Outcome.DELETED] * 3
    assert sent == [["p/1.pdf"], ["p/2.pdf"]]
    assert alone == ["p/2.pdf", "p/3.pdf", "p/4.pdf"]
    assert support.refusal == UNSUPPORTED


def test_the_first_batch_goes_alone_then_batches_go_out_together(store):
    root, backend = store
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def recorded(names: list[str]):
        with lock:
            events.append(("start", names[0]))
        answer = {result.key: result for result in backend.delete_many(names)}
        with lock:
            events.append(("end", names[0]))
        return answer

    support = BatchSupport()
    delete_under_p(
        ["1.pdf", "2.pdf", "3.pdf"],
        recorded,
        lambda name: pytest.fail(f"{name} sent alone"),
        batch_size=1,
        workers=3,
        support=support,
    )
    # Until the store answered the first batch, nothing else went out.
    assert events[:2] == [("start", "p/1.pdf"), ("end", "p/1.pdf")]
    assert sorted(events[2:]) == sorted(
        [("start", "p/2.pdf"), ("end", "p/2.pdf"), ("start", "p/3.pdf"), ("end", "p/3.pdf")]
    )

    together = threading.Barrier(2, timeout=10)  # broken unless both are in flight at once

    def parallel(names: list[str]):
        together.wait()
        return {result.key: result for result in backend.delete_many(names)}

    results = delete_under_p(
        ["4.pdf", "5.pdf"],
        parallel,
        lambda name: pytest.fail(f"{name} sent alone"),
        batch_size=1,
        workers=2,
        support=support,
    )
    assert [r.outcome for r in results] == [Outcome.DELETED] * 2
    assert sorted(p.name for p in (root / "p").iterdir()) == ["folder.pdf", "keep.pdf"]


# -- keys a batch answer fails with a passing error ------------------------------------------


def flaky(backend, failing: dict[str, int], code: str = "SlowDown"):
    """`delete_batch` over the backend's real files whose answer fails each name of
    `failing` on its own, with `code`, as many times as it says (then deletes it); and the
    batches it was sent."""
    batches: list[list[str]] = []

    def delete_batch(names: list[str]):
        batches.append(list(names))
        answer = {}
        for name in names:
            if failing.get(name, 0) > 0:
                failing[name] -= 1
                answer[name] = DeleteResult(
                    name, Outcome.FAILED, f"{name!r}: {code} try again", KeyFailure(code)
                )
        rest = [name for name in names if name not in answer]
        answer.update((r.key, r) for r in backend.delete_many(rest))
        return answer

    return batches, delete_batch


def retry_rule(waits: list[float], attempts: int = 3) -> KeyRetry:
    """Passing: SlowDown (0.5 s times the try), InternalError (0.1 s); waits are recorded."""
    delays = {"SlowDown": 0.5, "InternalError": 0.1}

    def after(failure: KeyFailure, attempt: int) -> float | None:
        delay = delays.get(failure.code)
        return None if delay is None else delay * attempt

    return KeyRetry(attempts=attempts, after=after, sleep=waits.append)


def no_single(name: str):
    pytest.fail(f"{name} sent alone")


def test_a_name_failed_with_a_passing_error_is_sent_again_and_goes(store, caplog):
    root, backend = store
    batches, delete_batch = flaky(backend, {"p/2.pdf": 1, "p/4.pdf": 2})
    waits: list[float] = []
    keys = ["1.pdf", "2.pdf", "3.pdf", "4.pdf"]

    with caplog.at_level(logging.WARNING, logger="snapshot_ops.storage.base"):
        results = delete_under_p(
            keys, delete_batch, no_single, batch_size=4, workers=1, retry=retry_rule(waits)
        )

    assert [r.getMessage() for r in caplog.records] == [
        "2 keys failed with a passing error (e.g. 'p/2.pdf': SlowDown try again); sending "
        "them again in 0.50 s",
        "1 keys failed with a passing error (e.g. 'p/4.pdf': SlowDown try again); sending "
        "them again in 1.00 s",
    ]
    assert [(r.outcome, r.error, r.failure) for r in results] == [(Outcome.DELETED, None, None)] * 4
    assert batches == [[f"p/{k}" for k in keys], ["p/2.pdf", "p/4.pdf"], ["p/4.pdf"]]
    assert waits == [0.5, 1.0]  # after the first and the second try
    assert sorted(p.name for p in (root / "p").iterdir()) == ["5.pdf", "folder.pdf", "keep.pdf"]


def test_a_round_waits_as_long_as_its_longest_wait(store):
    _, backend = store
    failing = {"p/1.pdf": 1, "p/2.pdf": 1}
    batches: list[list[str]] = []
    codes = {"p/1.pdf": "InternalError", "p/2.pdf": "SlowDown"}

    def delete_batch(names: list[str]):
        batches.append(list(names))
        answer = {}
        for name in names:
            if failing.get(name, 0) > 0:
                failing[name] -= 1
                code = codes[name]
                answer[name] = DeleteResult(name, Outcome.FAILED, code, KeyFailure(code))
        rest = [name for name in names if name not in answer]
        answer.update((r.key, r) for r in backend.delete_many(rest))
        return answer

    waits: list[float] = []
    results = delete_under_p(
        ["1.pdf", "2.pdf"],
        delete_batch,
        no_single,
        batch_size=2,
        workers=1,
        retry=retry_rule(waits),
    )

    assert [r.outcome for r in results] == [Outcome.DELETED] * 2
    assert waits == [0.5]
    assert batches == [["p/1.pdf", "p/2.pdf"], ["p/1.pdf", "p/2.pdf"]]


def test_a_name_failing_on_every_try_fails_after_the_attempts_saying_so(store):
    root, backend = store
    batches, delete_batch = flaky(backend, {"p/2.pdf": 100})
    waits: list[float] = []

    results = delete_under_p(
        ["1.pdf", "2.pdf", "2.pdf"],
        delete_batch,
        no_single,
        batch_size=4,
        workers=1,
        retry=retry_rule(waits, attempts=3),
    )

    assert [r.outcome for r in results] == [Outcome.DELETED, Outcome.FAILED, Outcome.FAILED]
    assert results[1].error == "'p/2.pdf': SlowDown try again (tried 3 times)"
    assert results[1] == results[2]  # the same name's result, for each of its keys
    assert results[1].failure == KeyFailure("SlowDown")
    assert batches == [["p/1.pdf", "p/2.pdf"], ["p/2.pdf"], ["p/2.pdf"]]
    assert waits == [0.5, 1.0]
    assert (root / "p" / "2.pdf").exists()


def test_the_attempts_bound_the_tries_whatever_the_rule_says(store):
    _, backend = store
    batches, delete_batch = flaky(backend, {"p/1.pdf": 100})
    waits: list[float] = []
    always = KeyRetry(attempts=2, after=lambda failure, attempt: 0.0, sleep=waits.append)

    [result] = delete_under_p(
        ["1.pdf"], delete_batch, no_single, batch_size=1, workers=1, retry=always
    )

    assert result.outcome is Outcome.FAILED and result.error.endswith("(tried 2 times)")
    assert batches == [["p/1.pdf"], ["p/1.pdf"]]
    assert waits == [0.0]


def test_a_failure_that_is_not_passing_is_tried_once(store):
    _, backend = store
    batches, delete_batch = flaky(backend, {"p/1.pdf": 1}, code="AccessDenied")
    waits: list[float] = []

    [result] = delete_under_p(
        ["1.pdf"], delete_batch, no_single, batch_size=1, workers=1, retry=retry_rule(waits)
    )

    assert (result.outcome, result.error) == (Outcome.FAILED, "'p/1.pdf': AccessDenied try again")
    assert batches == [["p/1.pdf"]] and waits == []


def test_without_a_retry_rule_a_passing_failure_is_tried_once(store):
    _, backend = store
    batches, delete_batch = flaky(backend, {"p/1.pdf": 1})

    [result] = delete_under_p(["1.pdf"], delete_batch, no_single, batch_size=1, workers=1)

    assert (result.outcome, result.error) == (Outcome.FAILED, "'p/1.pdf': SlowDown try again")
    assert batches == [["p/1.pdf"]]


def test_a_batch_failed_as_a_whole_is_not_sent_again(store):
    _, backend = store
    sent: list[list[str]] = []

    def delete_batch(names: list[str]):
        sent.append(list(names))
        return all_failed(names, "503 SlowDown after 3 attempts")

    waits: list[float] = []
    results = delete_under_p(
        ["1.pdf", "2.pdf"],
        delete_batch,
        no_single,
        batch_size=2,
        workers=1,
        retry=retry_rule(waits),
    )

    assert [r.outcome for r in results] == [Outcome.FAILED] * 2
    assert sent == [["p/1.pdf", "p/2.pdf"]] and waits == []
