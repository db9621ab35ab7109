"""Dagster resources: the application database and the snapshot storage.

Both are configured from the environment (see definitions.py); nothing secret is written
in code or YAML, and a storage URL's credentials never reach logs or metadata.

Each holds what it opens for the length of one execution, through Dagster's resource
lifecycle: `SnapshotDatabase.catalog()` connects and reflects the tables on first use and
`SnapshotStorage.backend()` opens the store's client on first use; both are closed by
`teardown_after_execution`. With the in-process executor that is once per run, with the
multiprocess, Celery or Kubernetes executors once per step process. Opening on first use,
not in `setup_for_execution`, keeps a bad URL or a missing table a failure of the step
that met it, with its message, rather than an error starting the resources.

SNAPSHOT_OPS_S3_<FIELD> (e.g. SNAPSHOT_OPS_S3_ENDPOINT_URL) set fields of dagster-aws's
S3Resource for an s3:// storage URL; see `storage_s3_resource`.
"""

import datetime as dt
import functools
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from dagster import ConfigurableResource, EnvVar, InitResourceContext
from pydantic import Field, PrivateAttr

from snapshot_ops.cleanup import lease_length
from snapshot_ops.db import Catalog, make_engine
from snapshot_ops.errors import ConfigError
from snapshot_ops.storage import DEFAULTS, StorageBackend, open_storage
from snapshot_ops.storage.ratelimit import RateLimitedBackend, range_rate

if TYPE_CHECKING:
    from botocore.config import Config
    from dagster_aws.s3 import S3Resource

log = logging.getLogger(__name__)


class SnapshotDatabase(ConfigurableResource):
    """The application's database holding "SnapshotFiles" and "OrderAttachments"."""

    url: str = Field(
        description=(
            "SQLAlchemy URL of the application database, e.g. postgresql://user@host:5432/db "
            "(a plain postgresql:// URL uses psycopg2) or sqlite:////path/app.db."
        )
    )
    snapshot_files_table: str = Field(
        default="SnapshotFiles", description="Name of the application's snapshot table."
    )
    order_attachments_table: str = Field(
        default="OrderAttachments", description="Name of the table linking files to orders."
    )
    app_schema: str | None = Field(
        default=None, description="Schema of the application tables (None: the default)."
    )
    ops_schema: str = Field(
        default="snapshot_ops",
        description="Schema the job creates for its own tables (a name prefix on SQLite).",
    )
    time_format: str = Field(
        default="auto",
        description=(
            'How "createdAt" and "deletedAt" store time: auto (detected from the column '
            "type and the live rows), timestamp (PostgreSQL timestamptz, or timestamp "
            "without time zone), iso_text (ISO 8601 text; no offset: see naive_time_zone), "
            "epoch_seconds or epoch_milliseconds. A setting other than auto is still checked "
            "against the rows; it settles what the data cannot, such as the unit of numbers "
            "outside 2000-2100."
        ),
    )

    naive_time_zone: str | None = Field(
        default=None,
        description=(
            "The zone whose wall time naive times hold (timestamp without time zone, ISO "
            "8601 text without an offset): auto (PostgreSQL: UTC, refused when the "
            "database's zone, or that of a role that may write createdAt, is not UTC; "
            "SQLite: refused as soon as a column holds a naive value, since SQLite keeps no "
            "zone), database (PostgreSQL's TimeZone; refused on SQLite) or an IANA name such "
            "as America/New_York. Checked against the column defaults and the newest rows; a "
            "disagreement stops the run before anything is touched. Unset: "
            "SNAPSHOT_OPS_NAIVE_TIME_ZONE, else auto."
        ),
    )
    unused_column_defaults: list[str] | None = Field(
        default=None,
        description=(
            'The time columns ("createdAt", "deletedAt") whose default the application '
            "never uses, because it writes every value itself (as Prisma's client does for "
            "@default(now())): their defaults are then not held against naive_time_zone. "
            "Only that check is waived; the rows are still checked. Unset: the "
            "comma-separated names in SNAPSHOT_OPS_UNUSED_COLUMN_DEFAULTS, else none."
        ),
    )

    _catalog: Catalog | None = PrivateAttr(default=None)

    def catalog(self) -> Catalog:
        """This execution's catalog: opened (see `open_catalog`) on the first call, then
        the same one; disposed when the execution ends. Raises what `open_catalog` raises;
        after a failed open the next call tries again."""
        if self._catalog is None:
            self._catalog = self.open_catalog()
        return self._catalog

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._catalog is not None:
            self._catalog.engine.dispose()
            self._catalog = None

    def open_catalog(self) -> Catalog:
        """Connect, check the application tables and return the catalog (caller disposes).

        Raises SnapshotOpsError (ConfigError, SchemaError) naming what to fix."""
        engine = make_engine(self.url)
        try:
            return Catalog(
                engine,
                snapshot_files_table=self.snapshot_files_table,
                order_attachments_table=self.order_attachments_table,
                app_schema=self.app_schema,
                ops_schema=self.ops_schema,
                time_format=self.time_format,
                naive_time_zone=self.naive_time_zone,
                unused_column_defaults=self.unused_column_defaults,
            )
        except BaseException:
            engine.dispose()
            raise


