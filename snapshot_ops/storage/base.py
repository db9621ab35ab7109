"""The storage interface every backend implements, and the key checks they share.

A backend deletes batches of keys and reports one outcome per key; it never raises for a
single key. Keys are checked before anything is sent: a key that could leave the storage
root (or the configured prefix) is refused and reported, never touched. `refusals` asks the
same question before a row is marked deleted, so a key the backend would refuse leaves its
row live instead of marked with an object that can never be deleted.

Every backend also says how its store resolves a key to an object (`key_matching`): whether
keys that differ only in case, or only in Unicode normalization, name one object. Every
comparison that decides whether two keys name the same object (is an object shared with a
live row, is it in a listing, is it a duplicate) goes through it.

The object stores share the way deletes are sent (`delete_in_batches`): batches, each key's
own result, a batch rejected because of one key halved down to that key, a store that takes
no batch requests at all served by single-object deletes from its first answer on
(`BatchSupport`), and keys a batch answer failed with a passing error sent again within the
call (`KeyRetry`).
"""

from __future__ import annotations

import enum
import logging
import re
import threading
import time
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from snapshot_ops.errors import SnapshotOpsError

log = logging.getLogger(__name__)


class RefusedKey(SnapshotOpsError):
    """A storage key that could reach outside the storage root; it is never used."""


class BatchRejected(SnapshotOpsError):
    """The store refused a whole batch request because of what it carried.

    Raised by a backend's batch call (never by `delete_many`) when the store answered, after
    the SDK's own retries, with an error about the request itself (e.g. S3 400 MalformedXML,
    Azure 400 InvalidInput): one key in it may be the cause, so `delete_in_batches` splits
    the batch. Failures of the store or the connection (throttling, 5xx, timeouts, refused
    credentials) are not this: they fail every key of the batch and are never split, so a
    store in trouble is not sent more requests.
    """


class BatchUnsupported(SnapshotOpsError):
    """The store does not take batch delete requests at all.

    Raised by a backend's batch call when the store answered that it does not implement the
    batch operation: 405 Method Not Allowed or 501 Not Implemented (some S3-compatible
    stores and gateways answer `DeleteObjects` so; neither is retried by the SDKs). Nothing
    was deleted; `delete_in_batches` then sends every key by the single-object delete, and
    no further batch request to the same store (`BatchSupport`).
    """


class Outcome(enum.Enum):
    DELETED = "deleted"  # the object existed and is gone now
    MISSING = "missing"  # not found: settled as already gone only with evidence (sentinel.py)
    REFUSED = "refused"  # the key could leave the root; nothing was touched
    FAILED = "failed"  # the store reported an error; the object may still exist


@dataclass(frozen=True)
class KeyFailure:
    """What a batch answer said about one key it failed on its own (not the whole request):
    the store's error code (S3 `<Code>`, Azure `x-ms-error-code`; "" when none) and the
    HTTP status, where the answer gives one per key (Azure's sub-responses; S3's `<Error>`
    entries carry none). A backend's `KeyRetry.after` reads it to decide whether the
    failure is passing (e.g. S3 `SlowDown`, an Azure 503) and the key worth sending again."""

    code: str
    status: int | None = None


@dataclass(frozen=True)
class DeleteResult:
    key: str
    outcome: Outcome
    error: str | None = None
    #: Set by a batch call for a key its answer failed on its own (see KeyFailure); None for
    #: every other result, e.g. a whole request that failed after the SDK's own retries.
    failure: KeyFailure | None = None

    @property
    def gone(self) -> bool:
        """True when the store answered that the object is not there (deleted now, or not
        found, which from a store that went away proves nothing: see snapshot_ops.sentinel)."""
        return self.outcome in (Outcome.DELETED, Outcome.MISSING)


