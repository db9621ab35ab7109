"""moto's S3 server for the benchmark: its own process on a free loopback port.

The benchmark keeps this small piece of its own rather than borrow the test suite's
helpers: `python -m bench.run` must work from a checkout without the tests.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: Moto accepts any credentials; these only keep botocore from looking for real ones.
MOTO_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: How long the server may take to accept connections before the benchmark gives up.
START_TIMEOUT_SECONDS = 30


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """`python -m moto.server` on a free loopback port, its output in `log_path`.

    Raises RuntimeError if it does not accept connections within START_TIMEOUT_SECONDS.
    Stop it with `stop`.
    """

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=self._log,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"moto server did not start; see {log_path}") from None
                time.sleep(0.2)

    def client(self) -> Any:
        """A boto3 S3 client for this server (40 pooled connections: the 32-thread baseline)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session(
            aws_access_key_id=MOTO_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=MOTO_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=MOTO_ENV["AWS_DEFAULT_REGION"],
        ).client("s3", endpoint_url=self.endpoint, config=Config(max_pool_connections=40))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()
