"""Filesystem backend: objects are regular files under one root folder.

Every key is walked from the root one folder at a time with O_NOFOLLOW, so a symlink
anywhere on the way (or as the object itself) is refused instead of followed: nothing
outside the root can be reached, even if the tree changes while the job runs.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from snapshot_ops.errors import ConfigError
from snapshot_ops.storage.base import (
    DeleteResult,
    Outcome,
    RefusedKey,
    StorageBackend,
    check_key,
)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class FilesystemBackend(StorageBackend):
    """Regular files under `root`; `storageKey` is the path relative to it."""

    def __init__(self, root: str, workers: int = 16) -> None:
        if not os.path.isabs(root):
            raise ConfigError(f"storage root must be an absolute path, got {root!r}")
        if not os.path.isdir(root):
            raise ConfigError(f"storage root {root!r} is not an existing folder")
        self.root = os.path.realpath(root)
        self.description = f"file://{self.root}"
        # Unlinking is dominated by filesystem latency, not CPU: threads overlap it well.
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fs-delete")

    def delete_many(self, keys: Sequence[str]) -> list[DeleteResult]:
        return list(self._pool.map(self._delete_one, keys))

    def sizes(self, keys: Sequence[str]) -> dict[str, int | None]:
        return dict(zip(keys, self._pool.map(self._size_one, keys), strict=True))

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        start = os.path.join(self.root, check_key(prefix)) if prefix else self.root
        for folder, dirnames, filenames in os.walk(start, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(folder, name)
                if stat.S_ISREG(os.lstat(path).st_mode):
                    yield os.path.relpath(path, self.root)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _delete_one(self, key: str) -> DeleteResult:
        try:
            parent, name = self._open_parent(key)
        except RefusedKey as exc:
            return DeleteResult(key, Outcome.REFUSED, str(exc))
        except FileNotFoundError:
            return DeleteResult(key, Outcome.MISSING)
        except OSError as exc:
            return DeleteResult(key, Outcome.FAILED, f"{key}: {exc.strerror}")
        try:
            mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
            if not stat.S_ISREG(mode):
                kind = "a symlink" if stat.S_ISLNK(mode) else "not a regular file"
                return DeleteResult(key, Outcome.REFUSED, f"storage key {key!r} is {kind}")
            os.unlink(name, dir_fd=parent)
            return DeleteResult(key, Outcome.DELETED)
        except FileNotFoundError:
            return DeleteResult(key, Outcome.MISSING)
        except OSError as exc:
            return DeleteResult(key, Outcome.FAILED, f"{key}: {exc.strerror}")
        finally:
            os.close(parent)

    def _size_one(self, key: str) -> int | None:
        try:
            parent, name = self._open_parent(key)
        except (RefusedKey, OSError):
            return None
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            return st.st_size if stat.S_ISREG(st.st_mode) else None
        except OSError:
            return None
        finally:
            os.close(parent)

    def _open_parent(self, key: str) -> tuple[int, str]:
        """Open the folder holding `key` without following symlinks; return (fd, name).

        Raises RefusedKey for unsafe keys or a symlinked folder on the way,
        FileNotFoundError when a folder on the way does not exist.
        """
        *folders, name = check_key(key).split("/")
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for folder in folders:
                try:
                    child = os.open(folder, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        # ENOTDIR also covers a regular file on the way: such a key
                        # cannot name an object, so it is refused rather than "missing".
                        raise RefusedKey(
                            f"storage key {key!r} goes through {folder!r}, "
                            "which is a symlink or not a folder"
                        ) from exc
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd, name
