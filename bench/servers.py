"""A service the benchmark starts as its own process on a free loopback port (moto's S3
server, Azurite): started, waited for until it accepts connections, stopped by its pid.

The benchmark keeps these small pieces of its own rather than borrow them from the
tests (snapshot_ops_tests/support): `python -m bench.run` must work from a checkout
without the tests.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Sequence
from typing import Any

#: How long a server may take to accept connections before the benchmark gives up.
START_TIMEOUT_SECONDS = 30


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    args: Sequence[str], port: int, failure: str, **popen: Any
) -> subprocess.Popen[bytes]:
    """Start `args` (`popen`: more subprocess.Popen arguments) and wait until it accepts
    connections on 127.0.0.1:`port`. If it exits first or START_TIMEOUT_SECONDS pass, stop
    it and raise RuntimeError(`failure`)."""
    process = subprocess.Popen(list(args), **popen)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                stop_server(process, grace_seconds=3)
                raise RuntimeError(failure) from None
            time.sleep(0.2)


def stop_server(process: subprocess.Popen[bytes], grace_seconds: float) -> None:
    """Terminate `process`; kill it if it has not exited after `grace_seconds`."""
    process.terminate()
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
