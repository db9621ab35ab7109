"""A real case-insensitive folder: a fresh NTFS volume mounted through FUSE.

The kernels the tests run on have no case folding for ext4 or tmpfs (and XFS's ascii-ci is
gone), so a case-insensitive, case-preserving file system is made the way a Windows share or
an NTFS disk behaves: Debian's ntfs-3g formats a 64 MiB image file (`mkntfs`) and mounts it
with `lowntfs-3g -o ignore_case`, which looks names up without regard to case (through the
volume's upcase table) and keeps the case they were created with; its listings show every
name in lowercase. It does not ignore Unicode normalization: "é" and "e" + U+0301 are two
names there.

The fixtures (registered by the top conftest.py): `ntfs_folder` gives the mount point of a
new volume (read-write), `read_only_ntfs_folder` the same mounted read-only; both unmount
and remove the image afterwards. `make test` installs ntfs-3g. A test using them is skipped
only where mounting cannot work at all (not root, no /dev/fuse), with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

#: The volume's size: enough for the tests' files, and a sparse file until written.
IMAGE_BYTES = 64 * 1024 * 1024


def mount_ntfs(image: Path, mount_point: Path, *options: str) -> None:
    """Format `image` as a new NTFS volume and mount it at `mount_point` with ntfs-3g's
    lowntfs-3g, case-insensitively (`ignore_case`) and with `options` (e.g. "ro").

    Skips the test where mounting cannot work here (not root, no /dev/fuse); fails it when
    ntfs-3g is not installed (make test installs it) or the mount fails."""
    if os.geteuid() != 0:
        pytest.skip("mounting the NTFS test volume through FUSE needs root")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse: this machine cannot mount FUSE file systems")
    for tool in ("mkntfs", "lowntfs-3g"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: install ntfs-3g (Debian package; make test does)")
    with image.open("wb") as file:
        file.truncate(IMAGE_BYTES)
    subprocess.run(["mkntfs", "-q", "-F", "-Q", str(image)], check=True, capture_output=True)
    mount_point.mkdir(exist_ok=True)
    opts = ",".join(("ignore_case", *options))
    subprocess.run(
        ["lowntfs-3g", "-o", opts, str(image), str(mount_point)], check=True, capture_output=True
    )
    if not os.path.ismount(mount_point):
        pytest.fail(f"lowntfs-3g returned but {mount_point} is not a mount point")


def unmount(mount_point: Path) -> None:
    """Unmount a FUSE mount made by `mount_ntfs` (umount as root, else fusermount -u)."""
    if not os.path.ismount(mount_point):
        return
    command = ["umount", str(mount_point)]
    if shutil.which("umount") is None:
        command = ["fusermount", "-u", str(mount_point)]
    subprocess.run(command, check=True, capture_output=True)


def _volume(tmp_path: Path, *options: str) -> Iterator[Path]:
    mount_point = tmp_path / "ntfs"
    image = tmp_path / "ntfs.img"
    try:
        mount_ntfs(image, mount_point, *options)
        yield mount_point
    finally:
        unmount(mount_point)
        image.unlink(missing_ok=True)


@pytest.fixture
def ntfs_folder(tmp_path: Path) -> Iterator[Path]:
    """The mount point of a new, empty, case-insensitive NTFS volume (see the module)."""
    yield from _volume(tmp_path)


@pytest.fixture
def read_only_ntfs_folder(tmp_path: Path) -> Iterator[Path]:
    """A new NTFS volume mounted read-only: nothing can be created in it."""
    yield from _volume(tmp_path, "ro")
