"""Azure Blob backend: blobs under `az://CONTAINER/PREFIX`, deleted with Blob Batch.

Each batch request carries at most 256 deletes (the service's limit) and answers one status
per blob: 202 deleted, 404 already gone, anything else (e.g. 412 for a leased blob) failed,
and that key stays pending for the next run. A sub-response the SDK would retry as a whole
request's answer (408, 500 and above but 501 and 505, e.g. 503 ServerBusy) is passing: that
blob is sent again within the call, after the SDK's own exponential backoff, up to
`max_attempts` tries (`key_retry`). An answer that does not hold exactly one
sub-response per delete fails every key of the batch: the SDK pairs sub-responses with
deletes by position, so none of them can be trusted. Blob snapshots are deleted with their
blob: they hold the same expired bytes.

A batch carries each blob name percent-encoded in a sub-request's URL, so any name Blob
Storage accepts fits in it; a name that is not valid Unicode (a lone surrogate) names no
blob and is refused. A batch the service rejects as a whole with 400 or 413 (about the
request itself, e.g. InvalidInput) is halved until the blob at fault goes alone by a
single Delete Blob (see `delete_in_batches`). Every other whole-batch failure fails each
key of the batch and sends nothing more: 500/503 after the SDK's own retries, timeouts and
connection errors, 403 (credentials apply to every blob), 404 (no such container). A batch
answered 405 or 501 (a store or gateway without Blob Batch) is sent as single deletes, and
so is every later one (`BatchSupport`).

Credentials come from the SDK's own sources only: `AZURE_STORAGE_CONNECTION_STRING`, or
an account URL with `DefaultAzureCredential` (from the optional `azure-identity` package).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient, ExponentialRetry

from snapshot_ops.errors import ConfigError
from snapshot_ops.storage.base import (
    EXACT,
    BatchRejected,
    BatchSupport,
    BatchUnsupported,
    DeleteResult,
    KeyFailure,
    KeyRetry,
    Outcome,
    RefusedKey,
    StorageBackend,
    all_failed,
    check_key,
    delete_in_batches,
    prefixed,
    refused_by,
)

log = logging.getLogger(__name__)

#: The most deletes one Blob Batch request may carry (an Azure limit).
MAX_DELETES_PER_BATCH = 256
#: Blob name limits of the service (prefix included): characters, and path segments.
MAX_NAME_CHARACTERS = 1024
MAX_NAME_SEGMENTS = 254
#: Code points a blob name cannot carry, even percent-encoded: C0 and C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
LOOKUP_WORKERS = 8
#: Answers to a whole batch that may be caused by one blob in it: the batch is split.
_SPLIT_STATUSES = {400, 413}
#: Answers to a batch that say the store has no Blob Batch at all: single deletes.
_NO_BATCH_STATUSES = {405, 501}


class AzureBlobBackend(StorageBackend):
    """Blobs in one container under one name prefix; `storageKey` is the name below it."""

    #: Blob names are case-sensitive and compared as given: "a.pdf" and "A.pdf" are two blobs.
    key_matching = EXACT

    def __init__(
        self,
        container: ContainerClient,
        prefix: str = "",
        *,
        parallel_batches: int,
        retry: ExponentialRetry,
    ) -> None:
        self.container = container
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.description = f"az://{container.container_name}/{self.prefix}"
        self._batches = ThreadPoolExecutor(parallel_batches, thread_name_prefix="az-delete")
        self._lookups = ThreadPoolExecutor(LOOKUP_WORKERS, thread_name_prefix="az-props")
        self.batch_support = BatchSupport()
        self._retry = key_retry(retry)

    @property
    def delete_requests(self) -> str:
        """Blob Batch requests, or single Delete Blobs once the store refused a batch."""
        return self.batch_support.describe()

    def _name(self, key: str) -> str:
        """The blob name of `key` under the prefix; RefusedKey for an unsafe key or one
        that breaks the service's blob naming rules (see `blob_name_problem`)."""
        key = check_key(key)
        try:
            key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RefusedKey(f"storage key is not valid Unicode text: {key!r}") from exc
        name = f"{self.prefix}/{key}" if self.prefix else key
        problem = blob_name_problem(name)
        if problem:
            raise RefusedKey(f"storage key {key!r} {problem}")
        return name

    def refusals(self, keys: Sequence[str]) -> dict[str, str]:
        """The shared key checks, and the blob naming rules (see `blob_name_problem`)."""
        return refused_by(self._name, keys)

    def delete_many(self, keys: Sequence[str]) -> list[DeleteResult]:
        return delete_in_batches(
            keys,
            name_of=self._name,
            batch_size=MAX_DELETES_PER_BATCH,
            pool=self._batches,
            delete_batch=self._delete_batch,
            delete_one=self._delete_single,
            key_matching=self.key_matching,
            support=self.batch_support,
            retry=self._retry,
        )

    def _delete_batch(self, names: list[str]) -> dict[str, DeleteResult]:
        try:
            responses = list(
                self.container.delete_blobs(
                    *names, delete_snapshots="include", raise_on_any_failure=False
                )
            )
        except HttpResponseError as exc:
            if exc.status_code in _NO_BATCH_STATUSES:
                raise BatchUnsupported(
                    f"blob batch answered {exc.status_code} {_code(exc)}".strip()
                ) from exc
            if exc.status_code in _SPLIT_STATUSES:
                code = _code(exc)
                raise BatchRejected(
                    f"blob batch answered {exc.status_code} {code}".strip()
                ) from exc
            return all_failed(names, f"blob batch failed as a whole: {_first_line(exc)}")
        except AzureError as exc:
            return all_failed(names, f"blob batch failed as a whole: {_first_line(exc)}")
        except ValueError as exc:  # the SDK could not read the answer as a batch answer
            return all_failed(names, f"blob batch answer unreadable: {exc}")
        if len(responses) != len(names):
            reason = f"blob batch answered {len(responses)} results for {len(names)} deletes"
            return all_failed(names, reason)
        results: dict[str, DeleteResult] = {}
        # The SDK yields the sub-responses in the order the deletes were sent.
        for name, response in zip(names, responses, strict=True):
            status = response.status_code
            if 200 <= status < 300:
                results[name] = DeleteResult(name, Outcome.DELETED)
            elif status == 404:
                results[name] = DeleteResult(name, Outcome.MISSING)
            else:
                code = response.headers.get("x-ms-error-code") or response.reason or ""
                results[name] = DeleteResult(
                    name,
                    Outcome.FAILED,
                    f"{name!r}: HTTP {status} {code}".strip(),
                    KeyFailure(code, status),
                )
        return results

    def _delete_single(self, name: str) -> DeleteResult:
        """Delete Blob for one name (with its snapshots)."""
        try:
            self.container.delete_blob(name, delete_snapshots="include")
        except ResourceNotFoundError as exc:
            if _code(exc) == "BlobNotFound":  # not ContainerNotFound: that is a failure
                return DeleteResult(name, Outcome.MISSING)
            return DeleteResult(
                name, Outcome.FAILED, f"{name!r}: Delete Blob failed: {_error(exc)}"
            )
        except AzureError as exc:
            return DeleteResult(
                name, Outcome.FAILED, f"{name!r}: Delete Blob failed: {_error(exc)}"
            )
        return DeleteResult(name, Outcome.DELETED)

    def sizes(self, keys: Sequence[str]) -> dict[str, int | None]:
        return dict(zip(keys, self._lookups.map(self._size_one, keys), strict=True))

    def _size_one(self, key: str) -> int | None:
        try:
            name = self._name(key)
        except RefusedKey:
            return None
        try:
            return int(self.container.get_blob_client(name).get_blob_properties().size)
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            log.warning("size of %s unknown: %s", name, _first_line(exc))
            return None

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        start = prefixed(self.prefix, prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        names = self.container.list_blob_names(name_starts_with=start + "/" if start else None)
        for name in names:
            yield name[strip:]

    def close(self) -> None:
        self._batches.shutdown(wait=True)
        self._lookups.shutdown(wait=True)
        self.container.close()


def _code(exc: AzureError) -> str:
    """The service's error code, e.g. "LeaseIdMissing" ("" when it sent none)."""
    code = getattr(exc, "error_code", None) or ""
    return str(getattr(code, "value", code))  # the SDK gives an enum member where it knows it


def _error(exc: AzureError) -> str:
    """The service's error code and the message's first line."""
    code = _code(exc)
    return f"{code}: {_first_line(exc)}" if code else _first_line(exc)


def blob_name_problem(name: str) -> str | None:
    """Why Azure Blob Storage cannot take `name` as a blob name, or None if it can.

    From the service's naming rules ("Naming and Referencing Containers, Blobs, and
    Metadata" in the Blob REST documentation): at most 1,024 characters (counted here in
    UTF-16 code units, the stricter reading) and 254 path segments; no control characters;
    and no path segment ending with a dot, which the rules say to avoid: such a name is not
    kept as given (a blob written as `a/b.` is found stored as `a/b`), so a delete of `a/b.`
    could reach another object.
    """
    length = len(name.encode("utf-16-le", "surrogatepass")) // 2
    if length > MAX_NAME_CHARACTERS:
        return f"makes a blob name of {length} characters; Azure takes at most 1,024"
    segments = name.split("/")
    if len(segments) > MAX_NAME_SEGMENTS:
        return f"makes a blob name of {len(segments)} path segments; Azure takes at most 254"
    if _CONTROL.search(name):
        return "contains a control character, which a blob name cannot carry"
    if any(segment.endswith(".") for segment in segments):
        return (
            "has a path segment ending with a dot, which Azure does not keep as given: "
            "the delete could reach another blob"
        )
    return None


def _first_line(exc: BaseException) -> str:
    """The SDK's error message without the response body it appends on later lines."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def retry_policy(*, max_attempts: int, retry_backoff_seconds: float) -> ExponentialRetry:
    """The SDK's exponential retry with the storage settings: `max_attempts` tries of a
    request in all, retry n waiting about b + b**n seconds (b = `retry_backoff_seconds`,
    jittered by up to min(3, b / 2) s either way)."""
    return ExponentialRetry(
        initial_backoff=retry_backoff_seconds,
        increment_base=retry_backoff_seconds,
        retry_total=max_attempts - 1,
        random_jitter_range=min(3.0, retry_backoff_seconds / 2),
    )


def _passing(status: int) -> bool:
    """Whether the SDK's retry policy retries a request answered `status` (azure-storage-
    blob's `is_retry` for the primary location): 408, and 500 and above but 501 and 505."""
    return status == 408 or (status >= 500 and status not in (501, 505))


def key_retry(policy: ExponentialRetry) -> KeyRetry:
    """How blobs a batch answer failed on their own are sent again: when the SDK would
    retry their sub-response's status as a whole request's (`_passing`), after its own
    backoff for that retry (`policy.get_backoff_time`), up to as many tries as `policy`
    gives a request."""

    def after(failure: KeyFailure, attempt: int) -> float | None:
        if failure.status is None or not _passing(failure.status):
            return None
        return policy.get_backoff_time({"count": attempt})

    return KeyRetry(attempts=policy.total_retries + 1, after=after)


def container_client(
    container: str,
    *,
    retry: ExponentialRetry,
    connect_timeout: float,
    read_timeout: float,
) -> ContainerClient:
    """A client for `container` from the SDK's standard credential sources.

    `AZURE_STORAGE_CONNECTION_STRING` wins; otherwise `AZURE_STORAGE_ACCOUNT_URL` (or
    `AZURE_STORAGE_ACCOUNT_NAME`, for https://NAME.blob.core.windows.net) with
    `DefaultAzureCredential` (azure-identity, the `azure` extra). Each request is retried by
    `retry` (see `retry_policy`), `connect_timeout` and `read_timeout` in seconds.
    Raises ConfigError when no source is set, the connection string is not usable (without
    repeating it), or the credential path lacks azure-identity; no request is made.
    """
    env = os.environ
    # The same retries and timeouts whichever credential is used: the SDK's exponential
    # retry (wait b + b**n seconds before retry n, b = backoff) and its transport's timeouts
    # (a timed-out request is retried as well).
    options = {
        "retry_policy": retry,
        "connection_timeout": connect_timeout,
        "read_timeout": read_timeout,
    }
    connection_string = env.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection_string:
        try:
            service = BlobServiceClient.from_connection_string(connection_string, **options)
        except ValueError as exc:
            # The SDK's message never repeats the string; ours must not either.
            raise ConfigError("AZURE_STORAGE_CONNECTION_STRING is not usable") from exc
        return service.get_container_client(container)
    account_url = env.get("AZURE_STORAGE_ACCOUNT_URL")
    if not account_url and env.get("AZURE_STORAGE_ACCOUNT_NAME"):
        account_url = f"https://{env['AZURE_STORAGE_ACCOUNT_NAME']}.blob.core.windows.net"
    if not account_url:
        raise ConfigError(
            "az:// storage needs AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_URL "
            "(or AZURE_STORAGE_ACCOUNT_NAME) with a credential DefaultAzureCredential finds"
        )
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:
        raise ConfigError(
            "az:// storage without a connection string uses DefaultAzureCredential, from "
            "the azure extra: pip install -c constraints.txt -e '.[azure]' (azure-identity)"
        ) from exc
    service = BlobServiceClient(account_url, credential=DefaultAzureCredential(), **options)
    return service.get_container_client(container)
