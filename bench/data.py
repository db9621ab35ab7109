"""Benchmark data: N snapshot rows in a fresh PostgreSQL database, and their stored objects.

Every contender (the job, the shell one-liner, the parallel unlink, the naive script) gets
an identical copy: one source database is generated once with COPY and cloned per contender
with `CREATE DATABASE ... TEMPLATE` (a file-level copy, seconds even at a million rows); the
objects are written afresh for each contender by a thread pool, just before it runs.

Row mix (per `Mix`): expired parse-session snapshots (the backlog; 5 % of them linked to an
order, so kept), fresh parse-session snapshots, permanent order-attachment snapshots (linked,
of any age) and, for a steady day, tombstones: rows earlier runs already marked deleted, whose
objects are gone. The ids of the rows that must be deleted are kept in `bench.expected`, a
table of the benchmark's own, so every contender's outcome can be checked afterwards.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import random
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from snapshot_ops.db import Catalog
from snapshot_ops.demo import app_tables
from snapshot_ops.rules import PERMANENT_TYPE, TEMPORARY_TYPE

DAY = dt.timedelta(days=1)
RETENTION = 7 * DAY
#: Objects are small, like one-page snapshots: a few hundred bytes each.
MIN_SIZE, MAX_SIZE = 200, 600
#: Share of expired parse-session snapshots that an order links (kept by every contender).
LINKED_SHARE = 0.05
#: Share of all rows that are permanent order attachments.
PERMANENT_SHARE = 0.10


@dataclass(frozen=True)
class Mix:
    """How many rows of each kind a data set holds."""

    rows: int
    expired: int  # expired parse-session snapshots, linked ones included
    tombstones: int = 0  # rows an earlier run already deleted (no object)
    expired_span: dt.timedelta = 365 * DAY  # expired rows are spread over this much time

    @property
    def permanent(self) -> int:
        return int(self.rows * PERMANENT_SHARE)

    @property
    def fresh(self) -> int:
        return self.rows - self.expired - self.permanent - self.tombstones

    def check(self) -> None:
        """Refuse a mix that does not add up."""
        if self.rows < 10 or self.expired < 0 or self.tombstones < 0 or self.fresh < 0:
            raise ValueError(
                f"rows={self.rows} cannot hold expired={self.expired}, "
                f"permanent={self.permanent} and tombstones={self.tombstones}"
            )


def backlog(rows: int, expired: int | None = None) -> Mix:
    """A first run on a year of backlog: half of the rows expired."""
    return Mix(rows=rows, expired=rows // 2 if expired is None else expired)


def steady_day(rows: int, expired: int) -> Mix:
    """A daily run: the day's newly expired rows, a week of fresh ones, and the tombstones of
    everything earlier runs already cleaned; the table is large, the day's work small."""
    fresh = 7 * expired
    permanent = int(rows * PERMANENT_SHARE)
    return Mix(
        rows=rows,
        expired=expired,
        tombstones=max(0, rows - expired - fresh - permanent),
        expired_span=DAY,
    )


@dataclass(frozen=True)
class Row:
    file_id: str
    kind: str  # candidate | expired_linked | fresh | permanent | tombstone
    created_at: dt.datetime
    size: int

    @property
    def key(self) -> str:
        return f"{self.file_id[:2]}/{self.file_id}.pdf"

    @property
    def has_object(self) -> bool:
        return self.kind != "tombstone"


