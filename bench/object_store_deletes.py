"""Benchmark: deleting N objects through the S3 and Azure backends vs one request per key.

    python -m bench.object_store_deletes [--objects 3000]

Starts moto's S3 server and Azurite (from node_modules, see package.json) on free loopback
ports, uploads N objects, and times deleting them three ways: the backend with its default
parallel bound, the backend with one batch in flight, and the naive baseline of one delete
request per key. Prints wall time and the DELETE/POST requests sent (counted by the SDKs' own
request hooks: botocore's `before-send` event, azure-storage's `raw_request_hook`). These are
emulator figures: they show the request arithmetic and relative cost, not cloud latency.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from azure.storage.blob import ContainerClient

from bench.azurite import Azurite
from bench.moto_server import MOTO_ENV, MotoServer
from snapshot_ops.storage import DEFAULTS, StorageBackend, open_storage
from snapshot_ops.storage.azure_blob import AzureBlobBackend, retry_policy

PREFIX = "snapshots"


class RequestCount:
    """DELETE and POST requests seen by the hooks it is registered as (thread-safe enough:
    one list append per request)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def botocore(self, request: Any, **_: Any) -> None:
        if request.method in ("POST", "DELETE"):
            self.seen.append(request.method)

    def azure(self, request: Any) -> None:
        if request.http_request.method in ("POST", "DELETE"):
            self.seen.append(request.http_request.method)


class S3Bucket:
    """A fresh bucket in moto; the backend and the baseline count their requests."""

    name = "S3 (moto)"

    def __init__(self, moto: MotoServer) -> None:
        self.moto = moto
        self.client = moto.client()
        self.bucket = f"bench-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=self.bucket)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"{PREFIX}/{key}", Body=data)

    def left(self) -> int:
        return self.client.list_objects_v2(Bucket=self.bucket).get("KeyCount", 0)

    def backend(self, parallel: int, count: RequestCount) -> StorageBackend:
        backend = open_storage(f"s3://{self.bucket}/{PREFIX}", parallel_batches=parallel)
        backend.client.meta.events.register("before-send.s3", count.botocore)
        return backend

    def one_by_one(self, keys: list[str], count: RequestCount) -> None:
        client = self.moto.client()
        client.meta.events.register("before-send.s3", count.botocore)
        for key in keys:
            client.delete_object(Bucket=self.bucket, Key=f"{PREFIX}/{key}")

    def remove(self) -> None:
        self.client.delete_bucket(Bucket=self.bucket)


class AzureContainer:
    """A fresh container in Azurite; the backend and the baseline count their requests."""

    name = "Azure (Azurite)"

    def __init__(self, azurite: Azurite) -> None:
        self.connection_string = azurite.connection_string
        self.container_name = f"bench-{uuid.uuid4().hex[:12]}"
        self.container = ContainerClient.from_connection_string(
            self.connection_string, self.container_name
        )
        self.container.create_container()

    def put(self, key: str, data: bytes) -> None:
        self.container.upload_blob(f"{PREFIX}/{key}", data, overwrite=True)

    def left(self) -> int:
        return sum(1 for _ in self.container.list_blob_names())

    def counted_client(self, count: RequestCount) -> ContainerClient:
        return ContainerClient.from_connection_string(
            self.connection_string, self.container_name, raw_request_hook=count.azure
        )

    def backend(self, parallel: int, count: RequestCount) -> StorageBackend:
        # The backend open_storage builds, on a client whose requests are counted.
        retry = retry_policy(
            max_attempts=DEFAULTS.max_attempts, retry_backoff_seconds=DEFAULTS.retry_backoff_seconds
        )
        return AzureBlobBackend(
            self.counted_client(count), PREFIX, parallel_batches=parallel, retry=retry
        )

    def one_by_one(self, keys: list[str], count: RequestCount) -> None:
        container = self.counted_client(count)
        for key in keys:
            container.delete_blob(f"{PREFIX}/{key}")

    def remove(self) -> None:
        self.container.delete_container()
        self.container.close()


def measure(label: str, run: Callable[[RequestCount], object]) -> str:
    count = RequestCount()
    start = time.perf_counter()
    run(count)
    seconds = time.perf_counter() - start
    return f"{label:<48} {seconds:8.2f} s  {len(count.seen):6d} requests"


def delete_with_backend(store: Any, keys: list[str], parallel: int, count: RequestCount) -> None:
    backend = store.backend(parallel, count)
    try:
        results = backend.delete_many(keys)
    finally:
        backend.close()
    assert all(r.gone for r in results), "benchmark deletes failed"


def filled(make_store: Callable[[], Any], keys: list[str]) -> Any:
    store = make_store()
    for key in keys:
        store.put(key, b"x" * 1024)
    return store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=3000)
    args = parser.parse_args(argv)
    keys = [f"{i % 97:02d}/{i:07d}.pdf" for i in range(args.objects)]
    lines: list[str] = [f"{args.objects} objects of 1 KiB each"]

    work = Path(tempfile.mkdtemp(prefix="bench-object-stores-"))
    moto = MotoServer(work / "moto.log")
    os.environ.update(MOTO_ENV, AWS_ENDPOINT_URL=moto.endpoint)
    try:
        azurite = Azurite(work)
    except BaseException:
        moto.stop()
        raise
    makers: list[Callable[[], Any]] = [lambda: S3Bucket(moto), lambda: AzureContainer(azurite)]
    try:
        for make_store in makers:
            for parallel in (DEFAULTS.parallel_batches, 1):
                store = filled(make_store, keys)
                label = f"{store.name}: backend, {parallel} batch(es) in flight"
                lines.append(
                    measure(
                        label,
                        lambda count, s=store, p=parallel: delete_with_backend(s, keys, p, count),
                    )
                )
                assert store.left() == 0, "benchmark left objects behind"
                store.remove()
            store = filled(make_store, keys)
            label = f"{store.name}: one request per key (baseline)"
            lines.append(measure(label, lambda count, s=store: s.one_by_one(keys, count)))
            store.remove()
    finally:
        moto.stop()
        azurite.stop()
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
