"""Dagster resources: the application database and the snapshot storage.

Both are configured from the environment (see definitions.py); nothing secret is written
in code or YAML, and a storage URL's credentials never reach logs or metadata.
"""

from dagster import ConfigurableResource
from dagster_aws.s3 import S3Resource
from pydantic import Field

from snapshot_ops.catalog import Catalog, make_engine
from snapshot_ops.storage import StorageBackend, open_storage


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

    def open_catalog(self) -> Catalog:
        """Connect, check the application tables and return the catalog (caller disposes)."""
        engine = make_engine(self.url)
        try:
            return Catalog(
                engine,
                snapshot_files_table=self.snapshot_files_table,
                order_attachments_table=self.order_attachments_table,
                app_schema=self.app_schema,
                ops_schema=self.ops_schema,
            )
        except BaseException:
            engine.dispose()
            raise


class SnapshotStorage(ConfigurableResource):
    """Where snapshot objects live: a folder, an S3 bucket or an Azure Blob container.

    Credentials are never configured here: S3 uses boto3's standard chain (environment,
    profile, role; `AWS_ENDPOINT_URL` for an S3-compatible store), Azure uses
    `AZURE_STORAGE_CONNECTION_STRING` or `DefaultAzureCredential`.
    """

    url: str = Field(
        description=(
            "Storage URL: file:///srv/snapshots, s3://BUCKET/PREFIX or az://CONTAINER/PREFIX; "
            '"storageKey" is the key below the root or prefix.'
        )
    )
    parallel_batches: int = Field(
        default=4,
        description=(
            "Object stores: how many batch delete requests (S3 DeleteObjects of up to 1,000 "
            "keys, Azure Blob Batch of up to 256) may be in flight at once."
        ),
    )
    max_attempts: int = Field(
        default=5,
        description=(
            "Object stores: attempts per request, first included, for the SDKs' own retries "
            "of throttling and server errors (S3 503 SlowDown, Azure 500/503)."
        ),
    )
    retry_backoff_seconds: float = Field(
        default=2.0,
        description=(
            "Azure: base b of the SDK's exponential retry; retry n waits about b + b**n s. "
            "S3 uses botocore's standard-mode backoff."
        ),
    )

    def open_backend(self) -> StorageBackend:
        """Build the backend for the URL (caller closes it)."""
        s3_client = None
        if self.url.startswith("s3://"):
            # dagster-aws builds the client: boto3's credential chain, standard retries. It
            # hands max_attempts to botocore's retries config, which counts retries only.
            s3_client = S3Resource(max_attempts=max(0, self.max_attempts - 1)).get_client()
        return open_storage(
            self.url,
            parallel_batches=self.parallel_batches,
            max_attempts=self.max_attempts,
            retry_backoff_seconds=self.retry_backoff_seconds,
            s3_client=s3_client,
        )
