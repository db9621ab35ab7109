"""Filesystem backend: objects are regular files under one root folder.

Every key is walked from the root one folder at a time with O_NOFOLLOW, so a symlink
anywhere on the way (or as the object itself) is refused instead of followed: nothing
outside the root can be reached, even if the tree changes while the job runs.

One key never stops the others: whatever the operating system raises for one key (an
OSError, or a UnicodeEncodeError for a name the file system cannot encode, such as a lone
surrogate) becomes that key's result. A key whose file does not exist is MISSING; a key
whose root folder no longer exists fails (`StorageRootGone`): that says nothing about its
object, which may be on a volume that went away.

After a batch, folders it emptied are removed bottom up, by `rmdir` only: never the root,
never a folder that still holds anything (rmdir itself refuses), never through a symlink
(the same O_NOFOLLOW walk). A folder whose last file is deleted at the very moment an
application has created it, and not yet its file, can be removed under the application,
whose file creation then fails with ENOENT; the application should then create the folder
again and retry (`remove_empty_folders=False` turns the removal off).

How the folder resolves names (`key_matching`) is found out on the file system itself, never
from the platform's name: the first time it is asked, the backend creates one empty probe
file in the root (`.snapshot-ops-probe-<random>-Abé`, with cased letters and a precomposed
"é"), looks it up by its case-swapped and by its decomposed (NFD) spelling, compares the
device and inode numbers, and removes it. A lookup that finds the probe means the file
system ignores case (NTFS, an SMB share, APFS, ZFS casesensitivity=insensitive) or
normalization (APFS, HFS+, ZFS normalization=formD). If the probe cannot be created (a
read-only root) or a lookup fails otherwise, the backend assumes the root ignores both:
comparing keys more loosely than the store only keeps files.

Case folding can differ below the root: ext4 and f2fs set it per folder (`chattr +F`),
Windows per folder too (`fsutil file setCaseSensitiveInfo`), and another file system can be
mounted on a folder. So each key is also checked where it lives, read-only, before it is
marked (`refusals`) and again right before it is deleted: for each name on the key's path
that has another spelling (another case, or another normalization), that spelling is looked
up in its folder; if it finds the same file or folder, the folder resolves names more
loosely than `key_matching` says, the comparisons of keys made for the run do not hold
there, and the key is refused (its row stays live and is reported). A folder's answer is
kept while one call works through its keys.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import threading
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from snapshot_ops.errors import ConfigError
from snapshot_ops.storage.base import (
    DeleteResult,
    KeyMatching,
    Outcome,
    RefusedKey,
    StorageBackend,
    check_key,
)

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
T = TypeVar("T")

#: The probe file's name: cased letters (and a random part, of hex digits, in either case)
#: and a precomposed "é" (U+00E9), so it has both a case-swapped and a decomposed spelling.
PROBE_PREFIX = ".snapshot-ops-probe-"
_PROBE_NAME = re.compile(re.escape(PROBE_PREFIX) + r"[0-9a-fA-F]{32}-ab\u00e9", re.IGNORECASE)
#: What a folder that cannot be probed is taken to do: the loosest, so no comparison of keys
#: is ever stricter than the store.
ASSUMED = KeyMatching(ignores_case=True, ignores_normalization=True)


class StorageRootGone(OSError):
    """The storage root itself no longer exists (its volume or mount went away).

    Not a FileNotFoundError on purpose: that means "this object is already gone", and a
    missing root says nothing about any one object, so a delete reports it as failed.
    """


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
        self._matching: KeyMatching | None = None
        #: How `key_matching` was found: "probed", or why it was assumed.
        self.key_matching_source = "not probed yet"
        self._probing = threading.Lock()

    @property
    def key_matching(self) -> KeyMatching:
        """How the root's file system resolves names, probed on first use (see the module
        docstring); the same answer for the backend's life."""
        with self._probing:
            if self._matching is None:
                self._matching, self.key_matching_source = probe_key_matching(self.root)
                log.info(
                    "storage %s resolves names %s (%s)",
                    self.description,
                    self._matching.describe(),
                    self.key_matching_source,
                )
            return self._matching

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
        # Spellings of one folder (by `key_matching`) are tried once: rmdir is safe by any
        # spelling, since it only removes an empty folder, but a second try costs a syscall.
        fold = self.key_matching.fold
        by_depth: dict[int, dict[tuple[str, ...], tuple[str, ...]]] = {}

        def add(folder: tuple[str, ...]) -> None:
            folded = tuple(fold(name) for name in folder)
            by_depth.setdefault(len(folder), {}).setdefault(folded, folder)

        for key in gone:
            folder = tuple(key.split("/")[:-1])
            if folder:  # a key directly under the root: the root is never removed
                add(folder)
        with _Folders(self.root) as folders:
            for depth in range(max(by_depth, default=0), 0, -1):
                for folder in sorted(by_depth.get(depth, {}).values()):
                    try:
                        os.rmdir(folder[-1], dir_fd=folders.folder(list(folder[:-1])))
                    except (RefusedKey, OSError):
                        continue  # not empty, gone, or not a plain folder: leave it
                    if depth > 1:  # its parent may be empty now
                        add(folder[:-1])

    def sizes(self, keys: Sequence[str]) -> dict[str, int | None]:
        return dict(zip(keys, self._in_slices(keys, self._size_one), strict=True))

    def refusals(self, keys: Sequence[str]) -> dict[str, str]:
        """Besides the shared key checks: each key is walked from the root with O_NOFOLLOW
        like a delete, and its object is looked at without following it. A symlink or a
        file on the way, or an object that is a symlink, a folder or anything else but a
        regular file, is refused, and so is a key in a folder that resolves names more
        loosely than `key_matching` (see the module docstring). A missing object or folder
        is not (its row is settled as already missing while the store shows it is there:
        snapshot_ops.sentinel); nor is an error such as a permission denied, which the
        delete reports as a failure to retry."""
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
        """Every regular file under `prefix`, spelled as the file system lists it (a
        case-insensitive one may list another case than the one it was created with: ntfs-3g
        with ignore_case lists names in lowercase). A probe file of another run's
        `key_matching` is left out."""
        start = os.path.join(self.root, check_key(prefix)) if prefix else self.root
        for folder, dirnames, filenames in os.walk(start, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                if folder == self.root and _PROBE_NAME.fullmatch(name):
                    continue
                path = os.path.join(folder, name)
                if stat.S_ISREG(os.lstat(path).st_mode):
                    yield os.path.relpath(path, self.root)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _delete_one(self, key: str, folders: _Folders) -> DeleteResult:
        try:
            parent, name = folders.parent_of(key)
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                return DeleteResult(key, Outcome.REFUSED, _not_a_regular_file(key, st.st_mode))
            looser = self._looser_folder(key, folders, st)
            if looser is not None:
                return DeleteResult(key, Outcome.REFUSED, looser)
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
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                return _not_a_regular_file(key, st.st_mode)
            return self._looser_folder(key, folders, st)
        except RefusedKey as exc:
            return str(exc)
        except OSError:
            return None

    def _looser_folder(self, key: str, folders: _Folders, target: os.stat_result) -> str | None:
        """Why `key` is refused because a folder on its path resolves names more loosely
        than `key_matching`, or None.

        `key`'s folders are open in `folders` and `target` is its file's lstat. For each name
        on the path that has another spelling in a way `key_matching` does not ignore (case,
        normalization), that spelling is looked up in the name's folder: finding the same
        file or folder (st_dev, st_ino) shows the folder ignores it too. What a folder was
        seen to ignore, and that it keeps the case of ASCII letters, is kept in `folders`
        (see `_other_spellings`), so most folders cost one lookup per call. A name without
        another spelling (e.g. "2026") cannot be confused with another key. A lookup that
        fails otherwise than "not found" counts as ignoring (the safe side).
        """
        declared = self.key_matching
        if declared.covers(ASSUMED):
            return None  # nothing resolves names more loosely
        segments = key.split("/")
        for depth, name in enumerate(segments):
            path = "/".join(segments[:depth])
            known = folders.matching.setdefault(path, {})
            for dimension, other, telling in _other_spellings(name, declared):
                found = known.get(dimension)
                if found is None:
                    if depth == len(segments) - 1:
                        same = (target.st_dev, target.st_ino)
                    else:
                        inner = os.fstat(folders.folder(segments[: depth + 1]))
                        same = (inner.st_dev, inner.st_ino)
                    found = _finds(folders.folder(segments[:depth]), other, same)
                    if found or telling:
                        known[dimension] = found
                if found:
                    where = f"folder {path!r}" if path else "storage root"
                    return (
                        f"storage key {key!r} is in a {where} that ignores {dimension} in "
                        f"names, while the run compares keys as the storage root resolves "
                        f"them ({declared.describe()}): another key could name its file, so "
                        "it is not deleted. Keep such folders out of this storage root, or "
                        "point a storage URL at them"
                    )
        return None

    def _size_one(self, key: str, folders: _Folders) -> int | None:
        try:
            parent, name = folders.parent_of(key)
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except (RefusedKey, OSError, UnicodeEncodeError):
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None


def probe_key_matching(root: str) -> tuple[KeyMatching, str]:
    """How the file system at `root` resolves names, and how that was found ("probed", or
    why ASSUMED was taken), by the probe file described in the module docstring."""
    name = f"{PROBE_PREFIX}{uuid.uuid4().hex}-Ab\u00e9"
    try:
        folder = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        return ASSUMED, f"assumed: cannot open the root to probe it: {exc.strerror}"
    try:
        try:
            probe = os.open(
                name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=folder,
            )
        except (OSError, UnicodeEncodeError) as exc:
            return ASSUMED, f"assumed: cannot create a probe file in the root: {exc}"
        try:
            created = os.fstat(probe)
            same = (created.st_dev, created.st_ino)
            case = _finds(folder, name.translate(_SWAP_ASCII), same)
            normalization = _finds(folder, unicodedata.normalize("NFD", name), same)
        finally:
            os.close(probe)
            os.unlink(name, dir_fd=folder)
    finally:
        os.close(folder)
    return KeyMatching(ignores_case=case, ignores_normalization=normalization), "probed"


def _finds(folder: int, spelling: str, same: tuple[int, int]) -> bool:
    """Whether looking `spelling` up in the open `folder` finds the file or folder whose
    (st_dev, st_ino) is `same`; a lookup that fails otherwise than "not found" (a name the
    file system cannot take) counts as finding it: the answer must never be stricter than
    the file system."""
    try:
        st = os.stat(spelling, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    except (OSError, UnicodeEncodeError):
        return True
    return (st.st_dev, st.st_ino) == same


#: Swaps the case of ASCII letters only: every case-insensitive file system folds those.
_SWAP_ASCII = str.maketrans(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
)


def _other_spellings(name: str, declared: KeyMatching) -> list[tuple[str, str, bool]]:
    """(what is ignored, another spelling of `name` differing only in that, whether the
    answer holds for the whole folder) for each of case and normalization that `declared`
    does not ignore and `name` has another spelling in.

    A folder that ignores case folds ASCII letters whatever else it folds, so the answer
    for a spelling with ASCII letters swapped holds for every name in that folder; a name
    without ASCII letters is tried with each letter's case swapped, and that answer, like
    the answer for a decomposed or composed spelling (file systems differ in which letters
    they fold or compose), holds when the folder is found to ignore it, not otherwise.
    """
    spellings = []
    if not declared.ignores_case:
        swapped = name.translate(_SWAP_ASCII)
        if swapped != name:
            spellings.append(("case", swapped, True))
        elif name.swapcase() != name:
            spellings.append(("case", name.swapcase(), False))
    if not declared.ignores_normalization:
        other = unicodedata.normalize("NFD", name)
        if other == name:
            other = unicodedata.normalize("NFC", name)
        if other != name:
            spellings.append(("Unicode normalization", other, False))
    return spellings


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
        #: What each folder (by path) was seen to ignore or not, for
        #: FilesystemBackend._looser_folder.
        self.matching: dict[str, dict[str, bool]] = {}

    def __enter__(self) -> _Folders:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def parent_of(self, key: str) -> tuple[int, str]:
        """The open folder holding `key`, and the key's last segment.

        Raises RefusedKey for unsafe keys or a symlink (or file) on the way,
        FileNotFoundError when a folder on the way does not exist, StorageRootGone when
        the root itself does not.
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
            try:
                fd = os.open(self._root, _DIR_FLAGS)
            except FileNotFoundError as exc:
                raise StorageRootGone(
                    exc.errno, f"storage root {self._root!r} does not exist (any more)"
                ) from exc
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
