"""Storage backends, chosen by the URL in SNAPSHOT_OPS_STORAGE_URL.

- `file:///absolute/root`: files under a folder.
- `s3://BUCKET/PREFIX`: S3 or an S3-compatible store (its endpoint from `AWS_ENDPOINT_URL`
  or dagster-aws's `S3Resource`, see `open_storage`).
- `az://CONTAINER/PREFIX`: Azure Blob Storage.

For the object stores `"storageKey"` is the key below PREFIX. A URL never carries
credentials: each SDK finds them in its own standard places.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from snapshot_ops.errors import ConfigError
from snapshot_ops.storage.base import (
    EXACT,
    DeleteResult,
    KeyMatching,
    Outcome,
    RefusedKey,
    StorageBackend,
    check_key,
)

if TYPE_CHECKING:
    from botocore.config import Config

__all__ = [
    "DEFAULTS",
    "EXACT",
    "DeleteResult",
    "KeyMatching",
    "Outcome",
    "RefusedKey",
    "StorageBackend",
    "StorageSettings",
    "check_key",
    "open_storage",
]


@dataclass(frozen=True)
class StorageSettings:
    """How the job talks to its store; the defaults here are the only place they are set.

    - parallel_batches: delete requests in flight at once (object stores): batches, or
      single deletes on a store that takes no batch requests.
    - max_attempts: attempts per request, first included, for the SDKs' own retries; and
      tries per key that a batch answer failed with a passing error (S3 `SlowDown`,
      `InternalError`; an Azure 503 sub-response), sent again within the call.
    - retry_backoff_seconds: Azure's exponential retry base b (retry n waits about
      b + b**n s), for requests and for such keys; botocore's standard mode picks its
      own backoff for S3.
    - connect_timeout_seconds, read_timeout_seconds: bounds of one attempt (object stores).
    - remove_empty_folders: file:// only, remove the folders deletes leave empty.
    """

    parallel_batches: int = 4
    max_attempts: int = 5
    retry_backoff_seconds: float = 2.0
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 60.0
    remove_empty_folders: bool = True


#: The defaults every entry point (resource fields, `open_storage`, the lease) refers to.
DEFAULTS = StorageSettings()

EXPECTED = "file:///absolute/root, s3://BUCKET/PREFIX or az://CONTAINER/PREFIX"


def open_storage(
    url: str,
    *,
    parallel_batches: int = DEFAULTS.parallel_batches,
    max_attempts: int = DEFAULTS.max_attempts,
    retry_backoff_seconds: float = DEFAULTS.retry_backoff_seconds,
    connect_timeout_seconds: float = DEFAULTS.connect_timeout_seconds,
    read_timeout_seconds: float = DEFAULTS.read_timeout_seconds,
    remove_empty_folders: bool = DEFAULTS.remove_empty_folders,
    s3_client: Callable[[Config], Any] | None = None,
) -> StorageBackend:
    """Build the backend a storage URL names (the caller closes it).

    `parallel_batches` bounds the delete requests in flight at once; `max_attempts` and
    `retry_backoff_seconds` go to the SDKs' own retry settings (botocore's standard mode
    picks its own backoff), and bound the tries of a key a batch answer failed with a
    passing error (storage.base.KeyRetry). The timeouts bound each request to an object
    store: one that exceeds them counts as a failed attempt. `remove_empty_folders`
    (file:// only) removes the folders that deletes leave empty (see StorageSettings for
    the defaults).

    `s3_client` builds an s3:// URL's client from the botocore Config this function makes
    (timeouts, retries, connection pool; see storage.s3.client_config), e.g. from
    dagster-aws's S3Resource (snapshot_ops.defs.resources); without it boto3's standard
    chain finds the region, endpoint and credentials (storage.s3.make_client).
    Raises ConfigError for a setting or URL that cannot work, before any request.
    """
    if parallel_batches < 1:
        raise ConfigError(f"parallel_batches must be 1 or more, got {parallel_batches}")
    if max_attempts < 1:
        raise ConfigError(f"max_attempts must be 1 or more, got {max_attempts}")
    if connect_timeout_seconds <= 0 or read_timeout_seconds <= 0:
        raise ConfigError(
            "connect_timeout_seconds and read_timeout_seconds must be more than 0, got "
            f"{connect_timeout_seconds} and {read_timeout_seconds}"
        )
    parts = urlsplit(url)
    if "@" in parts.netloc:
        # Do not echo the URL: what is before the @ may be a secret.
        raise ConfigError(
            "the storage URL must not contain credentials (user:password@); each SDK reads "
            "them from its standard environment variables, profiles or roles"
        )
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            # file://srv/snapshots: the folder's first name was read as a host name.
            raise ConfigError(
                f"file storage URL must look like file:///absolute/root (three slashes), got "
                f"{url!r}; for the folder /{parts.netloc}{parts.path} write "
                f"file:///{parts.netloc}{parts.path}"
            )
        from snapshot_ops.storage.filesystem import FilesystemBackend

        return FilesystemBackend(unquote(parts.path), remove_empty_folders=remove_empty_folders)
    if parts.scheme in ("s3", "az"):
        location, prefix = parts.netloc, unquote(parts.path).strip("/")
        if not location or parts.query or parts.fragment:
            raise ConfigError(
                f"storage URL must look like {parts.scheme}://NAME/PREFIX (no ?query or "
                f"#fragment), got {url!r}{_did_you_mean(parts.scheme, location, prefix)}"
            )
        if prefix:
            try:
                check_key(prefix)
            except RefusedKey as exc:
                raise ConfigError(
                    f"storage URL prefix is not usable: {exc}"
                    f"{_did_you_mean(parts.scheme, location, prefix)}"
                ) from exc
        if parts.scheme == "s3":
            from snapshot_ops.storage.s3 import S3Backend, client_config, make_client

            config = client_config(
                max_attempts=max_attempts,
                max_pool_connections=max(10, parallel_batches * 2),
                connect_timeout=connect_timeout_seconds,
                read_timeout=read_timeout_seconds,
            )
            client = (s3_client or make_client)(config)
            return S3Backend(
                client,
                location,
                prefix,
                parallel_batches=parallel_batches,
                max_attempts=max_attempts,
            )
        from snapshot_ops.storage.azure_blob import (
            AzureBlobBackend,
            container_client,
            retry_policy,
        )

        retry = retry_policy(max_attempts=max_attempts, retry_backoff_seconds=retry_backoff_seconds)
        container = container_client(
            location,
            retry=retry,
            connect_timeout=connect_timeout_seconds,
            read_timeout=read_timeout_seconds,
        )
        return AzureBlobBackend(container, prefix, parallel_batches=parallel_batches, retry=retry)
    hint = f"; for the folder {url} write file://{url}" if url.startswith("/") else ""
    raise ConfigError(f"unsupported storage URL {url!r}: expected {EXPECTED}{hint}")


def _did_you_mean(scheme: str, location: str, prefix: str) -> str:
    """'; did you mean s3://NAME/PREFIX' with the URL's parts cleaned up, or '' if none fits.

    Without a bucket or container (`s3:///bucket/prefix`), the path's first name is taken
    for it; empty and '.' segments of the prefix are dropped. A prefix that is still refused
    (a '..' segment) gets no suggestion, nor does a '..' taken for the bucket or container.
    """
    segments = [s for s in prefix.split("/") if s not in ("", ".")]
    if not location:
        if not segments:
            return ""
        location, segments = segments[0], segments[1:]
    if location == "..":
        return ""
    cleaned = "/".join(segments)
    if cleaned:
        try:
            check_key(cleaned)
        except RefusedKey:
            return ""
    return f"; did you mean {scheme}://{location}/{cleaned}".rstrip("/")
