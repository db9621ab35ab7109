"""moto's S3 server for the benchmark: its own process on a free loopback port.

Started and stopped by bench/servers.py, the benchmark's own: `python -m bench.run` must
work from a checkout without the tests.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bench.servers import free_port, start_server, stop_server

#: Moto accepts any credentials; these only keep botocore from looking for real ones.
MOTO_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoServer:
    """`python -m moto.server` on a free loopback port, its output in `log_path`.

    Raises RuntimeError if it does not accept connections within
    bench.servers.START_TIMEOUT_SECONDS.
    Stop it with `stop`.
    """

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        try:
            self.process = start_server(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                self.port,
                f"moto server did not start; see {log_path}",
                stdout=self._log,
                stderr=self._log,
            )
        except BaseException:
            self._log.close()
            raise

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
        stop_server(self.process, grace_seconds=10)
        self._log.close()
