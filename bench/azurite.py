"""Azurite's blob service for the benchmark: its own process on a free loopback port.

Like bench/moto_server.py, a small piece of the benchmark's own (bench/servers.py), so
that it needs nothing from the tests. Azurite is installed from npm (package.json) into
node_modules/.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.servers import free_port, start_server, stop_server

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
    bench.servers.START_TIMEOUT_SECONDS. Stop it with `stop`.
    """

    def __init__(self, workdir: Path) -> None:
        if not AZURITE.exists():
            raise RuntimeError(f"{AZURITE} is missing: run `npm install` (see package.json)")
        self.port = free_port()
        self.process = start_server(
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
            self.port,
            "Azurite did not start",
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{ACCOUNT};"
        )

    def stop(self) -> None:
        """Stop it (it lingers on open keep-alive connections, so kill it if it must)."""
        stop_server(self.process, grace_seconds=3)
