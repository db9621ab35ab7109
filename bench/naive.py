"""Baseline (c): the cleanup as a straightforward script would do it, kept for comparison.

    python -m bench.naive --db postgresql://... --storage file:///root|s3://bucket/prefix \
        --cutoff 2026-11-22T03:00:00+00:00

Select every candidate at once, then for each row delete its object and mark its row, one
call and one autocommitted statement at a time. (It also has none of the job's safety: no
lock, no re-check of the order link, no journal; it is here only to be timed.) It writes
one JSON line with its counts to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from urllib.parse import unquote, urlsplit

import psycopg2

CANDIDATES = """
    SELECT f."fileId", f."storageKey" FROM "SnapshotFiles" f
    WHERE f."snapshotType" = 'ParseSessionSnapshot' AND f."deletedAt" IS NULL
      AND f."createdAt" < %s
      AND NOT EXISTS (SELECT 1 FROM "OrderAttachments" oa WHERE oa."fileId" = f."fileId")
"""
MARK = 'UPDATE "SnapshotFiles" SET "deletedAt" = now() WHERE "fileId" = %s'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="libpq URL of the database")
    parser.add_argument("--storage", required=True, help="file:///root or s3://bucket/prefix")
    parser.add_argument("--cutoff", required=True, help="ISO 8601 instant: older rows expire")
    args = parser.parse_args(argv)

    storage = urlsplit(args.storage)
    if storage.scheme == "s3":
        import boto3  # AWS_ENDPOINT_URL in the environment points it at the test store

        client = boto3.client("s3")
        bucket, prefix = storage.netloc, unquote(storage.path).strip("/")

        def delete(key: str) -> None:
            client.delete_object(Bucket=bucket, Key=f"{prefix}/{key}")
    else:
        root = unquote(storage.path)

        def delete(key: str) -> None:
            try:
                os.remove(os.path.join(root, key))
            except FileNotFoundError:
                pass

    conn = psycopg2.connect(args.db)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(CANDIDATES, (args.cutoff,))
    rows = cur.fetchall()
    for file_id, key in rows:
        delete(key)
        cur.execute(MARK, (file_id,))
    conn.close()
    sys.stdout.write(json.dumps({"rows": len(rows), "objects": len(rows)}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
