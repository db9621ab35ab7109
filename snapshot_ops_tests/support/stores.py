"""The three stores the tests run on, seen from the application's side.

Each `Store` writes and inspects objects directly (not through the backend under test) and
names the storage URL the job is pointed at. The object stores also make the store answer
as some stores do, through their proxy: refuse to delete a key (`refuse_deleting`), answer
every batch request as a store without batch deletes (`refuse_batches`), or fail a key
inside batch answers with a passing error (`fail_in_batches`). The object stores are real
HTTP services started once per test session on free loopback ports: moto's server for S3
and Azurite (installed from npm by `make test`) for Azure Blob, each behind a `FaultProxy`
through which the backend under test talks.

The fixtures (registered by the top conftest.py): `moto_server` and `azurite_server` for the
session, `s3_proxy` and `azure_proxy` in front of them (with the SDKs' environment pointing
at the proxy), a fresh `filesystem_store`, `s3_store` or `azure_store` per test, and `store`,
which runs a test once per backend.
"""

from __future__ import annotations

import os
import posixpath
import subprocess
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from azure.storage.blob import BlobLeaseClient, BlobServiceClient, ContainerClient
from botocore.config import Config

from snapshot_ops.storage import StorageBackend, open_storage
from snapshot_ops_tests.support import REPO
from snapshot_ops_tests.support.faultproxy import FaultProxy, KeyFault, Seen, azure_error, s3_error
from snapshot_ops_tests.support.waiting import free_port, wait_for_port

AZURITE = REPO / "node_modules" / ".bin" / "azurite-blob"
#: Azurite's documented development account (public, the same for every installation).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
#: Retries stay on but short, so a test of throttling takes a fraction of a second.
TEST_RETRY = {"max_attempts": 3, "retry_backoff_seconds": 0.05}


