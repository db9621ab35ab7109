"""The cleanup's journal of pending deletes, seen and released from a shell.

    python -m snapshot_ops.journal list                  (prints the entries as JSON)
    python -m snapshot_ops.journal release FILE_ID ...   (makes those rows live again)

Both use SNAPSHOT_OPS_DATABASE_URL, like the job, and need no storage. Each journal entry is
a row the job marked deleted whose object it has not yet seen gone; every run retries it.
An entry that cannot succeed (the store keeps refusing or failing its key) keeps its run
failing every day. `release` ends that without hand-written SQL: in one transaction it drops
the entries and sets those rows' `"deletedAt"` back to NULL (`Catalog.release_pending`). The
object is not touched. The row is then live and can be fixed (e.g. its `"storageKey"`
pointed at the real object); the next run treats it as any other candidate.

Release an entry only while its object still exists, or was never a snapshot: a released
row whose object is already gone is reported by `python -m snapshot_ops.reconcile` as a
live row with a missing object, and a run that still deletes it counts it as missing.
Entries whose row's `"storageKey"` was changed since they were marked need no release:
the next run releases them itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence

import sqlalchemy as sa

from snapshot_ops.db import Catalog, make_engine
from snapshot_ops.errors import SnapshotOpsError

#: Exit statuses: done; some ids were not in the journal (nothing done for them); bad setup.
OK, NOT_IN_JOURNAL, BAD_SETUP = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m snapshot_ops.journal",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "List the cleanup job's pending deletes (rows it marked deleted whose object it "
            "has not yet seen gone; every run retries them), or release entries that cannot "
            "succeed: in one transaction their entries are dropped and their rows' "
            '"deletedAt" set back to NULL, so the rows are live again. Objects are never '
            "touched."
        ),
        epilog=(
            "environment:\n"
            "  SNAPSHOT_OPS_DATABASE_URL  the application's database (required), with the "
            "job's default\n"
            '                             table names ("SnapshotFiles", "OrderAttachments") '
            "and schema\n"
            "                             (snapshot_ops); no storage is needed\n"
            "  SNAPSHOT_OPS_NAIVE_TIME_ZONE and SNAPSHOT_OPS_UNUSED_COLUMN_DEFAULTS are "
            "checked as the job\n"
            "  checks them\n"
            "\n"
            f"exit status {OK}: done; {NOT_IN_JOURNAL}: some ids were not in the journal "
            f"(nothing done for them);\n{BAD_SETUP}: bad setup (the message on stderr)"
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="print every journal entry with its row's state (JSON)")
    release = commands.add_parser(
        "release", help="drop these entries and set their rows' deletedAt back to NULL"
    )
    release.add_argument("file_ids", nargs="+", metavar="FILE_ID")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit OK, NOT_IN_JOURNAL (release only) or BAD_SETUP."""
    args = _parser().parse_args(argv)
    database_url = os.environ.get("SNAPSHOT_OPS_DATABASE_URL")
    if not database_url:
        sys.stderr.write("set SNAPSHOT_OPS_DATABASE_URL (the job's application database)\n")
        return BAD_SETUP
    try:
        engine = make_engine(database_url)
    except SnapshotOpsError as exc:
        sys.stderr.write(f"{exc}\n")
        return BAD_SETUP
    try:
        catalog = Catalog(engine)
        catalog.check_rows_unfiltered()  # a hidden row would be neither listed nor released
        if args.command == "list":
            sys.stdout.write(json.dumps(catalog.journal(), indent=2) + "\n")
            return OK
        table = catalog.pending
        exists = sa.inspect(engine).has_table(table.name, schema=table.schema)
        released = catalog.release_pending(args.file_ids) if exists else []
    except SnapshotOpsError as exc:
        sys.stderr.write(f"{exc}\n")
        return BAD_SETUP
    finally:
        engine.dispose()
    missing = [i for i in dict.fromkeys(args.file_ids) if i not in released]
    sys.stdout.write(json.dumps({"released": released, "not_in_journal": missing}) + "\n")
    if missing:
        sys.stderr.write(
            f"not in the journal, nothing done: {', '.join(missing)} (see the list command)\n"
        )
        return NOT_IN_JOURNAL
    return OK


if __name__ == "__main__":
    raise SystemExit(main())
