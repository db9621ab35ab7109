"""Dagster resources: the application database and the snapshot storage.

Both are configured from the environment (see definitions.py); nothing secret is written
in code or YAML, and a storage URL's credentials never reach logs or metadata.
"""


from dagster import ConfigurableResource
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
    """Where snapshot objects live: file:///root (S3 and Azure Blob join later)."""

    url: str = Field(description="Storage URL, e.g. file:///srv/snapshots.")

    def open_backend(self) -> StorageBackend:
        """Build the backend for the URL (caller closes it)."""
        return open_storage(self.url)