def start_azurite(workdir: Path, *options: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start Azurite's blob service in memory on a free port, with Azurite's command-line
    `options` added (e.g. --oauth basic); return (process, port)."""
    if not AZURITE.exists():
        raise RuntimeError(
            f"{AZURITE} is missing: run `make test` (it runs `npm install` from package.json)"
        )
    port = free_port()
    process = subprocess.Popen(
        [
            str(AZURITE),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",  # the Python SDK may be newer than the emulator
            "--silent",
            *options,
        ],
        cwd=workdir,  # anything Azurite writes despite in-memory persistence lands here
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
    except BaseException:
        stop_process(process)
        raise
    return process, port


def stop_process(process: subprocess.Popen[Any]) -> None:
    """Stop a service this test session started (Azurite lingers on open keep-alives)."""
    process.terminate()
    try:
        process.wait(3)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def azurite_connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
    )


#: How a store without batch deletes answers a batch request, by status: (S3 `<Code>`,
#: Azure `x-ms-error-code`).
NO_BATCHES = {405: ("MethodNotAllowed", "UnsupportedHttpVerb"), 501: ("NotImplemented", "")}
#: Passing errors a batch answer may give one key: (S3 `<Code>`, Azure status, Azure code).
PASSING = {
    "internal-error": ("InternalError", 500, "InternalError"),
    "slow-down": ("SlowDown", 503, "ServerBusy"),
}


def is_batch_request(seen: Seen) -> bool:
    """An S3 DeleteObjects or an Azure Blob Batch request."""
    return seen.is_s3_delete_objects or seen.is_blob_batch


class Store(ABC):
    """One place objects live, with direct access for arranging and checking a test."""

    #: The backend tells "already gone" from "deleted now" (S3's DeleteObjects cannot).
    reports_missing = True
    #: Whether a key the store refuses still has its object afterwards.
    refused_object_survives = True
    #: The fault-injecting proxy the backend talks through (object stores only).
    proxy: FaultProxy | None = None
    #: What the store answers when it refuses a delete (see refuse_deleting).
    refusal: str = ""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def full_key(self, key: str) -> str:
        # Resolved like a path, so "../x" names the object beside the prefix that such a
        # key would reach if a backend let it through.
        return posixpath.normpath(f"{self.prefix}/{key}") if self.prefix else key

    @property
    @abstractmethod
    def url(self) -> str:
        """The storage URL the job is given."""

    @abstractmethod
    def put_raw(self, full_key: str, data: bytes) -> None: ...

    @abstractmethod
    def exists_raw(self, full_key: str) -> bool: ...

    @abstractmethod
    def all_keys(self) -> set[str]:
        """Every object in the bucket, container or folder tree (full keys)."""

    def refusable_key(self, key: str) -> str:
        """A key like `key` that `refuse_deleting` can make the store refuse."""
        return key

    @abstractmethod
    def refuse_deleting(self, key: str) -> None:
        """Make the store itself refuse to delete `key` (its object, if any, is kept)."""

    def put(self, key: str, data: bytes) -> None:
        self.put_raw(self.full_key(key), data)

    def exists(self, key: str) -> bool:
        return self.exists_raw(self.full_key(key))

    def open(self, **options: Any) -> StorageBackend:
        return open_storage(self.url, **{**TEST_RETRY, **options})


class FolderStore(Store):
    """A folder; objects outside the prefix are files beside the root."""

    def __init__(self, base: Path) -> None:
        super().__init__("snapshots")
        self.base = base
        (base / self.prefix).mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return (self.base / self.prefix).as_uri()

    def put_raw(self, full_key: str, data: bytes) -> None:
        path = self.base / full_key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def exists_raw(self, full_key: str) -> bool:
        return os.path.lexists(self.base / full_key)  # False, not an error, for too long a name

    def all_keys(self) -> set[str]:
        return {p.relative_to(self.base).as_posix() for p in self.base.rglob("*") if p.is_file()}

    # A file system refuses a name longer than NAME_MAX (ENAMETOOLONG) for root as well;
    # permissions would not stop the root user tests often run as.
    refused_object_survives = False
    refusal = "File name too long"

    def refusable_key(self, key: str) -> str:
        return f"{key.rsplit('/', 1)[0]}/{'n' * 300}.pdf" if "/" in key else "n" * 300

    def refuse_deleting(self, key: str) -> None:
        # The folder must exist, or the key is simply "missing".
        (self.base / self.full_key(key)).parent.mkdir(parents=True, exist_ok=True)


class S3Store(Store):
    """A fresh bucket in moto's server; the backend goes through the proxy."""

    reports_missing = False
    refusal = "AccessDenied"

    def __init__(self, moto_url: str, proxy: FaultProxy) -> None:
        super().__init__("snapshots")
        self.proxy = proxy
        self.bucket = f"snap-{uuid.uuid4().hex[:16]}"
        # Direct to moto: arranging a test must not show up in the proxy's records.
        self.client = boto3.client(
            "s3", endpoint_url=moto_url, config=Config(retries={"mode": "standard"})
        )
        self.client.create_bucket(Bucket=self.bucket)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def put_raw(self, full_key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=full_key, Body=data)

    def exists_raw(self, full_key: str) -> bool:
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=full_key)
        return any(item["Key"] == full_key for item in listed.get("Contents", []))

    def all_keys(self) -> set[str]:
        keys: set[str] = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            keys.update(item["Key"] for item in page.get("Contents", []))
        return keys

    def refuse_deleting(self, key: str) -> None:
        # As S3 does under a bucket policy denying s3:DeleteObject on this key: the batch
        # answers 200 with an AccessDenied <Error> for it.
        self.proxy.refused_s3_keys.add(self.full_key(key))

    def refuse_batches(self, status: int) -> None:
        """Answer every DeleteObjects `status`, as a store without it does (see NO_BATCHES)."""
        code = NO_BATCHES[status][0]
        self.proxy.add_fault(s3_error(is_batch_request, status, code, "Not here", 1_000_000))

    def fail_in_batches(self, key: str, kind: str, times: int) -> KeyFault:
        """The next `times` DeleteObjects answers carrying `key` give it the `<Error>` of
        PASSING[kind]; its object stays."""
        fault = KeyFault(PASSING[kind][0], "Please try again.", times=times)
        self.proxy.key_faults[self.full_key(key)] = fault
        return fault

    def release(self, key: str) -> None:
        self.proxy.refused_s3_keys.discard(self.full_key(key))

    def remove(self) -> None:
        for key in self.all_keys():
            self.client.delete_object(Bucket=self.bucket, Key=key)
        self.client.delete_bucket(Bucket=self.bucket)