class SnapshotStorage(ConfigurableResource):
    """Where snapshot objects live: a folder, an S3 bucket or an Azure Blob container.

    S3 is configured through dagster-aws's `S3Resource` in `s3` (region, endpoint,
    profile, credentials); without it, or for what it leaves unset, boto3's standard chain
    (environment, profile, role; `AWS_ENDPOINT_URL` for an S3-compatible store). Azure uses
    `AZURE_STORAGE_CONNECTION_STRING` or `DefaultAzureCredential`. The defaults of the
    fields below are `snapshot_ops.storage.DEFAULTS`.
    """

    url: str = Field(
        description=(
            "Storage URL: file:///srv/snapshots, s3://BUCKET/PREFIX or az://CONTAINER/PREFIX; "
            '"storageKey" is the key below the root or prefix.'
        )
    )
    parallel_batches: int = Field(
        default=DEFAULTS.parallel_batches,
        description=(
            "Object stores: how many batch delete requests (S3 DeleteObjects of up to 1,000 "
            "keys, Azure Blob Batch of up to 256) may be in flight at once."
        ),
    )
    max_attempts: int = Field(
        default=DEFAULTS.max_attempts,
        description=(
            "Object stores: attempts per request, first included, for the SDKs' own retries "
            "of throttling and server errors (S3 503 SlowDown, Azure 500/503). For S3 this "
            "replaces the max_attempts of the s3 resource."
        ),
    )
    retry_backoff_seconds: float = Field(
        default=DEFAULTS.retry_backoff_seconds,
        description=(
            "Azure: base b of the SDK's exponential retry; retry n waits about b + b**n s. "
            "S3 uses botocore's standard-mode backoff."
        ),
    )
    remove_empty_folders: bool = Field(
        default=DEFAULTS.remove_empty_folders,
        description=(
            "Folders (file:// only): after deleting, remove the folders the deletes left "
            "empty, deepest first, with rmdir only: never the storage root, never a folder "
            "that still holds anything, never through a symlink. False keeps them."
        ),
    )
    connect_timeout_seconds: float = Field(
        default=DEFAULTS.connect_timeout_seconds,
        description=(
            "Object stores: seconds to wait for a connection to the store before the attempt "
            "counts as failed (and is retried within max_attempts)."
        ),
    )
    read_timeout_seconds: float = Field(
        default=DEFAULTS.read_timeout_seconds,
        description=(
            "Object stores: seconds to wait for the store's answer to one request (a batch "
            "delete of up to 1,000 keys) before the attempt counts as failed. The keys of a "
            "batch that times out on every attempt stay pending for the next run."
        ),
    )

    max_deletes_per_second: int | None = Field(
        default=None,
        description=(
            "Object stores and folders: most objects a run deletes per second, across all "
            "its ranges and workers (each of a run's n ranges gets floor(limit / n)); unset "
            "means no limit. Keeps a cleanup from taking the request rate the application "
            "needs: S3 serves at least 3,500 DELETE requests per second per prefix (S3 User "
            "Guide, optimizing performance) and Azure 20,000 requests per second per storage "
            "account (Azure Storage scalability targets); a batch request counts its keys."
        ),
    )

    # Typed as any resource so that loading the definitions does not import dagster-aws
    # (and boto3) where the store is not S3; open_backend checks it is an S3Resource.
    s3: ConfigurableResource | None = Field(
        default=None,
        description=(
            "S3 only: dagster-aws's S3Resource giving the client's region, endpoint (for an "
            "S3-compatible store), profile and credentials; its timeouts, retries and "
            "connection pool come from the fields above, max_attempts included. Unset: "
            "boto3's standard chain."
        ),
    )

    _backend: StorageBackend | None = PrivateAttr(default=None)

    def backend(self) -> StorageBackend:
        """This execution's backend: opened (see `open_backend`) on the first call, then
        the same one; closed when the execution ends. Raises what `open_backend` raises."""
        if self._backend is None:
            self._backend = self.open_backend()
        return self._backend

    @contextmanager
    def deleting_backend(self, ranges: int = 1) -> Iterator[StorageBackend]:
        """The backend one of a run's `ranges` ranges deletes through: `backend()`, held to
        its share of `max_deletes_per_second` (storage.ratelimit) when that is set. Raises
        ConfigError when the limit is below `ranges`, and what `open_backend` raises."""
        backend = self.backend()
        if self.max_deletes_per_second is None:
            yield backend
            return
        limited = RateLimitedBackend(backend, range_rate(self.max_deletes_per_second, ranges))
        try:
            yield limited
        finally:
            limited.close()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def lease(self) -> dt.timedelta:
        """How long a run holds the journal entries it is deleting (see cleanup.lease_length):
        longer than the store may take to answer them all, so no live run loses its lease."""
        return lease_length(
            max_attempts=self.max_attempts,
            connect_timeout_seconds=self.connect_timeout_seconds,
            read_timeout_seconds=self.read_timeout_seconds,
            retry_backoff_seconds=self.retry_backoff_seconds,
        )

    def open_backend(self) -> StorageBackend:
        """Build the backend for the URL (caller closes it). Raises ConfigError for an
        unusable URL or setting, or when `s3` is not dagster-aws's S3Resource."""
        s3 = None
        if self.s3 is not None and urlsplit(self.url).scheme == "s3":
            from dagster_aws.s3 import S3Resource

            if not isinstance(self.s3, S3Resource):
                raise ConfigError(
                    f"storage s3 must be dagster_aws.s3.S3Resource, got {type(self.s3).__name__}"
                )
            s3 = self.s3
        return open_storage(
            self.url,
            parallel_batches=self.parallel_batches,
            max_attempts=self.max_attempts,
            retry_backoff_seconds=self.retry_backoff_seconds,
            connect_timeout_seconds=self.connect_timeout_seconds,
            read_timeout_seconds=self.read_timeout_seconds,
            remove_empty_folders=self.remove_empty_folders,
            s3_client=None if s3 is None else functools.partial(s3_client, s3=s3),
        )


