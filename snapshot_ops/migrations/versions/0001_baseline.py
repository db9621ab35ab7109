"""Baseline: the job's own tables as the last release without migrations made them.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from snapshot_ops.migrations import own_names

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def tables(metadata: sa.MetaData, prefix: str) -> list[sa.Table]:
    """The three tables, on `metadata` (whose schema is the job's), names prefixed."""
    runs = sa.Table(
        f"{prefix}cleanup_runs",
        metadata,
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reference_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cutoff", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("candidate_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("marked_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("deleted_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("missing_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("bytes_reclaimed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("error_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("errors", sa.Text, nullable=False, server_default="[]"),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    pending = sa.Table(
        f"{prefix}pending_deletes",
        metadata,
        sa.Column("file_id", sa.Text, primary_key=True),
        sa.Column("storage_key", sa.Text, nullable=False),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("claimed_by", sa.Text),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    )
    savings = sa.Table(
        f"{prefix}storage_savings_30d",
        metadata,
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("bytes_reclaimed", sa.BigInteger, nullable=False),
        sa.Column("files_reclaimed", sa.BigInteger, nullable=False),
        sa.Column("runs", sa.Integer, nullable=False),
        sa.Column("failed_runs", sa.Integer, nullable=False),
        sa.Column("error_count", sa.BigInteger, nullable=False),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
    )
    return [runs, pending, savings]


def upgrade() -> None:
    schema, prefix = own_names()
    for table in tables(sa.MetaData(schema=schema), prefix):
        table.create(op.get_bind())


def downgrade() -> None:
    # Dropping the journal would forget marked rows whose objects may still exist.
    raise NotImplementedError("the baseline of the job's own tables is not undone")
