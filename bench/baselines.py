"""Baselines (a) and (b): the shell one-liner and the machine's limit, each plus one UPDATE.

(a) `find ROOT -type f -delete` over a folder holding exactly the expired objects (on S3: a
    plain loop of 1,000-key DeleteObjects calls), then one set-based UPDATE with the job's
    predicate.
(b) The same objects removed by 32 threads in parallel (unlink, or 1,000-key DeleteObjects
    on S3), then the same UPDATE: roughly the most this machine and store can do.

Neither has the job's safety (lock, re-check, journal) nor has to find the candidates:
they are handed the exact set. Each returns its two parts' seconds separately.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg2

#: The job's predicate as one statement (the plain cleanup query, as a mark instead of DELETE).
SET_BASED_UPDATE = """
    UPDATE "SnapshotFiles" f SET "deletedAt" = now()
    WHERE f."snapshotType" = 'ParseSessionSnapshot' AND f."deletedAt" IS NULL
      AND f."createdAt" < %s
      AND NOT EXISTS (SELECT 1 FROM "OrderAttachments" oa WHERE oa."fileId" = f."fileId")
"""
THREADS = 32
S3_KEYS_PER_REQUEST = 1000


@dataclass(frozen=True)
class BaselineResult:
    delete_seconds: float
    update_seconds: float
    rows: int
    objects: int

    @property
    def total_seconds(self) -> float:
        return self.delete_seconds + self.update_seconds


def set_based_update(db_url: str, cutoff: dt.datetime) -> tuple[float, int]:
    """Mark every candidate in one statement; return (seconds, rows)."""
    conn = psycopg2.connect(db_url)
    try:
        start = time.perf_counter()
        with conn, conn.cursor() as cur:
            cur.execute(SET_BASED_UPDATE, (cutoff,))
            rows = cur.rowcount
        return time.perf_counter() - start, rows
    finally:
        conn.close()


def find_delete(root: str) -> float:
    """`find ROOT -type f -delete`; return its seconds."""
    start = time.perf_counter()
    subprocess.run(["find", root, "-type", "f", "-delete"], check=True)
    return time.perf_counter() - start


def _chunks(keys: Sequence[str], size: int) -> list[Sequence[str]]:
    return [keys[i : i + size] for i in range(0, len(keys), size)]


def parallel_unlink(root: str, keys: Sequence[str], threads: int = THREADS) -> float:
    """Unlink `keys` under `root` from `threads` threads; return the seconds."""

    def unlink(chunk: Sequence[str]) -> None:
        for key in chunk:
            os.unlink(os.path.join(root, key))

    # Chunks of keys rather than one task per key: the pool's own overhead stays negligible.
    chunks = _chunks(keys, max(1, min(1000, len(keys) // (threads * 4) or 1)))
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(unlink, chunks))
    return time.perf_counter() - start


def _delete_objects(client: Any, bucket: str, prefix: str, keys: Sequence[str]) -> None:
    response = client.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": f"{prefix}/{k}"} for k in keys], "Quiet": True},
    )
    if response.get("Errors"):
        raise RuntimeError(f"DeleteObjects reported errors: {response['Errors'][:3]}")


def s3_loop(client: Any, bucket: str, prefix: str, keys: Sequence[str]) -> float:
    """A plain loop of 1,000-key DeleteObjects calls; return the seconds."""
    start = time.perf_counter()
    for chunk in _chunks(keys, S3_KEYS_PER_REQUEST):
        _delete_objects(client, bucket, prefix, chunk)
    return time.perf_counter() - start


def s3_parallel(
    client: Any, bucket: str, prefix: str, keys: Sequence[str], threads: int = THREADS
) -> float:
    """1,000-key DeleteObjects calls from `threads` threads; return the seconds."""
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(
            pool.map(
                lambda chunk: _delete_objects(client, bucket, prefix, chunk),
                _chunks(keys, S3_KEYS_PER_REQUEST),
            )
        )
    return time.perf_counter() - start
