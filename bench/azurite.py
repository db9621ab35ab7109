"""Azurite's blob service for the benchmark: its own process on a free loopback port.

Like bench/moto_server.py, a small piece of the benchmark's own, so that it needs nothing
from the tests. Azurite is installed from npm (package.json) into node_modules/.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from bench.moto_server import START_TIMEOUT_SECONDS, free_port

REPO = Path(__file__).resolve().parent.parent
AZURITE = REPO / "node_modules" / ".bin" / "azurite-blob"
#: Azurite's documented development account (public, the same for every installation).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class Azurite:
    """`azurite-blob` in memory on a free loopback port, started in `workdir`.

    Raises RuntimeError if it is not installed or does not accept connections within
    START_TIMEOUT_SECONDS. Stop it with `stop`.
    """

    def __init__(self, workdir: Path) -> None:
        if not AZURITE.exists():
            raise RuntimeError(f"{AZURITE} is missing: run `npm install` (see package.json)")
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                str(AZURITE),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--inMemoryPersistence",
                "--skipApiVersionCheck",  # the Python SDK may be newer than the emulator
                "--silent",
            ],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("Azurite did not start") from None
                time.sleep(0.2)

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{ACCOUNT};"
        )

    def stop(self) -> None:
        """Stop it (it lingers on open keep-alive connections, so kill it if it must)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
