"""Wall time and peak memory of a command and every process it starts.

Two memory figures, both read from /proc every 50 ms over the process and all its
descendants, because neither alone is the whole truth:

- `tree_peak_bytes`: the largest *sum* of resident memory (VmRSS) over the tree (a
  multiprocess executor's step processes run side by side, so their memory adds up). A
  peak shorter than a sample can be missed.
- `max_single_bytes`: the largest kernel high-water mark (VmHWM) of any one process in the
  tree. The kernel keeps it, so no sample can miss a peak (except in a process's last
  50 ms). `ru_maxrss` from wait4 is not used: it also counts the forking parent's memory,
  i.e. this harness's, which holds the generated rows.

The run's peak memory is the larger of the two.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SAMPLE_SECONDS = 0.05


@dataclass(frozen=True)
class Measured:
    returncode: int
    wall_seconds: float
    started_at: float  # epoch seconds when the process was started
    tree_peak_bytes: int
    max_single_bytes: int

    @property
    def peak_bytes(self) -> int:
        return max(self.tree_peak_bytes, self.max_single_bytes)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name may contain spaces or parentheses: fields start after the last ')'.
        ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(name))
    return tree


def _tree_memory(root: int) -> tuple[int, int]:
    """(sum of VmRSS, largest VmHWM) over `root` and its descendants, in bytes."""
    tree = _children()
    total = highest = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, ()))
        try:
            with open(f"/proc/{pid}/status", "rb") as handle:
                for line in handle:
                    if line.startswith(b"VmRSS:"):
                        total += int(line.split()[1]) * 1024
                    elif line.startswith(b"VmHWM:"):
                        highest = max(highest, int(line.split()[1]) * 1024)
        except OSError:
            continue
    return total, highest


def run_measured(
    command: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_path: Path
) -> Measured:
    """Run `command` to completion, its output going to `log_path`; measure it."""
    peak = highest = 0
    done = threading.Event()
    with open(log_path, "wb") as log:
        started_at = time.time()
        start = time.perf_counter()
        process = subprocess.Popen(command, env=dict(env), cwd=cwd, stdout=log, stderr=log)

        def sample() -> None:
            nonlocal peak, highest
            while not done.is_set():
                total, hwm = _tree_memory(process.pid)
                peak, highest = max(peak, total), max(highest, hwm)
                done.wait(SAMPLE_SECONDS)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        returncode = process.wait()
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
    return Measured(
        returncode=returncode,
        wall_seconds=wall,
        started_at=started_at,
        tree_peak_bytes=peak,
        max_single_bytes=highest,
    )
