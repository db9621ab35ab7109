"""Waiting for something another process or thread does, and the free ports services start on.

`wait_until` is the one polling loop of the tests: it calls a predicate until it returns
something true, and fails with a message naming what was awaited when the time is up. A
predicate may itself raise (e.g. when the process it waits for has exited), which ends the
wait at once with that error.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """What was awaited did not happen in time (an AssertionError, so it fails the test)."""


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str | Callable[[], str],
) -> T:
    """Call `predicate` every `interval` seconds until it returns a true value; return it.

    Raises WaitTimeout after `timeout` seconds, saying "timed out after <timeout> s waiting
    for <what>"; `what` may be a callable, evaluated then, to include the last state seen.
    Exceptions from `predicate` propagate unchanged.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {described}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment of the call."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections at host:port (within half a second)."""
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def still_running(process: subprocess.Popen[Any], name: str) -> None:
    """Raise RuntimeError if `process` has exited (for predicates waiting on it)."""
    if process.poll() is not None:
        raise RuntimeError(f"{name} exited with {process.returncode}")


def wait_for_port(
    port: int, process: subprocess.Popen[Any] | None = None, timeout: float = 30
) -> None:
    """Wait until something listens on 127.0.0.1:`port`; RuntimeError if `process` (the
    service expected to listen there) exits first, WaitTimeout after `timeout` seconds."""

    def listening() -> bool:
        if process is not None:
            still_running(process, f"the service on port {port}")
        return port_answers(port)

    wait_until(listening, timeout=timeout, interval=0.1, what=f"a listener on 127.0.0.1:{port}")