#: The fields of dagster-aws's S3Resource a deployment sets through SNAPSHOT_OPS_S3_<FIELD>.
S3_RESOURCE_FIELDS = (
    "region_name",
    "endpoint_url",
    "profile_name",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
)


def storage_s3_resource(environ: Mapping[str, str] | None = None) -> ConfigurableResource | None:
    """dagster-aws's S3Resource for the storage, when SNAPSHOT_OPS_STORAGE_URL is s3://;
    else None.

    Each field of S3_RESOURCE_FIELDS whose SNAPSHOT_OPS_S3_<FIELD> variable is set (e.g.
    SNAPSHOT_OPS_S3_ENDPOINT_URL, SNAPSHOT_OPS_S3_AWS_ACCESS_KEY_ID) is given as an EnvVar:
    read when a run starts and shown by its name only, never its value. Fields left unset
    fall back to boto3's standard chain (AWS_* variables, profile, role). Other stores get
    None, so loading their definitions does not import dagster-aws and boto3.
    """
    env = os.environ if environ is None else environ
    if not env.get("SNAPSHOT_OPS_STORAGE_URL", "").strip().startswith("s3://"):
        return None
    from dagster_aws.s3 import S3Resource

    names = {field: f"SNAPSHOT_OPS_S3_{field.upper()}" for field in S3_RESOURCE_FIELDS}
    return S3Resource(**{field: EnvVar(name) for field, name in names.items() if env.get(name)})


def s3_client(config: "Config", *, s3: "S3Resource") -> Any:
    """An S3 client configured by dagster-aws's `S3Resource` (region, endpoint, profile,
    credentials, SSL), with `config` (see storage.s3.client_config) on top."""
    import boto3
    from botocore.handlers import disable_signing
    from dagster_aws.s3 import S3Resource
    from dagster_aws.utils import construct_boto_client_retry_config

    # S3Resource.get_client() builds its botocore Config from max_attempts alone and takes
    # no other, so it cannot carry our timeouts or pool size: the client is built here
    # from the resource's fields, as dagster_aws.s3.utils.construct_s3_client does, with
    # our Config merged over the resource's. Ours wins on retries, so the attempts are
    # storage's max_attempts, which the run's lease length is computed from.
    ours, unset = config.retries["total_max_attempts"], S3Resource.model_fields["max_attempts"]
    if s3.max_attempts not in (unset.default, ours):
        log.warning(
            "S3Resource max_attempts=%d is not used: S3 requests make %d attempts "
            "(the storage resource's max_attempts)",
            s3.max_attempts,
            ours,
        )
    merged = construct_boto_client_retry_config(s3.max_attempts).merge(config)
    client = boto3.session.Session(profile_name=s3.profile_name).client(
        "s3",
        region_name=s3.region_name,
        endpoint_url=s3.endpoint_url,
        use_ssl=s3.use_ssl,
        verify=s3.verify,
        aws_access_key_id=s3.aws_access_key_id,
        aws_secret_access_key=s3.aws_secret_access_key,
        aws_session_token=s3.aws_session_token,
        config=merged,
    )
    if s3.use_unsigned_session:
        client.meta.events.register("choose-signer.s3.*", disable_signing)
    return client