@dataclass(frozen=True)
class KeyMatching:
    """How a store resolves a key to an object: which spellings of a key name one object.

    - Exact (`EXACT`, both False): only the very same string names the object. S3 and
      Azure Blob keys are exact (keys that differ only in case are different objects), and
      so are most Linux file systems.
    - `ignores_case`: a case-insensitive, case-preserving folder: NTFS, SMB/CIFS shares,
      APFS and HFS+ as formatted by default, ZFS with `casesensitivity=insensitive`, ext4
      and f2fs folders with the casefold attribute (`chattr +F`).
    - `ignores_normalization`: spellings that are canonically equivalent in Unicode (an
      "é" written as U+00E9, or as "e" + U+0301) name one object: APFS, HFS+, ZFS with
      `normalization` set, ext4/f2fs casefold folders.

    `fold(key)` maps every spelling the store may take for one name to one string. It folds
    *at least* as much as such file systems do, and on purpose sometimes more (keeping a
    file that could have been deleted is safe; deleting one that a live row names under
    another spelling is not): the case fold is Unicode's full lowercase, then uppercase
    (str.lower/str.upper), which gives one string for every spelling
    that uppercase, lowercase, titlecase, swapped case or full case folding (CaseFolding.txt,
    as ext4 and APFS use it) takes for the same name, e.g. "ß", "ẞ", "ss" and "SS", or
    "ı", "i" and "I"; NTFS's upcase table is one of these. With normalization too, the key
    is decomposed (NFD) first and composed (NFC) after, so that case mapping cannot split
    canonically equivalent spellings. The database compares keys with the same functions
    (snapshot_ops.db.engine.key_fold). Checked for every Unicode code point, and against a
    real NTFS volume, by the tests.
    """

    ignores_case: bool = False
    ignores_normalization: bool = False

    @property
    def exact(self) -> bool:
        """True when only the very same string names an object (no folding at all)."""
        return not (self.ignores_case or self.ignores_normalization)

    @property
    def name(self) -> str:
        """ "exact", "case", "normalization" or "case+normalization": what is ignored."""
        case = ["case"] if self.ignores_case else []
        normalization = ["normalization"] if self.ignores_normalization else []
        return "+".join(case + normalization) or "exact"

    def describe(self) -> str:
        """How names are resolved, in words for messages and run metadata."""
        if self.exact:
            return "exactly, case and Unicode normalization included"
        ignored = " and ".join(
            word
            for word, on in (
                ("case", self.ignores_case),
                ("Unicode normalization", self.ignores_normalization),
            )
            if on
        )
        return f"ignoring {ignored}"

    def covers(self, other: KeyMatching) -> bool:
        """Whether this folds everything `other` folds (so comparing this way is safe for a
        store that resolves names the `other` way)."""
        return (self.ignores_case or not other.ignores_case) and (
            self.ignores_normalization or not other.ignores_normalization
        )

    def fold(self, key: str) -> str:
        """The one string all spellings of `key` that name its object fold to (see the class)."""
        if self.ignores_case:
            if self.ignores_normalization:
                key = unicodedata.normalize("NFD", key)
            key = key.lower().upper()
        if self.ignores_normalization:
            key = unicodedata.normalize("NFC", key)
        return key


#: How object stores (S3, Azure Blob) resolve keys: the exact string, nothing folded.
EXACT = KeyMatching()


#: Segments of anything but NUL, slash or backslash, not "." or "..", joined by single
#: slashes: exactly the keys the checks below accept, matched in one step.
_SAFE_KEY = re.compile(r"(?!\.\.?(?:/|$))[^/\\\x00]+(?:/(?!\.\.?(?:/|$))[^/\\\x00]+)*")


def check_key(key: object) -> str:
    """Return `key` if it is a safe relative key, else raise RefusedKey saying why.

    Safe means: a non-empty string, no NUL byte, no backslash, not absolute, and no empty,
    `.` or `..` segment, so that joining it under a root can only name something inside it.
    """
    if isinstance(key, str) and _SAFE_KEY.fullmatch(key):
        return key  # the common case, in one regular expression
    if not isinstance(key, str) or key == "":
        raise RefusedKey("empty storage key")
    if "\x00" in key:
        raise RefusedKey(f"storage key contains a NUL byte: {key!r}")
    if "\\" in key:
        raise RefusedKey(f"storage key contains a backslash: {key!r}")
    if key.startswith("/"):
        raise RefusedKey(f"storage key is absolute: {key!r}")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise RefusedKey(f"storage key has an empty, '.' or '..' segment: {key!r}")
    return key


def refused_by(check: Callable[[str], object], keys: Iterable[str]) -> dict[str, str]:
    """`{key: reason}` for each of `keys` that `check` raises RefusedKey for."""
    refused: dict[str, str] = {}
    for key in keys:
        try:
            check(key)
        except RefusedKey as exc:
            refused[key] = str(exc)
    return refused


