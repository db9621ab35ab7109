"""The run log's deleted_count counts only objects a run removed, not already-missing ones.

Until this revision every settle added an already-missing object to both `deleted_count`
and `missing_count` (`deletedCount` included what was already gone, which frees nothing);
from now on it goes to `missing_count` only. The rows logged before are rewritten to the
same meaning: `deleted_count - missing_count` is exactly what those runs removed, since
both counters were always added to in the same statement. Bytes are not touched (a missing
object never added any).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from snapshot_ops.migrations import own_names

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema, prefix = own_names()
    runs = sa.table(
        f"{prefix}cleanup_runs",
        sa.column("deleted_count", sa.BigInteger),
        sa.column("missing_count", sa.BigInteger),
        schema=schema,
    )
    op.execute(
        sa.update(runs)
        # A row edited by hand so that it holds fewer deleted than missing is left as it is.
        .where(runs.c.missing_count > 0, runs.c.deleted_count >= runs.c.missing_count)
        .values(deleted_count=runs.c.deleted_count - runs.c.missing_count)
    )


def downgrade() -> None:
    schema, prefix = own_names()
    runs = sa.table(
        f"{prefix}cleanup_runs",
        sa.column("deleted_count", sa.BigInteger),
        sa.column("missing_count", sa.BigInteger),
        schema=schema,
    )
    op.execute(sa.update(runs).values(deleted_count=runs.c.deleted_count + runs.c.missing_count))
