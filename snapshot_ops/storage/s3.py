"""S3 backend: objects under `s3://BUCKET/PREFIX`, deleted with batched `DeleteObjects`.

Each `DeleteObjects` request carries at most 1,000 keys and a Content-MD5 header: S3 itself
accepts the CRC32 checksum that current botocore sends instead, but many S3-compatible
stores still require Content-MD5 and reject the whole batch without it. The per-key
`Deleted` and `Errors` lists decide each key's outcome; a key the answer leaves out has
failed (nothing confirmed it is gone).

Keys that an XML request body cannot carry, or that an XML answer would not bring back
intact, never go in a batch: a character XML 1.0 does not allow (control characters such
as U+0001, U+FFFE) makes the whole body malformed (S3: 400 MalformedXML), and a carriage
return comes back as a line feed, so the answer would name another key. Such keys go by
a single `DeleteObject`, the key in the URL. A key that is not valid Unicode (a lone
surrogate) names no S3 object and is refused.

A request that fails as a whole is split only when S3 answered 400 or 413 about the
request itself (e.g. MalformedXML, InvalidArgument, a key it will not take): the batch is
halved until the key at fault goes alone by `DeleteObject` (see `delete_in_batches`).
A store that answers `DeleteObjects` with 405 MethodNotAllowed or 501 NotImplemented
(some S3-compatible stores and gateways do) takes no batch deletes at all: from that first
answer on, the backend sends every key by `DeleteObject` (see `BatchSupport`), one refused
request per backend, not per batch.
Everything else fails each key of the batch, which then stays pending for the next run,
and sends nothing more: throttling and 5xx after botocore's own retries, timeouts and
connection errors, 403 (credentials or policy apply to every key), 404 (no such bucket),
and the 400 codes listed in `_WHOLE_REQUEST_400`, which concern credentials or the
connection rather than any key.

A 200 answer may fail some keys with an `<Error>` S3 documents as passing (`InternalError`,
`SlowDown`, `ServiceUnavailable`): those keys are sent again within the call, judged and
spaced by botocore's standard retry mode, the same rules and backoff it applies to a whole
request (`key_retry`), up to `max_attempts` tries in all.

S3 answers `Deleted` for a key that did not exist, so this backend cannot tell "deleted
now" from "already gone": both are reported as DELETED (both count in deletedCount). Only
the HEADs of `sizes` tell; the start-of-run storage check uses them (snapshot_ops.sentinel).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.retries.standard import (
    ExponentialBackoff,
    RetryContext,
    RetryEventAdapter,
    StandardRetryConditions,
    ThrottlingErrorDetector,
)

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

#: The most keys one DeleteObjects request may carry (an S3 limit).
MAX_KEYS_PER_REQUEST = 1000
#: Concurrent HEAD requests when sizes are looked up.
LOOKUP_WORKERS = 8
#: The longest object key S3 accepts, in bytes of its UTF-8 form (prefix included).
MAX_KEY_BYTES = 1024
#: Error codes an S3-compatible store may use for a key that does not exist.
_NOT_FOUND = {"NoSuchKey", "NotFound", "404"}
#: Answers to a whole batch that may be caused by one key in it: the batch is split.
_SPLIT_STATUSES = {400, 413}
#: Answers to a batch that say the store has no `DeleteObjects` at all: single deletes.
_NO_BATCH_STATUSES = {405, 501}
_NO_BATCH_CODES = {"MethodNotAllowed", "NotImplemented"}
#: The HTTP status the S3 error-code list ("Error responses", S3 API Reference) gives each
#: server-side code an `<Error>` entry of DeleteObjects may carry: S3 sends no status per
#: key, and botocore's standard retry mode judges these codes by their status.
_SERVER_ERROR_STATUS = {
    "InternalError": 500,
    "NotImplemented": 501,
    "ServiceUnavailable": 503,
    "SlowDown": 503,
}
#: 400 answers about the request's credentials or connection, never about a key in it.
_WHOLE_REQUEST_400 = {
    "AuthorizationHeaderMalformed",
    "ExpiredToken",
    "IncompleteBody",
    "InvalidBucketName",
    "InvalidToken",
    "RequestTimeout",
    "TokenRefreshRequired",
}
#: Characters an XML 1.0 document may hold (its `Char` production) other than U+000D.
_XML_SAFE = re.compile(r"[\t\n\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")


def fits_in_xml(key: str) -> bool:
    """True when `key` survives a DeleteObjects request and its answer unchanged.

    XML 1.0 cannot hold most control characters, U+FFFE/U+FFFF or surrogates, and its
    parsers turn a carriage return into a line feed (XML 1.0, section 2.11).
    """
    return _XML_SAFE.fullmatch(key) is not None


def add_content_md5(request: Any, **_: Any) -> None:
    """botocore hook: give a DeleteObjects request the Content-MD5 of its body."""
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    if not isinstance(body, bytes):  # a stream: botocore only builds bytes for this call
        return
    request.headers["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()


class S3Backend(StorageBackend):
    """Objects in one bucket under one key prefix; `storageKey` is the key below the prefix."""

    #: S3 object keys are exact UTF-8 strings: "a.pdf" and "A.pdf" are two objects.
    key_matching = EXACT

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        parallel_batches: int,
        max_attempts: int,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.description = f"s3://{bucket}/{self.prefix}"
        # Registered before signing so the header is covered by the SigV4 signature.
        client.meta.events.register("before-sign.s3.DeleteObjects", add_content_md5)
        self._batches = ThreadPoolExecutor(parallel_batches, thread_name_prefix="s3-delete")
        self._lookups = ThreadPoolExecutor(LOOKUP_WORKERS, thread_name_prefix="s3-head")
        self.batch_support = BatchSupport()
        self._retry = key_retry(client, max_attempts)

    @property
    def delete_requests(self) -> str:
        """`DeleteObjects` batches, or single `DeleteObject`s once the store refused one."""
        return self.batch_support.describe()

    def _full_key(self, key: str) -> str:
        """The object key of `key` under the prefix; RefusedKey for an unsafe key or one S3
        cannot take (over MAX_KEY_BYTES in UTF-8 with the prefix, an S3 limit)."""
        key = check_key(key)
        try:
            key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RefusedKey(f"storage key is not valid Unicode text: {key!r}") from exc
        full_key = f"{self.prefix}/{key}" if self.prefix else key
        size = len(full_key.encode("utf-8", "surrogatepass"))
        if size > MAX_KEY_BYTES:
            raise RefusedKey(
                f"storage key {key!r} makes an S3 object key of {size} bytes (UTF-8, prefix "
                f"included); S3 takes at most {MAX_KEY_BYTES}"
            )
        return full_key

    def refusals(self, keys: Sequence[str]) -> dict[str, str]:
        """The shared key checks, and keys over S3's key length (see `_full_key`)."""
        return refused_by(self._full_key, keys)

    def delete_many(self, keys: Sequence[str]) -> list[DeleteResult]:
        return delete_in_batches(
            keys,
            name_of=self._full_key,
            batch_size=MAX_KEYS_PER_REQUEST,
            pool=self._batches,
            delete_batch=self._delete_request,
            delete_one=self._delete_single,
            batchable=fits_in_xml,
            key_matching=self.key_matching,
            support=self.batch_support,
            retry=self._retry,
        )

    def _delete_request(self, full_keys: list[str]) -> dict[str, DeleteResult]:
        try:
            response = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in full_keys], "Quiet": False},
            )
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code", "")
            if status in _NO_BATCH_STATUSES or code in _NO_BATCH_CODES:
                raise BatchUnsupported(f"DeleteObjects answered {status} {code}") from exc
            if status in _SPLIT_STATUSES and code not in _WHOLE_REQUEST_400:
                raise BatchRejected(f"DeleteObjects answered {status} {code}") from exc
            return all_failed(full_keys, f"DeleteObjects failed for the whole batch: {exc}")
        except BotoCoreError as exc:
            return all_failed(full_keys, f"DeleteObjects failed for the whole batch: {exc}")
        results = {
            item["Key"]: DeleteResult(item["Key"], Outcome.DELETED)
            for item in response.get("Deleted", [])
        }
        for item in response.get("Errors", []):
            key, code = item.get("Key", ""), item.get("Code", "")
            if code in _NOT_FOUND:
                results[key] = DeleteResult(key, Outcome.MISSING)
            else:
                message = f"{key!r}: {code} {item.get('Message', '')}".strip()
                results[key] = DeleteResult(key, Outcome.FAILED, message, KeyFailure(code))
        for key in full_keys:
            if key not in results:  # the store said nothing about it: assume nothing happened
                results[key] = DeleteResult(key, Outcome.FAILED, f"{key!r}: no result from store")
        return {key: results[key] for key in full_keys}

    def _delete_single(self, full_key: str) -> DeleteResult:
        """`DeleteObject` for one key, carried in the URL: S3 answers 204 whether or not
        the object existed, so success is DELETED, as in a batch."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=full_key)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            if code in _NOT_FOUND:
                return DeleteResult(full_key, Outcome.MISSING)
            message = f"{full_key!r}: DeleteObject failed: {code} {error.get('Message', '')}"
            return DeleteResult(full_key, Outcome.FAILED, message.strip())
        except BotoCoreError as exc:
            return DeleteResult(
                full_key, Outcome.FAILED, f"{full_key!r}: DeleteObject failed: {exc}"
            )
        return DeleteResult(full_key, Outcome.DELETED)

    def sizes(self, keys: Sequence[str]) -> dict[str, int | None]:
        return dict(zip(keys, self._lookups.map(self._size_one, keys), strict=True))

    def _size_one(self, key: str) -> int | None:
        try:
            full_key = self._full_key(key)
        except RefusedKey:
            return None
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=full_key)["ContentLength"])
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in _NOT_FOUND:
                # e.g. 403 without s3:GetObject: the delete still goes ahead, bytes unknown.
                log.warning("size of %s unknown: %s", full_key, code or exc)
            return None
        except BotoCoreError as exc:
            log.warning("size of %s unknown: %s", full_key, exc)
            return None

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        start = prefixed(self.prefix, prefix)
        listing = {"Bucket": self.bucket}
        if start:
            listing["Prefix"] = start + "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in self.client.get_paginator("list_objects_v2").paginate(**listing):
            for item in page.get("Contents", []):
                yield item["Key"][strip:]

    def close(self) -> None:
        self._batches.shutdown(wait=True)
        self._lookups.shutdown(wait=True)


def key_retry(client: Any, max_attempts: int) -> KeyRetry:
    """How keys a DeleteObjects answer failed on their own are sent again: botocore's
    standard retry mode (`botocore.retries.standard`), as it judges a whole request.

    Each key's `<Code>` is given to its `StandardRetryConditions` with the HTTP status the
    S3 error-code list gives that code (`_SERVER_ERROR_STATUS`): passing are the throttling
    codes (`SlowDown`, ...), the transient ones (`RequestTimeout`, ...) and the codes of
    500, 502, 503 and 504 answers (`InternalError`, `ServiceUnavailable`); not `AccessDenied`
    or `NotImplemented`. The wait is its `ExponentialBackoff`: a random share of 2**(n-1)
    times 1 s for a throttling code and 50 ms otherwise, at most 20 s. At most
    `max_attempts` tries of a key in all, the first included.
    """
    conditions = StandardRetryConditions(max_attempts=max_attempts)
    backoff = ExponentialBackoff(throttling_detector=ThrottlingErrorDetector(RetryEventAdapter()))
    operation = client.meta.service_model.operation_model("DeleteObjects")

    def after(failure: KeyFailure, attempt: int) -> float | None:
        status = failure.status or _SERVER_ERROR_STATUS.get(failure.code)
        context = RetryContext(
            attempt_number=attempt,
            operation_model=operation,
            parsed_response={"Error": {"Code": failure.code}},
            http_response=None if status is None else AWSResponse(None, status, {}, None),
        )
        return backoff.delay_amount(context) if conditions.is_retryable(context) else None

    return KeyRetry(attempts=max_attempts, after=after)


def client_config(
    *,
    max_attempts: int,
    max_pool_connections: int,
    connect_timeout: float,
    read_timeout: float,
) -> Config:
    """The botocore settings every client of the job gets: standard-mode retries with
    `max_attempts` attempts in all (a request that times out is retried like throttling),
    the connection pool and the timeouts of one attempt (seconds)."""
    return Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        max_pool_connections=max_pool_connections,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )


def make_client(config: Config) -> Any:
    """An S3 client from boto3's standard chain (environment, profile, role;
    `AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_S3` for an S3-compatible store), with `config`
    (see `client_config`). A deployment that configures S3 through dagster-aws's
    S3Resource builds its client in snapshot_ops.defs.resources instead."""
    return boto3.session.Session().client("s3", config=config)
