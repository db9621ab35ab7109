"""All SQL the job runs: the candidates, the lock + re-check + mark protocol, its own tables.

One module per concern: `engine` (engine and dialects), `schema` (the tables, the job's
own names, index advice), `runlog`, `candidates` (and the marking protocol), `journal`;
`catalog` puts them together as `Catalog`. The names below are the package's public ones.

The application's tables are read as they are (reflected, names configurable); the only
column ever written is `"SnapshotFiles"."deletedAt"`. Everything else the job keeps lives
in tables of its own, in a schema of its own on PostgreSQL (a name prefix on SQLite):

- `cleanup_runs`: one row per run, with its `runAt`, `deletedCount` and `errors`.
- `pending_deletes`: the journal of rows marked deleted whose object may still exist.

The protocol (see `mark_batch`): a row is marked and journaled in one transaction that
first locks it and then re-checks its linkage; only after that commit is the object deleted,
and its journal entry is removed once the store confirms it is gone. A crash anywhere
leaves either a live row with its object, or a marked row with a journal entry that the
next run finishes.

No transaction on the application's database is open while the store works: a run holds
journal entries as committed leases and settles them afterwards (see `journal`).
"""

from snapshot_ops.db.candidates import Candidate, CandidateSummary, MarkedBatch, ReadBatch
from snapshot_ops.db.catalog import Catalog
from snapshot_ops.db.engine import READ_ONLY_OPTION, database_url, make_engine
from snapshot_ops.db.journal import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    BackedOff,
    KeyMatchingError,
    PendingDelete,
    Settled,
    backoff,
)
from snapshot_ops.db.runlog import CRASHED, FAILED, MAX_STORED_ERRORS, RUNNING, SUCCEEDED
from snapshot_ops.db.schema import ATTACHMENT_COLUMNS, SCHEMA_LOCK_KEY, SNAPSHOT_COLUMNS, OwnNames

__all__ = [
    "ATTACHMENT_COLUMNS",
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "CRASHED",
    "FAILED",
    "MAX_STORED_ERRORS",
    "READ_ONLY_OPTION",
    "RUNNING",
    "SCHEMA_LOCK_KEY",
    "SNAPSHOT_COLUMNS",
    "SUCCEEDED",
    "BackedOff",
    "Candidate",
    "CandidateSummary",
    "Catalog",
    "KeyMatchingError",
    "MarkedBatch",
    "OwnNames",
    "PendingDelete",
    "ReadBatch",
    "Settled",
    "backoff",
    "database_url",
    "make_engine",
]
