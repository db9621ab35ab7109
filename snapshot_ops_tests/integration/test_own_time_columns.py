"""The job's own time columns hold instants, whatever zone a value comes in and whatever the
worker's, the session's or the application's naive zone (db/instants.py).

Pinned down here, on PostgreSQL and SQLite: a run opened with instants in Berlin and New
York time is stored as the same instants (on SQLite as their UTC wall time, the text the
savings view and the lease queries compare) and read back aware in UTC; a naive instant is
refused rather than taken as the worker's local time (Asia/Kolkata in the suite).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
import sqlalchemy as sa

from snapshot_ops.db import Catalog, make_engine

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def test_instants_in_any_zone_are_stored_and_read_as_utc(world):
    catalog = Catalog(make_engine(world.db_url))
    catalog.ensure_own_tables()
    run_at = dt.datetime(2026, 7, 1, 9, 0, tzinfo=BERLIN)  # 07:00Z
    reference = dt.datetime(2026, 7, 1, 3, 0, tzinfo=NEW_YORK)  # 07:00Z
    catalog.start_run(
        run_id="r1",
        run_at=run_at,
        reference_time=reference,
        cutoff=reference - dt.timedelta(days=7),
        dry_run=False,
        candidate_count=0,
    )
    with catalog.engine.connect() as conn:
        row = conn.execute(sa.select(catalog.runs).where(catalog.runs.c.run_id == "r1")).one()
    utc = dt.datetime(2026, 7, 1, 7, 0, tzinfo=dt.UTC)
    assert (row.run_at, row.reference_time) == (utc, utc)
    assert row.run_at.utcoffset() == dt.timedelta(0)
    if catalog.is_sqlite:  # the text itself is UTC wall time
        [log] = world.run_log()
        assert log.run_at.startswith("2026-07-01 07:00:00")
    catalog.engine.dispose()


def test_a_naive_instant_is_refused(world):
    catalog = Catalog(make_engine(world.db_url))
    catalog.ensure_own_tables()
    with pytest.raises(sa.exc.StatementError, match="timezone-aware"):
        catalog.start_run(
            run_id="r1",
            run_at=dt.datetime(2026, 7, 1, 9, 0),
            reference_time=dt.datetime(2026, 7, 1, 9, 0, tzinfo=dt.UTC),
            cutoff=dt.datetime(2026, 6, 24, 9, 0, tzinfo=dt.UTC),
            dry_run=False,
            candidate_count=0,
        )
    assert world.run_log() == []
    catalog.engine.dispose()