class StorageBackend(ABC):
    """Deletes, measures and lists objects named by keys relative to one root or prefix."""

    #: Shown in logs and run metadata; never contains credentials.
    description: str

    @property
    @abstractmethod
    def key_matching(self) -> KeyMatching:
        """How the store resolves keys to objects (see KeyMatching).

        Whether two rows share an object, whether a row's object is in a listing, and which
        keys of a batch are one object are all decided with it: a wrapper must pass on its
        inner backend's, never assume exact. A folder finds out by probing its file system
        (storage.filesystem); object stores are exact.
        """

    def refusals(self, keys: Sequence[str]) -> dict[str, str]:
        """The keys among `keys` that `delete_many` would refuse, each with the reason.

        Asked before rows are marked deleted (outside any database transaction), so a
        refused key's row stays live and is reported instead of being marked with an object
        that can never be deleted. A key whose object is missing is not refused (its row is
        settled as already missing, see snapshot_ops.sentinel). The answer is the state at
        the time of asking: `delete_many` checks again and may still refuse (e.g. a file
        replaced by a symlink in between). This default applies the shared key checks
        (`check_key`); backends add what their store cannot take. Never raises for a single
        key.
        """
        return refused_by(check_key, keys)

    @abstractmethod
    def delete_many(self, keys: Sequence[str]) -> list[DeleteResult]:
        """Delete `keys`, returning one result per key in the same order.

        Never raises for a single key: refused keys, missing objects and store errors are
        all reported as results, so one bad object cannot stop the others.
        """

    @property
    def delete_requests(self) -> str:
        """How deletes are sent, for run metadata: "batch", or "single" (one request per
        object: a folder's unlinks, or an object store that takes no batch requests, with
        its answer)."""
        return "single"

    @abstractmethod
    def sizes(self, keys: Sequence[str]) -> dict[str, int | None]:
        """Size in bytes of each key's object; None where it is missing or refused."""

    @abstractmethod
    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Every key under `prefix`, relative to the root (for reconciliation reports)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections or thread pools."""


@dataclass(frozen=True)
class KeyRetry:
    """How keys that a batch answer failed with a passing error are sent again in one call.

    `after(failure, attempt)` says how many seconds to wait before sending a key whose
    `attempt`-th try (1-based) failed with `failure`, or None when that failure is not
    passing (e.g. S3 `AccessDenied`, an Azure 412); each backend gives its SDK's own rule
    and backoff. A key is tried at most `attempts` times in all, the first included (the
    storage setting `max_attempts`). `sleep` waits (tests pass a recorder).
    """

    attempts: int = 1
    after: Callable[[KeyFailure, int], float | None] = lambda failure, attempt: None
    sleep: Callable[[float], None] = time.sleep


#: No key is sent twice in one call.
NO_RETRY = KeyRetry()


class BatchSupport:
    """Whether one store takes batch delete requests, learnt from its first answer.

    A backend keeps one for its lifetime (a run's, or a step process's) and passes it to
    every `delete_in_batches` call, from any thread: while nothing is known, one batch
    request goes out at a time; from the first answer on, either batches go out in
    parallel, or, if that answer was `BatchUnsupported`, no batch request is sent again and
    every key goes by the single-object delete. So a store without batch deletes costs one
    refused request per backend, not one per batch.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: Set once the store answered a batch request (either way).
        self.answered = threading.Event()
        #: Why the store takes no batch requests (its answer); None while it takes them.
        self.refusal: str | None = None

    def refuse(self, reason: str) -> None:
        """Record that the store answered `reason` to a batch request: no batch again."""
        if self.refusal is None:
            log.warning(
                "%s: the store takes no batch deletes; every key goes by a single-object "
                "delete from now on",
                reason,
            )
        self.refusal = reason

    def describe(self) -> str:
        """How deletes are sent, for run metadata: "batch" (or not yet known), or
        "single (<the store's answer to a batch>)"."""
        return "batch" if self.refusal is None else f"single ({self.refusal})"


