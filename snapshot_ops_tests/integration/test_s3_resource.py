"""S3 configured through dagster-aws's S3Resource, with the storage resource's own limits.

The S3Resource nested in the storage resource gives the client's region, endpoint and
credentials; the storage resource's timeouts, retries (botocore standard mode with its
max_attempts) and connection pool are on the client built from it. A job run and the
reconciliation report configured only through S3Resource fields, with none of boto3's own
variables set, reach moto's server (through the fault proxy) and do exactly what they should.
"""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest
from botocore.config import Config
from dagster import EnvVar
from dagster_aws.s3 import S3Resource

from snapshot_ops.defs.resources import SnapshotDatabase, SnapshotStorage, storage_s3_resource
from snapshot_ops.reconcile import reconcile_resources
from snapshot_ops.storage import Outcome
from snapshot_ops_tests.support.commands import python_module, run_command
from snapshot_ops_tests.support.faultproxy import Fault, Seen
from snapshot_ops_tests.support.jobs import run_cleanup
from snapshot_ops_tests.support.stores import TEST_AWS_SECRET
from snapshot_ops_tests.support.world import World

DAY = dt.timedelta(days=1)


def s3_deletes(seen: Seen) -> bool:
    return seen.is_s3_delete_objects


@pytest.fixture
def no_aws_env(monkeypatch, tmp_path):
    """None of boto3's own sources of endpoint, region or credentials: only the S3Resource
    fields can make a request reach the store."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def s3_resource(endpoint_url: str, **fields) -> S3Resource:
    return S3Resource(
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="test-key-id",
        aws_secret_access_key=TEST_AWS_SECRET,
        **fields,
    )


@pytest.mark.unit
def test_the_client_has_the_storage_timeouts_retries_and_pool(caplog):
    storage = SnapshotStorage(
        url="s3://bucket/prefix",
        max_attempts=2,
        parallel_batches=8,
        connect_timeout_seconds=3.0,
        read_timeout_seconds=7.0,
        s3=S3Resource(region_name="eu-west-1", endpoint_url="http://127.0.0.1:9", max_attempts=9),
    )
    backend = storage.open_backend()
    try:
        client = backend.client
        config = client.meta.config
        assert isinstance(config, Config)
        assert (config.connect_timeout, config.read_timeout) == (3.0, 7.0)
        assert config.retries == {"mode": "standard", "total_max_attempts": 2}
        assert config.max_pool_connections == 16  # two per batch in flight
        # ... and the S3Resource's own fields.
        assert (client.meta.endpoint_url, client.meta.region_name) == (
            "http://127.0.0.1:9",
            "eu-west-1",
        )
    finally:
        backend.close()
    assert "S3Resource max_attempts=9 is not used" in caplog.text


@pytest.mark.unit
def test_s3_must_be_an_s3resource():
    from snapshot_ops.errors import ConfigError

    storage = SnapshotStorage(url="s3://bucket/prefix", s3=SnapshotStorage(url="file:///x"))
    with pytest.raises(ConfigError, match="S3Resource"):
        storage.open_backend()


def test_retries_are_the_storage_max_attempts(s3_store, no_aws_env):
    """Two attempts, not the S3Resource's five: botocore really retries as configured."""
    keys = ["o/1.pdf", "o/2.pdf"]
    for key in keys:
        s3_store.put(key, b"x")
    s3_store.proxy.add_fault(Fault(s3_deletes, 500, b"", times=100))
    storage = SnapshotStorage(url=s3_store.url, max_attempts=2, s3=s3_resource(s3_store.proxy.url))
    backend = storage.open_backend()
    try:
        results = backend.delete_many(keys)
    finally:
        backend.close()

    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.FAILED]
    assert len(s3_store.proxy.requests(s3_deletes)) == 2
    assert all(s3_store.exists(key) for key in keys)


