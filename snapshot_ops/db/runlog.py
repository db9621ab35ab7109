"""The run log: one row per run in the job's `cleanup_runs` table, with its `runAt`,
`deletedCount` (`deleted_count`: objects the run removed), `alreadyMissing`
(`missing_count`: objects already gone when it settled their rows, counted apart) and
`errors`.

A run opens its row (`start_run`), the marking and settling transactions add to its
counters as they commit (snapshot_ops.db.candidates, snapshot_ops.db.journal), and the run
closes it (`finish_run`). A run whose worker died is closed as `crashed` by a later one.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from snapshot_ops.db.schema import Tables

#: How many error messages a run keeps in its log row; all are counted.
MAX_STORED_ERRORS = 200

#: Run-log statuses: `running` until the run records its end; `crashed` when a later run
#: found its Dagster run ended without closing its row (worker killed).
RUNNING, SUCCEEDED, FAILED, CRASHED = "running", "succeeded", "failed", "crashed"


class RunLog(Tables):
    """The run-log statements of a `Catalog`."""

    def start_run(
        self,
        *,
        run_id: str,
        run_at: dt.datetime,
        reference_time: dt.datetime,
        cutoff: dt.datetime,
        dry_run: bool,
        candidate_count: int,
    ) -> None:
        """Open the run-log row of Dagster run `run_id` (status `running`, counters 0).

        Idempotent: a re-execution's later steps call it again for their own run id, which
        the first step (skipped in a re-execution from failure) would otherwise have made.
        """
        with self.engine.begin() as conn:
            exists = conn.execute(
                sa.select(self.runs.c.run_id).where(self.runs.c.run_id == run_id)
            ).first()
            if exists is None:
                conn.execute(
                    sa.insert(self.runs).values(
                        run_id=run_id,
                        run_at=run_at,
                        reference_time=reference_time,
                        cutoff=cutoff,
                        dry_run=dry_run,
                        status=RUNNING,
                        candidate_count=candidate_count,
                    )
                )

    def finish_run(
        self, run_id: str, *, status: str, errors: Sequence[str], **counts: int
    ) -> dict[str, Any]:
        """Close the run's row with `status` and `errors`; return its counters.

        The deleted, missing and bytes counters are not written here: each settle
        transaction adds to them (settle_pending), so they hold exactly what the run settled.
        `counts` may set the others (e.g. a dry run's would-be `marked_count`).
        """
        r = self.runs.c
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(self.runs)
                .where(r.run_id == run_id)
                .values(
                    status=status,
                    error_count=len(errors),
                    errors=json.dumps(list(errors[:MAX_STORED_ERRORS])),
                    finished_at=dt.datetime.now(dt.UTC),
                    **counts,
                )
            )
            row = conn.execute(
                sa.select(
                    r.marked_count, r.deleted_count, r.missing_count, r.bytes_reclaimed
                ).where(r.run_id == run_id)
            ).one()
        return dict(row._mapping)

    def succeeded_retention(self) -> dt.timedelta | None:
        """The retention (reference time minus cutoff) of the latest real run that
        succeeded, by `run_at`; None when no such run is logged. Dry runs, runs that stopped
        (at the cap, at a check) or failed, and runs still going do not count."""
        r = self.runs.c
        with self.reading() as conn:
            row = conn.execute(
                sa.select(r.reference_time, r.cutoff)
                .where(r.dry_run.is_(False), r.status == SUCCEEDED)
                .order_by(r.run_at.desc())
                .limit(1)
            ).first()
        if row is None:
            return None
        return _utc(row.reference_time) - _utc(row.cutoff)

    def running_runs(self, *, besides: str) -> list[str]:
        """Run ids whose log row still says `running`, other than `besides`."""
        r = self.runs.c
        with self.reading() as conn:
            return list(
                conn.execute(
                    sa.select(r.run_id).where(r.status == RUNNING, r.run_id != besides)
                ).scalars()
            )

    def close_crashed_runs(self, run_ids: Sequence[str], reason: str) -> None:
        """Close the rows of runs known to have ended without closing them, as `crashed`,
        and release their journal leases so any run can finish those entries at once.

        What such a run settled before it died stays in its row's counters.
        """
        if not run_ids:
            return
        r, p = self.runs.c, self.pending.c
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(self.runs)
                .where(self._in(r.run_id, list(run_ids)), r.status == RUNNING)
                .values(
                    status=CRASHED,
                    error_count=r.error_count + 1,
                    errors=json.dumps([reason]),
                    finished_at=dt.datetime.now(dt.UTC),
                )
            )
            conn.execute(
                sa.update(self.pending)
                .where(self._in(p.claimed_by, list(run_ids)))
                .values(claimed_by=None, lease_until=None)
            )

    def finish_run_if_running(self, run_id: str, *, errors: Sequence[str]) -> None:
        """Mark a run failed unless it already recorded its own end."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(self.runs)
                .where(self.runs.c.run_id == run_id, self.runs.c.status == RUNNING)
                .values(
                    status=FAILED,
                    error_count=len(errors),
                    errors=json.dumps(list(errors[:MAX_STORED_ERRORS])),
                    finished_at=dt.datetime.now(dt.UTC),
                )
            )


def _utc(value: dt.datetime) -> dt.datetime:
    # SQLite gives back the stored UTC instants without their offset.
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
