"""Storage backends, chosen by the URL in SNAPSHOT_OPS_STORAGE_URL."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from snapshot_ops.errors import ConfigError
from snapshot_ops.storage.base import (
    DeleteResult,
    Outcome,
    RefusedKey,
    StorageBackend,
    check_key,
)

__all__ = [
    "DeleteResult",
    "Outcome",
    "RefusedKey",
    "StorageBackend",
    "check_key",
    "open_storage",
]


def open_storage(url: str) -> StorageBackend:
    """Build the backend a storage URL names, e.g. `file:///srv/snapshots`."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"file storage URL must look like file:///absolute/root, got {url!r}")
        from snapshot_ops.storage.filesystem import FilesystemBackend

        return FilesystemBackend(unquote(parts.path))
    raise ConfigError(
        f"unsupported storage URL {url!r}: expected file:///absolute/root"
    )
