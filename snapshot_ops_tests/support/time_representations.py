"""The ways applications store "createdAt" and "deletedAt", written the way those applications
write them (on their own, not through snapshot_ops.timeformat), and a World whose tables use
one of them.

Each representation writes an instant as its application would (truncating to its own
precision) and reads a stored value back, so a test can state what the stored value means
without asking the code under test.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from snapshot_ops.rules import TEMPORARY_TYPE
from snapshot_ops_tests.support.world import NOW, World

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
PLUS_TWO = dt.timezone(dt.timedelta(hours=2))
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def _us(t: dt.datetime) -> int:
    return (t - EPOCH) // dt.timedelta(microseconds=1)


def _parse(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


@dataclass(frozen=True)
class Representation:
    name: str
    dialect: str  # "postgres" or "sqlite"
    column_type: str  # declared type of both time columns
    write: Callable[[dt.datetime], Any]  # aware instant -> stored value
    read: Callable[[Any], dt.datetime]  # stored value -> aware instant
    #: Naive values only: the zone the application writes wall time in, and the
    #: naive_time_zone a deployment states for it (None: the suite's, UTC).
    wall_zone: str | None = None
    naive_time_zone: str | None = None
    #: PostgreSQL only: the database's TimeZone in the tests (one where a naive value read
    #: or written in session time would be hours off, unless it is the application's own).
    database_zone: str = "Asia/Tokyo"

    def __str__(self) -> str:
        return self.name


REPRESENTATIONS = [
    Representation(
        "pg_timestamptz", "postgres", "timestamp with time zone", lambda t: t, lambda v: v
    ),
    # Prisma's default on PostgreSQL: naive, holding UTC wall time.
    Representation(
        "pg_timestamp_utc",
        "postgres",
        "timestamp without time zone",
        lambda t: t.astimezone(UTC).replace(tzinfo=None),
        lambda v: v.replace(tzinfo=UTC),
        wall_zone="UTC",
    ),
    # An application whose database's TimeZone is New York, writing naive local time
    # (`DEFAULT now()`); read as PostgreSQL reads it in a session of that zone (in a
    # fall-back fold, the later of the two instants).
    Representation(
        "pg_timestamp_new_york",
        "postgres",
        "timestamp without time zone",
        lambda t: t.astimezone(NEW_YORK).replace(tzinfo=None),
        lambda v: max(v.replace(tzinfo=NEW_YORK, fold=f).astimezone(UTC) for f in (0, 1)),
        wall_zone="America/New_York",
        naive_time_zone="database",
        database_zone="America/New_York",
    ),
    Representation(
        "pg_bigint_ms",
        "postgres",
        "bigint",
        lambda t: _us(t) // 1000,
        lambda v: EPOCH + dt.timedelta(milliseconds=v),
    ),
    # Python's isoformat() in a PostgreSQL text column with a linguistic collation, which
    # sorts "03:00:00.5+00:00" before "03:00:00+00:00".
    Representation(
        "pg_text_isoformat_icu",
        "postgres",
        'text COLLATE "en-US-x-icu"',
        lambda t: t.astimezone(UTC).isoformat(),
        _parse,
    ),
    # SQLAlchemy's DateTime on SQLite.
    Representation(
        "sqlite_text_space_micros",
        "sqlite",
        "DATETIME",
        lambda t: t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
        _parse,
        wall_zone="UTC",
    ),
    # Django with USE_TZ=False and TIME_ZONE America/New_York: str() of the naive local
    # time (no fraction on a whole second), read back as Django reads it.
    Representation(
        "sqlite_text_django_new_york",
        "sqlite",
        "datetime",
        lambda t: str(t.astimezone(NEW_YORK).replace(tzinfo=None)),
        lambda v: dt.datetime.fromisoformat(v).replace(tzinfo=NEW_YORK).astimezone(UTC),
        wall_zone="America/New_York",
        naive_time_zone="America/New_York",
    ),
    # JavaScript's Date.toISOString().
    Representation(
        "sqlite_text_js_iso",
        "sqlite",
        "TEXT",
        lambda t: (
            t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
        ),
        _parse,
    ),
    # Python's isoformat(): "+00:00", and no fraction at all on a whole second.
    Representation(
        "sqlite_text_python_isoformat",
        "sqlite",
        "TEXT",
        lambda t: t.astimezone(UTC).isoformat(),
        _parse,
    ),
    # A fixed local offset, whole seconds.
    Representation(
        "sqlite_text_plus_two",
        "sqlite",
        "TEXT",
        lambda t: t.astimezone(PLUS_TWO).isoformat(timespec="seconds"),
        _parse,
    ),
    Representation(
        "sqlite_epoch_seconds",
        "sqlite",
        "INTEGER",
        lambda t: _us(t) // 1_000_000,
        lambda v: EPOCH + dt.timedelta(seconds=v),
    ),
    Representation(
        "sqlite_epoch_seconds_real",
        "sqlite",
        "REAL",
        lambda t: _us(t) / 1_000_000,
        lambda v: EPOCH + dt.timedelta(seconds=v),
    ),
    # Prisma on SQLite: DateTime as integer epoch milliseconds in a DATETIME column.
    Representation(
        "sqlite_prisma_epoch_ms",
        "sqlite",
        "DATETIME",
        lambda t: _us(t) // 1000,
        lambda v: EPOCH + dt.timedelta(milliseconds=v),
    ),
]
BY_NAME = {r.name: r for r in REPRESENTATIONS}


def set_database_timezone(db_url: str, zone: str) -> None:
    """Give a PostgreSQL test database its own TimeZone (new sessions use it)."""
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    with engine.begin() as conn:
        name = conn.exec_driver_sql("SELECT current_database()").scalar_one()
        conn.exec_driver_sql(f"ALTER DATABASE \"{name}\" SET timezone TO '{zone}'")
    engine.dispose()


class RepWorld(World):
    """A World whose time columns are declared and written as `rep` says."""

    def __init__(self, db_url: str, root: Path, rep: Representation) -> None:
        super().__init__(db_url, root, create_tables=False)
        self.rep = rep
        with self.engine.begin() as conn:
            conn.exec_driver_sql(
                'CREATE TABLE "SnapshotFiles" ("fileId" text primary key, '
                '"snapshotType" text not null, "parseSessionId" text, '
                '"storageKey" text not null, "sizeBytes" bigint, '
                f'"createdAt" {rep.column_type}, "deletedAt" {rep.column_type})'
            )
            conn.exec_driver_sql(
                'CREATE TABLE "OrderAttachments" ("orderId" text not null, "fileId" text not null)'
            )
        self.files = sa.Table("SnapshotFiles", sa.MetaData(), autoload_with=self.engine)
        for name in ("createdAt", "deletedAt"):  # read and write values exactly as stored
            self.files.c[name].type = sa.types.NullType()

    def add(  # type: ignore[override]
        self,
        *,
        age: dt.timedelta,
        snapshot_type: str = TEMPORARY_TYPE,
        linked: bool = False,
        with_file: bool = True,
        key: str | None = None,
        created: Any = None,
        now: dt.datetime = NOW,
    ) -> str:
        """Insert a row whose createdAt is `now - age` as the representation writes it (or
        the raw stored value `created`); return its fileId."""
        file_id = str(uuid.uuid4())
        key = key if key is not None else f"{file_id[:2]}/{file_id}.pdf"
        if with_file:
            path = self.root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * 100)
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(self.files).values(
                    fileId=file_id,
                    snapshotType=snapshot_type,
                    parseSessionId="ps",
                    storageKey=key,
                    sizeBytes=100,
                    createdAt=created if created is not None else self.rep.write(now - age),
                    deletedAt=None,
                )
            )
            if linked:
                conn.exec_driver_sql(
                    'INSERT INTO "OrderAttachments" ("orderId", "fileId") VALUES (?, ?)'
                    if self.db_url.startswith("sqlite")
                    else 'INSERT INTO "OrderAttachments" ("orderId", "fileId") VALUES (%s, %s)',
                    ("o-1", file_id),
                )
        return file_id

    def stored(self) -> dict[str, Any]:
        """fileId -> the row, time columns exactly as stored."""
        with self.engine.connect() as conn:
            return {r.fileId: r for r in conn.execute(sa.select(self.files))}