@pytest.mark.e2e
def test_a_job_configured_only_through_s3resource_deletes_exactly_the_expired(
    s3_store, sqlite_url, tmp_path, no_aws_env
):
    world = World(sqlite_url, tmp_path, s3_store)
    try:
        rows = {
            "expired": world.add(age=8 * DAY),
            "expired_unsized": world.add(age=9 * DAY, size=None),
            "fresh": world.add(age=1 * DAY),
            "linked": world.add(age=30 * DAY, linked=True),
        }
        unrelated = "elsewhere/keep.pdf"  # outside the prefix
        s3_store.put_raw(unrelated, b"u")
        resources = {
            "database": SnapshotDatabase(url=sqlite_url),
            "storage": SnapshotStorage(
                url=s3_store.url, max_attempts=2, s3=s3_resource(s3_store.proxy.url)
            ),
        }

        result = run_cleanup(resources["database"], resources["storage"])

        assert result.success
        kept = {s3_store.full_key(world.row(rows[k]).storageKey) for k in ("fresh", "linked")}
        assert s3_store.all_keys() == kept | {unrelated}
        assert [world.is_deleted(fid) for fid in rows.values()] == [True, True, False, False]
        assert len(s3_store.proxy.requests(s3_deletes)) == 1  # through the resource's endpoint
        events = "\n".join(str(event) for event in result.all_events)
        assert TEST_AWS_SECRET not in events

        # The report sees the same bucket, prefix and endpoint: nothing drifted.
        report = reconcile_resources(resources["database"], resources["storage"])
        assert (report.objects, report.rows, report.drift) == (2, 4, False)
    finally:
        world.engine.dispose()


def test_the_report_command_uses_the_s3_settings_of_the_definitions(
    s3_store, sqlite_url, tmp_path, no_aws_env
):
    world = World(sqlite_url, tmp_path, s3_store)
    try:
        world.add(age=1 * DAY)
        lost = world.add(age=1 * DAY, with_file=False)
        s3_store.put("zz/orphan.pdf", b"o")
    finally:
        world.engine.dispose()
    env = {
        **os.environ,
        "SNAPSHOT_OPS_DATABASE_URL": sqlite_url,
        "SNAPSHOT_OPS_STORAGE_URL": s3_store.url,
        "SNAPSHOT_OPS_S3_ENDPOINT_URL": s3_store.proxy.url,
        "SNAPSHOT_OPS_S3_REGION_NAME": "us-east-1",
        "SNAPSHOT_OPS_S3_AWS_ACCESS_KEY_ID": "test-key-id",
        "SNAPSHOT_OPS_S3_AWS_SECRET_ACCESS_KEY": TEST_AWS_SECRET,
    }
    result = run_command(python_module("snapshot_ops.reconcile"), env=env, returncode=3)

    report = json.loads(result.stdout)
    assert report["objects"] == 2
    assert report["orphan_objects"] == {"count": 1, "sample": ["zz/orphan.pdf"]}
    assert report["missing_objects"] == {"count": 1, "sample": [lost]}
    assert TEST_AWS_SECRET not in result.stdout + result.stderr


@pytest.mark.unit
def test_the_definitions_take_s3resource_fields_from_the_environment(monkeypatch):
    env = {
        "SNAPSHOT_OPS_STORAGE_URL": "s3://bucket/prefix",
        "SNAPSHOT_OPS_S3_ENDPOINT_URL": "https://minio.internal:9000",
        "SNAPSHOT_OPS_S3_AWS_SECRET_ACCESS_KEY": TEST_AWS_SECRET,
    }
    resource = storage_s3_resource(env)
    assert isinstance(resource, S3Resource)
    # Read when a run starts, by name: the value is not part of the definitions.
    assert resource.endpoint_url == EnvVar("SNAPSHOT_OPS_S3_ENDPOINT_URL")
    assert resource.aws_secret_access_key == EnvVar("SNAPSHOT_OPS_S3_AWS_SECRET_ACCESS_KEY")
    assert (resource.region_name, resource.profile_name) == (None, None)
    assert storage_s3_resource({**env, "SNAPSHOT_OPS_STORAGE_URL": "file:///srv/x"}) is None