class AzureStore(Store):
    """A fresh container in Azurite; the backend goes through the proxy."""

    refusal = "LeaseIdMissing"

    def __init__(self, direct_connection_string: str, proxy: FaultProxy) -> None:
        super().__init__("snapshots")
        self.proxy = proxy
        self.leases: dict[str, BlobLeaseClient] = {}
        self.name = f"snap-{uuid.uuid4().hex[:16]}"
        service = BlobServiceClient.from_connection_string(direct_connection_string)
        self.container: ContainerClient = service.create_container(self.name)

    @property
    def url(self) -> str:
        return f"az://{self.name}/{self.prefix}"

    def put_raw(self, full_key: str, data: bytes) -> None:
        self.container.upload_blob(full_key, data, overwrite=True)

    def exists_raw(self, full_key: str) -> bool:
        return self.container.get_blob_client(full_key).exists()

    def all_keys(self) -> set[str]:
        return set(self.container.list_blob_names())

    def refuse_deleting(self, key: str) -> None:
        # A leased blob: Azure refuses a delete without the lease id (412 LeaseIdMissing).
        self.leases[key] = self.container.get_blob_client(self.full_key(key)).acquire_lease()

    def refuse_batches(self, status: int) -> None:
        """Answer every Blob Batch `status`, as a store without it does (see NO_BATCHES)."""
        self.proxy.add_fault(
            azure_error(is_batch_request, status, NO_BATCHES[status][1], times=1_000_000)
        )

    def fail_in_batches(self, key: str, kind: str, times: int) -> KeyFault:
        """The next `times` Blob Batch answers carrying `key` give it the sub-response of
        PASSING[kind]; its blob stays."""
        _, status, code = PASSING[kind]
        fault = KeyFault(code, status=status, times=times)
        self.proxy.key_faults[f"{self.name}/{self.full_key(key)}"] = fault
        return fault

    def release(self, key: str) -> None:
        self.leases.pop(key).release()

    def remove(self) -> None:
        self.container.delete_container()
        self.container.close()


# -- fixtures ------------------------------------------------------------------------------

#: Dummy credentials for the emulators; distinctive so tests can check they are never shown.
TEST_AWS_SECRET = "test-secret-3f9c2a7be1d54c06"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[tuple[str, int]]:
    """moto's S3 server, a real HTTP endpoint on a free loopback port, for the session."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield "127.0.0.1", port
    server.stop()


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """Azurite's blob service (in memory) on a free loopback port, for the session."""
    process, port = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield "127.0.0.1", port
    stop_process(process)


@pytest.fixture(scope="session")
def s3_proxy(moto_server: tuple[str, int]) -> Iterator[FaultProxy]:
    """A proxy in front of moto, and boto3's standard variables pointing at it."""
    proxy = FaultProxy(moto_server)
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
            env.delenv(name, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "test-key-id")
        env.setenv("AWS_SECRET_ACCESS_KEY", TEST_AWS_SECRET)
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_ENDPOINT_URL", proxy.url)
        yield proxy
    proxy.close()


@pytest.fixture(scope="session")
def azure_proxy(azurite_server: tuple[str, int]) -> Iterator[FaultProxy]:
    """A proxy in front of Azurite, and the SDK's connection string variable pointing at it."""
    proxy = FaultProxy(azurite_server)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string(proxy.port))
        yield proxy
    proxy.close()


@pytest.fixture
def filesystem_store(tmp_path: Path) -> FolderStore:
    return FolderStore(tmp_path / "fs")


@pytest.fixture
def s3_store(s3_proxy: FaultProxy, moto_server: tuple[str, int]) -> Iterator[S3Store]:
    proxy = s3_proxy
    proxy.reset()
    store = S3Store(f"http://{moto_server[0]}:{moto_server[1]}", proxy)
    yield store
    proxy.reset()
    store.remove()


@pytest.fixture
def azure_store(azure_proxy: FaultProxy, azurite_server: tuple[str, int]) -> Iterator[AzureStore]:
    proxy = azure_proxy
    proxy.reset()
    store = AzureStore(azurite_connection_string(azurite_server[1]), proxy)
    yield store
    proxy.reset()
    store.remove()


@pytest.fixture(params=["filesystem", "s3", "azure"])
def store(request: pytest.FixtureRequest) -> Store:
    """Each test using this runs once per storage backend."""
    return request.getfixturevalue(f"{request.param}_store")
