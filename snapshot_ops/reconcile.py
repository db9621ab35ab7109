"""The reconciliation report of the job's own database and storage (see snapshot_ops.drift).

    python -m snapshot_ops.reconcile        (prints JSON)

It reads the database and the storage through the job's own `database` and `storage`
resources (snapshot_ops.definitions): the same tables, schemas, storage URL and S3
settings, from the same environment (SNAPSHOT_OPS_DATABASE_URL, SNAPSHOT_OPS_STORAGE_URL,
SNAPSHOT_OPS_S3_*, ...). This module is the command's Dagster side: it opens the resources
with Dagster's `build_resources`; the comparison itself is `snapshot_ops.drift.reconcile`.
Nothing is deleted or updated.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from dagster import build_resources

from snapshot_ops.defs.resources import SnapshotDatabase, SnapshotStorage
from snapshot_ops.drift import ReconcileReport, reconcile
from snapshot_ops.errors import SnapshotOpsError

__all__ = ["ReconcileReport", "main", "reconcile", "reconcile_resources"]


def reconcile_resources(database: SnapshotDatabase, storage: SnapshotStorage) -> ReconcileReport:
    """`reconcile` of what the job with these resources sees: the database's tables and
    schemas, the storage's URL and settings (S3Resource included). EnvVar fields are read
    now; the catalog and backend are closed before returning. Raises what opening them
    raises (SnapshotOpsError naming what to fix, Dagster's error for an unset variable)."""
    with build_resources({"database": database, "storage": storage}) as built:
        return reconcile(built.database.catalog(), built.storage.backend())


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report as JSON; exit 0 without drift, 3 with drift, 2 on bad setup (the
    message, e.g. a missing table or row-level security, on stderr)."""
    del argv  # configured by the environment only, like the job
    if not os.environ.get("SNAPSHOT_OPS_DATABASE_URL") or not os.environ.get(
        "SNAPSHOT_OPS_STORAGE_URL"
    ):
        sys.stderr.write("set SNAPSHOT_OPS_DATABASE_URL and SNAPSHOT_OPS_STORAGE_URL\n")
        return 2
    from snapshot_ops.definitions import defs

    try:
        report = reconcile_resources(defs.resources["database"], defs.resources["storage"])
    except SnapshotOpsError as exc:  # names what to fix, e.g. row-level security
        sys.stderr.write(f"{exc}\n")
        return 2
    sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    return 3 if report.drift else 0


if __name__ == "__main__":
    raise SystemExit(main())
