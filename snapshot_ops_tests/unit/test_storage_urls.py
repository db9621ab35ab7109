"""How SNAPSHOT_OPS_STORAGE_URL picks a backend, and what it refuses before any I/O.

s3:// and az:// name a bucket or container and an optional prefix; a URL carrying
credentials, a prefix that is not a plain relative path, or an unknown scheme is a
ConfigError that says what to fix, without echoing a secret.
Azure's credential sources are taken in the documented order (connection string, account
URL, account name); none, an unusable one, or the credential path without azure-identity is
a ConfigError naming what to set. The object-store timeouts reach the SDK's client and must
be positive. The storage defaults are one set (storage.DEFAULTS) that the resource and
open_storage share.
"""

from __future__ import annotations

import datetime as dt
import inspect
import sys
from dataclasses import asdict

import pytest
from azure.identity import DefaultAzureCredential

from snapshot_ops.defs.resources import SnapshotStorage
from snapshot_ops.errors import ConfigError
from snapshot_ops.storage import DEFAULTS, open_storage
from snapshot_ops.storage.azure_blob import AzureBlobBackend
from snapshot_ops.storage.s3 import S3Backend


@pytest.fixture
def no_cloud_env(monkeypatch):
    for name in (
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_ACCOUNT_URL",
        "AZURE_STORAGE_ACCOUNT_NAME",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def test_s3_url_names_bucket_and_prefix(no_cloud_env):
    backend = open_storage("s3://snapshots-bucket/parse/snapshots/")
    try:
        assert isinstance(backend, S3Backend)
        assert (backend.bucket, backend.prefix) == ("snapshots-bucket", "parse/snapshots")
        assert backend.description == "s3://snapshots-bucket/parse/snapshots"
    finally:
        backend.close()


def test_az_url_names_container_and_prefix(no_cloud_env, monkeypatch):
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;"
        "EndpointSuffix=core.windows.net",
    )
    backend = open_storage("az://snapshots/parse")
    try:
        assert isinstance(backend, AzureBlobBackend)
        assert backend.description == "az://snapshots/parse"
        assert "a2V5" not in backend.description
    finally:
        backend.close()


def test_credentials_in_the_url_are_refused_and_not_echoed(no_cloud_env):
    with pytest.raises(ConfigError) as caught:
        open_storage("s3://AKIAEXAMPLE:hunter2secret@bucket/prefix")
    assert "hunter2secret" not in str(caught.value)
    assert "credentials" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "s3:///prefix",  # no bucket
        "s3://bucket/../elsewhere",
        "s3://bucket/a//b",
        "az://container/./x",
        "s3://bucket/prefix?versionId=1",
        "gs://bucket/prefix",
    ],
)
def test_unusable_urls_are_config_errors(no_cloud_env, url):
    with pytest.raises(ConfigError):
        open_storage(url)


def test_azure_without_any_credential_source_says_what_to_set(no_cloud_env):
    with pytest.raises(ConfigError) as caught:
        open_storage("az://container/prefix")
    for name in (
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_ACCOUNT_URL",
        "AZURE_STORAGE_ACCOUNT_NAME",
        "DefaultAzureCredential",
    ):
        assert name in str(caught.value)


def test_an_unusable_connection_string_is_named_and_not_repeated(no_cloud_env, monkeypatch):
    secret = "AccountKey=c2VjcmV0LWtleQ=="
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", f"AccountName;{secret}")
    with pytest.raises(ConfigError) as caught:
        open_storage("az://snapshots/parse")
    assert str(caught.value) == "AZURE_STORAGE_CONNECTION_STRING is not usable"


def test_the_account_name_names_the_public_cloud_endpoint(no_cloud_env, monkeypatch):
    # No request is made: DefaultAzureCredential asks for a token on the first request
    # (integration/test_azure_credential.py runs that path against a store).
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "acmeparser")
    backend = open_storage("az://snapshots/parse")
    try:
        assert backend.container.url == "https://acmeparser.blob.core.windows.net/snapshots"
        assert isinstance(backend.container.credential, DefaultAzureCredential)
    finally:
        backend.close()


def test_the_credential_path_without_azure_identity_names_the_extra(no_cloud_env, monkeypatch):
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "acmeparser")
    monkeypatch.setitem(sys.modules, "azure.identity", None)  # import fails as if absent
    with pytest.raises(ConfigError) as caught:
        open_storage("az://snapshots/parse")
    assert "pip install -c constraints.txt -e '.[azure]'" in str(caught.value)


def test_parallel_bound_and_attempts_are_checked(no_cloud_env):
    with pytest.raises(ConfigError, match="parallel_batches"):
        open_storage("s3://bucket/p", parallel_batches=0)
    with pytest.raises(ConfigError, match="max_attempts"):
        open_storage("s3://bucket/p", max_attempts=0)


def test_timeouts_reach_the_s3_client_and_must_be_positive(no_cloud_env):
    resource = SnapshotStorage(
        url="s3://bucket/p", connect_timeout_seconds=3.0, read_timeout_seconds=7.0
    )
    backend = resource.open_backend()
    try:
        config = backend.client.meta.config
        assert (config.connect_timeout, config.read_timeout) == (3.0, 7.0)
    finally:
        backend.close()
    with pytest.raises(ConfigError, match="read_timeout_seconds"):
        open_storage("s3://bucket/p", read_timeout_seconds=0)


def test_the_defaults_are_one_set_and_give_the_documented_lease():
    resource = SnapshotStorage(url="file:///srv/snapshots")
    parameters = inspect.signature(open_storage).parameters
    for name, value in asdict(DEFAULTS).items():
        assert getattr(resource, name) == value, name
        assert parameters[name].default == value, name
    # The figure cleanup.lease_length's docstring gives for the defaults.
    assert resource.lease() == dt.timedelta(minutes=18)