def delete_in_batches(
    keys: Sequence[str],
    *,
    name_of: Callable[[str], str],
    batch_size: int,
    pool: Executor,
    delete_batch: Callable[[list[str]], Mapping[str, DeleteResult]],
    delete_one: Callable[[str], DeleteResult],
    batchable: Callable[[str], bool] = lambda name: True,
    key_matching: KeyMatching = EXACT,
    support: BatchSupport | None = None,
    retry: KeyRetry = NO_RETRY,
) -> list[DeleteResult]:
    """The shared shape of an object store's `delete_many`.

    Each key becomes its full object name (`name_of` raises RefusedKey for unsafe keys,
    which are reported and never sent); keys whose names are one object by `key_matching`
    (the store's rule; the same key twice, on an exact store) are sent once, as the first
    of them, and each gets that name's result. Names that `batchable`
    says a batch request cannot carry go alone by `delete_one` (the store's single-object
    delete); the others go out in batches of `batch_size`, at most as many requests at once
    as `pool` has workers. `delete_batch` answers one result per name, or raises:

    - BatchRejected: that batch is halved and each half sent again, down to one name, which
      goes by `delete_one`. So one key the store cannot take in a batch costs about
      2 * log2(batch_size) more requests and never keeps the other keys from being deleted.
    - BatchUnsupported: the store takes no batch requests. It is recorded in `support`
      (default: one for this call only), and the names of that batch, every later one and,
      through `support`, every later call's go by `delete_one`, on `pool`'s workers. While
      `support` knows nothing yet, the first batch goes out alone, so such a store gets one
      batch request.

    A name whose result carries a KeyFailure (the batch answer failed it on its own) is sent
    again, with the other names of its round, after the longest wait `retry.after` gives
    for them, until it goes, `retry.after` says no, or it was tried `retry.attempts` times;
    its error then says how many times it was tried. Returns one result per key, in the
    order of `keys`.
    """
    results: dict[str, DeleteResult] = {}
    wanted: dict[str, list[str]] = {}  # the name sent for one object -> its keys
    sent: dict[str, str] = {}  # folded name -> the name sent for it
    for key in keys:
        try:
            name = name_of(key)
        except RefusedKey as exc:
            results[key] = DeleteResult(key, Outcome.REFUSED, str(exc))
            continue
        wanted.setdefault(sent.setdefault(key_matching.fold(name), name), []).append(key)
    support = BatchSupport() if support is None else support

    def send(batch: list[str]) -> Mapping[str, DeleteResult]:
        """The results of `batch`'s names; none when the store takes no batch request (the
        caller sends them alone)."""
        if support.refusal is not None:
            return {}
        try:
            return delete_batch(batch)
        except BatchUnsupported as exc:
            support.refuse(str(exc))
            return {}
        except BatchRejected as exc:
            if len(batch) == 1:
                log.warning("batch of one rejected (%s); deleting %r alone", exc, batch[0])
                return {batch[0]: delete_one(batch[0])}
            log.warning("batch of %d rejected (%s); sending it in two halves", len(batch), exc)
            half = len(batch) // 2
            return {**send(batch[:half]), **send(batch[half:])}

    def send_all(names: list[str]) -> dict[str, DeleteResult]:
        answered: dict[str, DeleteResult] = {}
        batches = list(chunked((name for name in names if batchable(name)), batch_size))
        if batches and not support.answered.is_set():
            with support.lock:  # the other calls wait for the store's first answer
                if not support.answered.is_set():
                    answered.update(send(batches.pop(0)))
                    support.answered.set()
        for answer in pool.map(send, batches):
            answered.update(answer)
        # Names no batch can carry, and every name a store without batch requests gets.
        unsent = [name for name in names if name not in answered]
        answered.update(pool.map(lambda name: (name, delete_one(name)), unsent))
        return answered

    answered: dict[str, DeleteResult] = {}
    tries = dict.fromkeys(wanted, 1)
    todo = list(wanted)
    while todo:
        answered.update(send_all(todo))
        waits = {}
        for name in todo:
            failure = answered[name].failure
            if failure is not None and tries[name] < retry.attempts:
                wait = retry.after(failure, tries[name])
                if wait is not None:
                    waits[name] = wait
        if waits:
            wait = max(waits.values())
            log.warning(
                "%d keys failed with a passing error (e.g. %s); sending them again in %.2f s",
                len(waits),
                answered[next(iter(waits))].error,
                wait,
            )
            retry.sleep(wait)
        todo = list(waits)
        for name in todo:
            tries[name] += 1
    for name, result in answered.items():
        error = result.error
        if error is not None and tries[name] > 1:
            error += f" (tried {tries[name]} times)"
        for key in wanted[name]:
            results[key] = DeleteResult(key, result.outcome, error, result.failure)
    return [results[key] for key in keys]


def all_failed(names: Sequence[str], reason: str) -> dict[str, DeleteResult]:
    """Each of `names` FAILED with `reason` (a batch request that failed as a whole: its
    rows stay marked and journaled, retried on the next run); logged once as a warning."""
    log.warning("%s (%d keys stay pending)", reason, len(names))
    return {name: DeleteResult(name, Outcome.FAILED, f"{name!r}: {reason}") for name in names}


def prefixed(root: str, prefix: str) -> str:
    """The object name prefix of the keys under `prefix` in a store rooted at `root` ("":
    the bucket's or container's top). Raises RefusedKey for an unsafe `prefix`."""
    if not prefix:
        return root
    return f"{root}/{check_key(prefix)}" if root else check_key(prefix)


def chunked(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """Split `items` into lists of at most `size` items."""
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
