"""Benchmark: the shared-key lookup of one batch, exact and folded, with and without index.

    python -m bench.shared_keys [--rows 200000] [--keys 1000] [--pg-url postgresql://...]

Fills "SnapshotFiles" with `--rows` rows (keys spelled in mixed case, a tenth of them
marked deleted) in a fresh PostgreSQL database and in a SQLite file, then times
`Catalog.shared_keys` for one batch of `--keys` keys (half of them named by live rows in
another case) as the deleting step asks it before each batch: exactly (S3, Azure, a
case-sensitive folder) and ignoring case (a case-insensitive folder), on PostgreSQL without
and then with each index the job's advice names (`Catalog.missing_indexes`), and on SQLite
(which can have no index on the folded key). Prints the median of 5 lookups of each.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from bench.pgurls import libpq_url, psycopg2_url
from snapshot_ops.db import Catalog, make_engine
from snapshot_ops.demo import app_tables
from snapshot_ops.storage import EXACT, KeyMatching

CASE = KeyMatching(ignores_case=True)
CREATED = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fill(url: str, rows: int) -> list[str]:
    """Create the application's tables at `url` with `rows` rows; return their keys."""
    engine = make_engine(url)
    files, _ = app_tables(sa.MetaData())
    files.metadata.create_all(engine)
    keys = [f"2026/{i % 12 + 1:02d}/Invoice-{i}-{uuid.uuid4().hex[:8]}.pdf" for i in range(rows)]
    with engine.begin() as conn:
        for start in range(0, rows, 10_000):
            conn.execute(
                sa.insert(files),
                [
                    {
                        "fileId": str(uuid.uuid4()),
                        "snapshotType": "ParseSessionSnapshot",
                        "parseSessionId": "ps",
                        "storageKey": key,
                        "sizeBytes": 100,
                        "createdAt": CREATED,
                        "deletedAt": None if i % 10 else CREATED,
                    }
                    for i, key in enumerate(keys[start : start + 10_000], start)
                ],
            )
    engine.dispose()
    return keys


def median_seconds(catalog: Catalog, keys: list[str], matching: KeyMatching) -> float:
    times = []
    for _ in range(5):
        started = time.perf_counter()
        catalog.shared_keys(keys, matching)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def batch_of(keys: list[str], size: int) -> list[str]:
    """`size` keys: half named by rows in another case, half named by no row."""
    named = [k.lower() for k in keys[1 : size // 2 * 20 : 20]]
    return named + [f"none/{uuid.uuid4().hex}.pdf" for _ in range(size - len(named))]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.shared_keys")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    admin = sa.create_engine(psycopg2_url(args.pg_url), isolation_level="AUTOCOMMIT")
    name = f"bench_shared_keys_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    pg_url = libpq_url(sa.engine.make_url(psycopg2_url(args.pg_url)).set(database=name))
    try:
        keys = fill(pg_url, args.rows)
        batch = batch_of(keys, args.keys)
        engine = make_engine(pg_url)
        catalog = Catalog(engine)
        with engine.connect() as conn:
            conn.exec_driver_sql('ANALYZE "SnapshotFiles"')
        say(f"PostgreSQL, {args.rows:,} rows, {len(batch)} keys a batch, no index:")
        for matching in (EXACT, CASE):
            seconds = median_seconds(catalog, batch, matching)
            say(f"  {matching.name:>5}: {seconds * 1000:8.1f} ms")
        for matching in (EXACT, CASE):
            [advice] = [s for s in catalog.missing_indexes(matching) if "storageKey" in s]
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                started = time.perf_counter()
                conn.exec_driver_sql(advice)
                built = time.perf_counter() - started
                conn.exec_driver_sql('ANALYZE "SnapshotFiles"')
            seconds = median_seconds(catalog, batch, matching)
            say(
                f"  {matching.name:>5} with its index ({built:.1f} s to build): "
                f"{seconds * 1000:8.1f} ms"
            )
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'app.sqlite'}"
        keys = fill(url, args.rows)
        batch = batch_of(keys, args.keys)
        engine = make_engine(url)
        catalog = Catalog(engine)
        say(f"SQLite, {args.rows:,} rows, {len(batch)} keys a batch:")
        for matching in (EXACT, CASE):
            seconds = median_seconds(catalog, batch, matching)
            say(f"  {matching.name:>5}: {seconds * 1000:8.1f} ms")
        engine.dispose()


if __name__ == "__main__":
    main()
