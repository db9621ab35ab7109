"""The outcome check run after every contender: exactly the expected rows and objects gone."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from bench.pgurls import psycopg2_url


def verify(db_url: str, present: set[str], survivors: set[str]) -> dict[str, Any]:
    """Did the contender mark every expected row and remove its object, and nothing else?

    `present` is the keys still stored after the run, `survivors` the keys that must be.
    The expected rows are the benchmark's own table `bench.expected` (bench/data.py).
    """
    engine = sa.create_engine(psycopg2_url(db_url))
    try:
        with engine.connect() as conn:
            unmarked = conn.exec_driver_sql(
                'SELECT count(*) FROM "SnapshotFiles" f JOIN bench.expected e USING ("fileId") '
                'WHERE f."deletedAt" IS NULL'
            ).scalar_one()
            # Tombstones carry a mark from days before the run; the contenders mark "now".
            wrongly_marked = conn.exec_driver_sql(
                'SELECT count(*) FROM "SnapshotFiles" f WHERE f."deletedAt" > now() - '
                "interval '1 day' AND NOT EXISTS (SELECT 1 FROM bench.expected e "
                'WHERE e."fileId" = f."fileId")'
            ).scalar_one()
    finally:
        engine.dispose()
    leftover = len(present - survivors)
    lost = len(survivors - present)
    return {
        "ok": unmarked == 0 and wrongly_marked == 0 and leftover == 0 and lost == 0,
        "expected_rows_unmarked": unmarked,
        "other_rows_marked": wrongly_marked,
        "expected_objects_left": leftover,
        "other_objects_lost": lost,
    }
