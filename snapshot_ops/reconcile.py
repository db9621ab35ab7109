"""The reconciliation report of the job's own database and storage (see snapshot_ops.drift).

    python -m snapshot_ops.reconcile        (prints JSON; --help: what it reads)

It reads the database and the storage through the job's own `database` and `storage`
resources (snapshot_ops.definitions): the same tables, schemas, storage URL and S3
settings, from the same environment (SNAPSHOT_OPS_DATABASE_URL, SNAPSHOT_OPS_STORAGE_URL,
SNAPSHOT_OPS_S3_*, ...). This module is the command's Dagster side: it opens the resources
with Dagster's `build_resources`; the comparison itself is `snapshot_ops.drift.reconcile`.
Nothing is deleted or updated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
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


#: Exit statuses: no drift; drift; bad setup (the message on stderr).
NO_DRIFT, DRIFT, BAD_SETUP = 0, 3, 2


def _parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="python -m snapshot_ops.reconcile",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Compare the cleanup job's database with its storage and print the drift as "
            "JSON: objects no row names (orphans), objects whose rows are all marked deleted "
            "and that no journal entry will delete (leftovers), live rows whose object is "
            "missing, and the pending deletes the next run finishes. Nothing is deleted or "
            "updated: what to do about an orphan is for a person to decide."
        ),
        epilog=(
            "environment (the job's own, read as the job reads it; no option overrides it):\n"
            "  SNAPSHOT_OPS_DATABASE_URL        the application's database (required)\n"
            "  SNAPSHOT_OPS_STORAGE_URL         where the snapshot objects live, file://, "
            "s3:// or az://\n"
            "                                   (required)\n"
            "  SNAPSHOT_OPS_S3_<FIELD>          S3Resource fields for s3://; else boto3's "
            "standard chain\n"
            "                                   (AWS_* variables, profile, role)\n"
            "  AZURE_STORAGE_CONNECTION_STRING  az://; else DefaultAzureCredential\n"
            "  SNAPSHOT_OPS_TIME_FORMAT, SNAPSHOT_OPS_NAIVE_TIME_ZONE,\n"
            "  SNAPSHOT_OPS_UNUSED_COLUMN_DEFAULTS, and the rest of the job's settings are\n"
            "  loaded with its definitions and checked as the job checks them\n"
            "\n"
            f"exit status {NO_DRIFT}: no drift; {DRIFT}: drift; {BAD_SETUP}: bad setup (a "
            "missing variable or table,\nrow-level security, ...: the message on stderr)"
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report as JSON; exit NO_DRIFT, DRIFT, or BAD_SETUP (the message, e.g. a
    missing table or row-level security, on stderr). `argv`: the command's arguments
    (None: sys.argv's); only --help, which prints what the command does and reads."""
    _parser().parse_args(argv)  # configured by the environment only, like the job
    if not os.environ.get("SNAPSHOT_OPS_DATABASE_URL") or not os.environ.get(
        "SNAPSHOT_OPS_STORAGE_URL"
    ):
        sys.stderr.write("set SNAPSHOT_OPS_DATABASE_URL and SNAPSHOT_OPS_STORAGE_URL\n")
        return BAD_SETUP
    from snapshot_ops.definitions import defs

    try:
        report = reconcile_resources(defs.resources["database"], defs.resources["storage"])
    except SnapshotOpsError as exc:  # names what to fix, e.g. row-level security
        sys.stderr.write(f"{exc}\n")
        return BAD_SETUP
    sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    return DRIFT if report.drift else NO_DRIFT


if __name__ == "__main__":
    raise SystemExit(main())
