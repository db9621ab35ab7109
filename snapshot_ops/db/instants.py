"""The type of the job's own time columns: an instant, whatever the database or the caller.

The job's own tables (run log, journal, savings view) hold instants the job itself makes.
PostgreSQL stores them as `timestamp with time zone`. SQLite has no such type: SQLAlchemy's
`DateTime(timezone=True)` writes there the wall time of the value it is given and drops its
zone, so an aware value in any zone but UTC (a run started at 09:00+02:00) would be stored
as the wrong instant, and every value read back is naive. `UtcInstant` converts each value
bound to UTC first and refuses a naive one (it would mean the worker's local zone), and
gives back aware UTC values on both databases. So the own tables are independent of the
application's naive times (snapshot_ops.naivezone) and of the worker's and the session's
zones; their DDL is the same as `DateTime(timezone=True)`'s, which the migrations create.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa


class UtcInstant(sa.types.TypeDecorator[dt.datetime]):
    """`DateTime(timezone=True)` that binds aware values as UTC and reads them back aware,
    in UTC. Binding a naive datetime raises ValueError."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"an instant must be timezone-aware, got the naive {value!r}")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        # SQLite gives back the UTC wall time it was written as; PostgreSQL an aware value.
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
