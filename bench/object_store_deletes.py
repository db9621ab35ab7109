"""Benchmark: deleting N objects through the S3 and Azure backends vs one request per key.

    python -m bench.object_store_deletes [--objects 3000]

Starts moto's S3 server and Azurite (from node_modules, see package.json) on free loopback
ports, uploads N objects, and times deleting them three ways: the backend with its default
parallel bound, the backend with one batch in flight, and the naive baseline of one delete
request per key. Prints wall time and request counts (seen by a counting proxy). These are
emulator figures: they show the request arithmetic and relative cost, not cloud latency.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import boto3
from azure.storage.blob import ContainerClient
from moto.server import ThreadedMotoServer

from snapshot_ops.storage import DEFAULTS, open_storage
from snapshot_ops_tests.faultproxy import FaultProxy
from snapshot_ops_tests.stores import (
    AzureStore,
    S3Store,
    Store,
    azurite_connection_string,
    free_port,
    start_azurite,
    stop_process,
)


def measure(label: str, proxy: FaultProxy, run: Callable[..., object], *args: object) -> str:
    proxy.reset()
    start = time.perf_counter()
    run(*args)
    seconds = time.perf_counter() - start
    requests = len(proxy.requests(lambda s: s.method in ("POST", "DELETE")))
    return f"{label:<48} {seconds:8.2f} s  {requests:6d} requests"


def delete_with_backend(store: Store, keys: list[str], parallel: int) -> None:
    backend = open_storage(store.url, parallel_batches=parallel)
    try:
        results = backend.delete_many(keys)
    finally:
        backend.close()
    assert all(r.gone for r in results), "benchmark deletes failed"


def delete_one_by_one(store: Store, keys: list[str]) -> None:
    """The naive baseline: one delete request per key, through the same proxy."""
    if isinstance(store, S3Store):
        client = boto3.client("s3")
        for key in keys:
            client.delete_object(Bucket=store.bucket, Key=store.full_key(key))
    else:
        assert isinstance(store, AzureStore)
        container = ContainerClient.from_connection_string(
            os.environ["AZURE_STORAGE_CONNECTION_STRING"], store.name
        )
        for key in keys:
            container.delete_blob(store.full_key(key))


def filled(make_store: Callable[[], Store], keys: list[str]) -> Store:
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

    moto_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    s3_proxy = FaultProxy(("127.0.0.1", moto_port))
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=s3_proxy.url,
    )
    azurite, azurite_port = start_azurite(Path(tempfile.mkdtemp(prefix="bench-azurite-")))
    az_proxy = FaultProxy(("127.0.0.1", azurite_port))
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = azurite_connection_string(az_proxy.port)
    stores: list[tuple[str, Callable[[], Store], FaultProxy]] = [
        ("S3 (moto)", partial(S3Store, f"http://127.0.0.1:{moto_port}", s3_proxy), s3_proxy),
        (
            "Azure (Azurite)",
            partial(AzureStore, azurite_connection_string(azurite_port), az_proxy),
            az_proxy,
        ),
    ]
    try:
        for name, make_store, proxy in stores:
            for parallel in (DEFAULTS.parallel_batches, 1):
                store = filled(make_store, keys)
                label = f"{name}: backend, {parallel} batch(es) in flight"
                lines.append(measure(label, proxy, delete_with_backend, store, keys, parallel))
                assert store.all_keys() == set(), "benchmark left objects behind"
                store.remove()
            store = filled(make_store, keys)
            label = f"{name}: one request per key (baseline)"
            lines.append(measure(label, proxy, delete_one_by_one, store, keys))
            store.remove()
    finally:
        s3_proxy.close()
        az_proxy.close()
        moto.stop()
        stop_process(azurite)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
