"""Alembic's environment for the job's own tables.

It runs only inside `snapshot_ops.migrations.upgrade`, on the job's connection and in the
transaction that holds the schema lock; `alembic revision` does not need it.
"""

from __future__ import annotations

from alembic import context

from snapshot_ops.migrations import version_options

attributes = context.config.attributes
connection = attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the job applies its migrations itself (Catalog.ensure_own_tables, at the start of "
        "every run); run the job, or call snapshot_ops.migrations.upgrade with a connection"
    )
context.configure(
    connection=connection, **version_options(attributes["schema"], attributes["prefix"])
)
with context.begin_transaction():
    context.run_migrations()