def make_rows(mix: Mix, now: dt.datetime, seed: int = 7) -> list[Row]:
    """The rows of a data set, in random creation order (kinds interleave in time)."""
    mix.check()
    rng = random.Random(seed)
    linked = max(0, round(mix.expired * LINKED_SHARE))
    kinds = (
        ["candidate"] * (mix.expired - linked)
        + ["expired_linked"] * linked
        + ["fresh"] * mix.fresh
        + ["permanent"] * mix.permanent
        + ["tombstone"] * mix.tombstones
    )
    rows = []
    hour = dt.timedelta(hours=1)
    for kind in kinds:
        if kind in ("candidate", "expired_linked"):
            # Keep an hour clear of the cutoff so clock skew cannot change the answer.
            age = RETENTION + hour + rng.random() * (mix.expired_span - hour)
        elif kind == "fresh":
            age = rng.random() * (RETENTION - hour)
        elif kind == "tombstone":
            age = RETENTION + mix.expired_span + rng.random() * 365 * DAY
        else:
            age = rng.random() * 400 * DAY
        file_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        rows.append(Row(file_id, kind, now - age, rng.randint(MIN_SIZE, MAX_SIZE)))
    return rows


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """Create database `name` (optionally as a copy of `template`); return its URL."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            clause = f' TEMPLATE "{template}"' if template else ""
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"{clause}')
    finally:
        admin.dispose()
    url = sa.engine.make_url(admin_url).set(database=name)
    return url.render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    """Drop database `name` if it exists, disconnecting anyone still on it."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def load_rows(db_url: str, rows: Sequence[Row], now: dt.datetime, *, indexes: bool) -> None:
    """Create the application tables and COPY the rows in; record the expected deletions."""
    engine = sa.create_engine(db_url)
    try:
        files, attachments = app_tables(sa.MetaData())
        files.metadata.create_all(engine)
        tombstone_mark = now - 3 * DAY  # any time earlier than the run: tells them apart
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.copy_expert(
                'COPY "SnapshotFiles" ("fileId", "snapshotType", "parseSessionId", '
                '"storageKey", "sizeBytes", "createdAt", "deletedAt") FROM STDIN WITH (FORMAT csv)',
                _csv(
                    (
                        r.file_id,
                        PERMANENT_TYPE if r.kind == "permanent" else TEMPORARY_TYPE,
                        f"ps-{r.file_id[:8]}",
                        r.key,
                        r.size,
                        r.created_at.isoformat(),
                        tombstone_mark.isoformat() if r.kind == "tombstone" else "",
                    )
                    for r in rows
                ),
            )
            cur.copy_expert(
                'COPY "OrderAttachments" ("orderId", "fileId") FROM STDIN WITH (FORMAT csv)',
                _csv(
                    (f"order-{r.file_id[:8]}", r.file_id)
                    for r in rows
                    if r.kind in ("expired_linked", "permanent")
                ),
            )
            cur.execute('CREATE SCHEMA bench; CREATE TABLE bench.expected ("fileId" text)')
            cur.copy_expert(
                'COPY bench.expected ("fileId") FROM STDIN WITH (FORMAT csv)',
                _csv((r.file_id,) for r in rows if r.kind == "candidate"),
            )
            cur.execute('ALTER TABLE bench.expected ADD PRIMARY KEY ("fileId")')
            raw.commit()
            cur.close()
        finally:
            raw.close()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if indexes:
                # The job is measured as it is meant to be deployed: with the indexes it
                # recommends (exactly the statements it would print).
                for statement in Catalog(engine).missing_indexes():
                    conn.exec_driver_sql(statement)
            conn.exec_driver_sql("VACUUM ANALYZE")
    finally:
        engine.dispose()


def _csv(records: Iterable[tuple[Any, ...]]) -> io.StringIO:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(records)
    buffer.seek(0)
    return buffer


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def write_files(root: str, rows: Sequence[Row], workers: int = 8) -> None:
    """Write each row's object under `root` with a thread pool, then flush it to disk.

    The final sync matters: without it the kernel would still be writing these files back
    while the contender runs, and its deletes would pay for someone else's writes.
    """
    for prefix in sorted({r.file_id[:2] for r in rows}):
        os.makedirs(os.path.join(root, prefix), exist_ok=True)

    def write(chunk: Sequence[Row]) -> None:
        for row in chunk:
            fd = os.open(os.path.join(root, row.key), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, b"%PDF-1.4\n" + b"\0" * (row.size - 9))
            finally:
                os.close(fd)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(write, _chunks(rows, 2000)))
    os.sync()


def count_files(root: str) -> set[str]:
    """Every object key present under `root`."""
    found = set()
    for folder in os.scandir(root):
        if folder.is_dir(follow_symlinks=False):
            found.update(f"{folder.name}/{entry.name}" for entry in os.scandir(folder.path))
    return found


def put_objects(
    client: Any, bucket: str, prefix: str, rows: Sequence[Row], workers: int = 16
) -> None:
    """Create `bucket` and upload each row's object under `prefix/` with a thread pool."""
    client.create_bucket(Bucket=bucket)

    def put(chunk: Sequence[Row]) -> None:
        for row in chunk:
            client.put_object(
                Bucket=bucket,
                Key=f"{prefix}/{row.key}",
                Body=b"%PDF-1.4\n" + b"\0" * (row.size - 9),
            )

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, _chunks(rows, 500)))


def list_objects(client: Any, bucket: str, prefix: str) -> set[str]:
    """Every key present under `prefix/`, relative to it."""
    found = set()
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix + "/"
    ):
        found.update(item["Key"][len(prefix) + 1 :] for item in page.get("Contents", []))
    return found


def empty_bucket(client: Any, bucket: str) -> None:
    """Delete every object and then the bucket (moto keeps objects in memory)."""
    keys = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for item in page.get("Contents", [])
    ]
    for chunk in _chunks(keys, 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk]})
    client.delete_bucket(Bucket=bucket)
