"""`Catalog`: every statement the job runs, on one engine and one reflection of the tables.

One object, so an op, the cleanup loops and the CLIs pass a single handle; its statements
live by concern in the modules it is made of: snapshot_ops.db.schema (tables, own names,
index advice), .runlog (the run log), .candidates (candidates and the marking protocol),
.journal (the journal and its leases), .witnesses (rows whose objects the store must hold).
"""

from __future__ import annotations

from snapshot_ops.db.candidates import Candidates
from snapshot_ops.db.journal import Journal
from snapshot_ops.db.runlog import RunLog
from snapshot_ops.db.witnesses import Witnesses


class Catalog(RunLog, Candidates, Journal, Witnesses):
    """The application's tables (reflected) and the job's own tables, on one engine.

    Built with `Catalog(engine, snapshot_files_table=..., order_attachments_table=...,
    app_schema=..., ops_schema=..., time_format=..., naive_time_zone=...,
    unused_column_defaults=...)` (see `Tables`)."""
