"""A command run to completion the way a user or CI types it: `python -m snapshot_ops.…`,
`dagster job execute …`, `dg …`, with its own environment and working folder."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from snapshot_ops_tests.support import REPO

#: How much of the end of stdout and of stderr a failure message shows, in characters.
TAIL = 3000


def python_module(module: str, *args: str) -> list[str]:
    """The command line `python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def output_tails(done: subprocess.CompletedProcess[str]) -> str:
    """The command, its exit status and the last TAIL characters of its stdout and stderr."""
    return (
        f"{done.args} exited {done.returncode}\n"
        f"--- stdout (end) ---\n{done.stdout[-TAIL:]}\n"
        f"--- stderr (end) ---\n{done.stderr[-TAIL:]}"
    )


def run_command(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO,
    timeout: float = 300,
    returncode: int | None = 0,
) -> subprocess.CompletedProcess[str]:
    """Run `args` in `cwd` with `env` (None: this process's environment) until it exits or
    `timeout` seconds pass (subprocess.TimeoutExpired); return the completed process with
    its stdout and stderr as text.

    `returncode`: the exit status asserted, the message showing `output_tails`; None when
    the caller looks at the status itself."""
    done = subprocess.run(
        list(args),
        cwd=cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if returncode is not None:
        assert done.returncode == returncode, output_tails(done)
    return done
