"""Filesystem backend: objects are regular files under one root folder.

Every key is walked from the root one folder at a time with O_NOFOLLOW, so a symlink
anywhere on the way (or as the object itself) is refused instead of followed: nothing
outside the root can be reached, even if the tree changes while the job runs.

One key never stops the others: whatever the operating system raises for one key (an
OSError, or a UnicodeEncodeError for a name the file system cannot encode, such as a lone
surrogate) becomes that key's result.

After a batch, folders it emptied are removed bottom up, by `rmdir` only: never the root,
never a folder that still holds anything (rmdir itself refuses), never through a symlink
(the same O_NOFOLLOW walk). A folder whose last file is deleted at the very moment an
application has created it, and not yet its file, can be removed under the application,
whose file creation then fails with ENOENT; the application should then create the folder
again and retry (`remove_empty_folders=False` turns the removal off).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from snapshot_ops.errors import ConfigError
from snapshot_ops.storage.base import (
    DeleteResult,
    Outcome,
    RefusedKey,
    StorageBackend,
    check_key,
)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
T = TypeVar("T")


class FilesystemBackend(StorageBackend):
    """Regular files under `root`; `storageKey` is the path relative to it."""

    def __init__(self, root: str, workers: int = 32, *, remove_empty_folders: bool = True) -> None:
        """`workers` threads unlink in parallel: a filesystem takes many unlinks at once
        far faster than one after another (unlink waits on the disk, not the CPU). 32 is
        also what the benchmark's "machine limit" baseline uses (docs/performance.md).
        With `remove_empty_folders`, folders that a `delete_many` leaves empty are removed
        (see the module docstring)."""
        if not os.path.isabs(root):
            raise ConfigError(f"storage root must be an absolute path, got {root!r}")
        if not os.path.isdir(root):
            raise ConfigError(f"storage root {root!r} is not an existing folder")
        self.root = os.path.realpath(root)
        self.description = f"file://{self.root}"
        self._workers = workers
        self.remove_empty_folders = remove_empty_folders
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fs-delete")

    def delete_many(self, keys: Sequence[str]) -> list[DeleteResult]:
        results = self._in_slices(keys, self._delete_one)
        if self.remove_empty_folders:
            self._remove_emptied_folders([r.key for r in results if r.gone])
        return results

    def _remove_emptied_folders(self, gone: Sequence[str]) -> None:
        """rmdir each folder that held a gone key, deepest first, and each parent that a
        removal leaves empty, up to but never including the root.

        A folder that still holds anything (ENOTEMPTY), is already gone (ENOENT), or is no
        longer a folder reached without a symlink (ELOOP, ENOTDIR) is left as it is.
        """
        by_depth: dict[int, set[tuple[str, ...]]] = {}
        for key in gone:
            folder = tuple(key.split("/")[:-1])
            if folder:  # a key directly under the root: the root is never removed
                by_depth.setdefault(len(folder), set()).add(folder)
        with _Folders(self.root) as folders:
            for depth in range(max(by_depth, default=0), 0, -1):
                for folder in sorted(by_depth.get(depth, ())):
                    try:
                        os.rmdir(folder[-1], dir_fd=folders.folder(list(folder[:-1])))
                    except (RefusedKey, OSError):
                        continue  # not empty, gone, or not a plain folder: leave it
                    if depth > 1:  # its parent may be empty now
                        by_depth.setdefault(depth - 1, set()).add(folder[:-1])

    def sizes(self, keys: Sequence[str]) -> dict[str, int | None]:
        return dict(zip(keys, self._in_slices(keys, self._size_one), strict=True))

    def refusals(self, keys: Sequence[str]) -> dict[str, str]:
        """Besides the shared key checks: each key is walked from the root with O_NOFOLLOW
        like a delete, and its object is looked at without following it. A symlink or a
        file on the way, or an object that is a symlink, a folder or anything else but a
        regular file, is refused. A missing object or folder is not (it counts as already
        deleted); nor is an error such as a permission denied, which the delete reports
        as a failure to retry."""
        found = self._in_slices(keys, self._refusal_one)
        return {key: reason for key, reason in zip(keys, found, strict=True) if reason}

    def _in_slices(self, keys: Sequence[str], one: Callable[[str, _Folders], T]) -> list[T]:
        """Apply `one` to every key, one slice of keys per thread (a task per key would
        cost more in dispatch than the unlink itself). Keys are sliced in sorted order, so
        a slice's keys share folders, which each thread opens once."""
        order = sorted(range(len(keys)), key=keys.__getitem__)
        size = max(1, -(-len(keys) // self._workers))
        slices = [order[i : i + size] for i in range(0, len(order), size)]

        def run(part: list[int]) -> list[tuple[int, T]]:
            with _Folders(self.root) as folders:
                return [(i, one(keys[i], folders)) for i in part]

        results: list[T] = [None] * len(keys)  # type: ignore[list-item]
        for part in self._pool.map(run, slices):
            for i, result in part:
                results[i] = result
        return results

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

    def _delete_one(self, key: str, folders: _Folders) -> DeleteResult:
        try:
            parent, name = folders.parent_of(key)
            mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
            if not stat.S_ISREG(mode):
                return DeleteResult(key, Outcome.REFUSED, _not_a_regular_file(key, mode))
            os.unlink(name, dir_fd=parent)
            return DeleteResult(key, Outcome.DELETED)
        except RefusedKey as exc:  # from parent_of: unsafe, or a symlink on the way
            return DeleteResult(key, Outcome.REFUSED, str(exc))
        except FileNotFoundError:
            return DeleteResult(key, Outcome.MISSING)
        except OSError as exc:
            return DeleteResult(key, Outcome.FAILED, f"{key!r}: {exc.strerror}")
        except UnicodeEncodeError as exc:
            return _not_a_file_name(key, exc)

    def _refusal_one(self, key: str, folders: _Folders) -> str | None:
        try:
            parent, name = folders.parent_of(key)
            mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
        except RefusedKey as exc:
            return str(exc)
        except OSError:
            return None
        return None if stat.S_ISREG(mode) else _not_a_regular_file(key, mode)

    def _size_one(self, key: str, folders: _Folders) -> int | None:
        try:
            parent, name = folders.parent_of(key)
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except (RefusedKey, OSError, UnicodeEncodeError):
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None


def _not_a_regular_file(key: str, mode: int) -> str:
    """Why the object at `key`, whose `st_mode` is `mode`, is refused: the same words for
    `refusals` before marking and for the delete."""
    if stat.S_ISLNK(mode):
        kind = "a symlink"
    elif stat.S_ISDIR(mode):
        kind = "a folder"
    else:
        kind = "not a regular file"
    return f"storage key {key!r} is {kind}"


def _not_a_file_name(key: str, exc: UnicodeEncodeError) -> DeleteResult:
    """The result for a key the file system cannot encode: it names no file; nothing done."""
    return DeleteResult(
        key, Outcome.REFUSED, f"storage key {key!r} is not a usable file name: {exc}"
    )


class _Folders:
    """Folders under the root opened without following symlinks, kept open for reuse.

    Snapshot keys share a few parent folders, so opening each once per slice of keys
    saves two syscalls per key; the walk from the root still refuses any symlink.
    """

    def __init__(self, root: str) -> None:
        self._root = root
        self._fds: dict[str, int] = {}

    def __enter__(self) -> _Folders:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def parent_of(self, key: str) -> tuple[int, str]:
        """The open folder holding `key`, and the key's last segment.

        Raises RefusedKey for unsafe keys or a symlink (or file) on the way,
        FileNotFoundError when a folder on the way does not exist.
        """
        *segments, name = check_key(key).split("/")
        return self._open("/".join(segments), segments, key), name

    def folder(self, segments: list[str]) -> int:
        """The open folder at `segments` below the root (the root itself for none).

        Raises RefusedKey for a symlink or file on the way, OSError when it is missing.
        """
        return self._open("/".join(segments), segments, "/".join(segments))

    def _open(self, path: str, segments: list[str], key: str) -> int:
        fd = self._fds.get(path)
        if fd is not None:
            return fd
        if not segments:
            fd = os.open(self._root, _DIR_FLAGS)
        else:
            parent = self._open("/".join(segments[:-1]), segments[:-1], key)
            try:
                fd = os.open(segments[-1], _DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    # ENOTDIR also covers a regular file on the way: such a key cannot
                    # name an object, so it is refused rather than called "missing".
                    raise RefusedKey(
                        f"storage key {key!r} goes through {segments[-1]!r}, "
                        "which is a symlink or not a folder"
                    ) from exc
                raise
        self._fds[path] = fd
        return fd
