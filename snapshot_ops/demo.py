"""The embedded default: demo data on SQLite and a local folder, one real run, a report.

    python -m snapshot_ops.demo [--dir .demo]

Creates the application's two tables in a SQLite file, writes a few dozen snapshot files
of every kind, runs `dagster job execute -m snapshot_ops -j snapshot_cleanup_job` against
them (no service needed), and prints which rows were deleted and which were kept, and why.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from snapshot_ops.db import make_engine
from snapshot_ops.rules import PERMANENT_TYPE, TEMPORARY_TYPE


def job_command(*args: str) -> list[str]:
    """`dagster job execute -m snapshot_ops -j snapshot_cleanup_job [args]`, run by this
    Python (so by this virtualenv's Dagster)."""
    return [
        sys.executable, "-m", "dagster", "job", "execute",
        "-m", "snapshot_ops", "-j", "snapshot_cleanup_job", *args,
    ]  # fmt: skip


def app_tables(metadata: sa.MetaData, schema: str | None = None) -> tuple[sa.Table, sa.Table]:
    """The application's tables with exactly the columns the job relies on."""
    files = sa.Table(
        "SnapshotFiles",
        metadata,
        sa.Column("fileId", sa.Text, primary_key=True),
        sa.Column("snapshotType", sa.Text, nullable=False),
        sa.Column("parseSessionId", sa.Text),
        sa.Column("storageKey", sa.Text, nullable=False),
        sa.Column("sizeBytes", sa.BigInteger),
        sa.Column("createdAt", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deletedAt", sa.DateTime(timezone=True)),
        schema=schema,
    )
    attachments = sa.Table(
        "OrderAttachments",
        metadata,
        sa.Column("orderId", sa.Text, nullable=False),
        sa.Column("fileId", sa.Text, nullable=False),
        schema=schema,
    )
    return files, attachments


@dataclass(frozen=True)
class DemoRow:
    file_id: str
    snapshot_type: str
    age_days: float
    linked: bool
    has_file: bool
    size: int | None
    expect: str  # what the job should do, for the report


def demo_rows(rng: random.Random) -> list[DemoRow]:
    """A small, varied set: every rule of the retention table is exercised."""
    rows: list[DemoRow] = []

    def add(
        kind: str,
        age: float,
        *,
        linked: bool = False,
        has_file: bool = True,
        sized: bool = True,
        expect: str,
    ) -> None:
        size = rng.randint(20_000, 400_000)
        rows.append(
            DemoRow(
                str(uuid.UUID(int=rng.getrandbits(128))),
                kind,
                age,
                linked,
                has_file,
                size if sized else None,
                expect,
            )
        )

    for _ in range(10):
        add(TEMPORARY_TYPE, rng.uniform(7.1, 30), expect="deleted: expired, no order")
    for _ in range(2):
        add(
            TEMPORARY_TYPE,
            rng.uniform(7.1, 30),
            sized=False,
            expect="deleted: expired, no order (size read from disk)",
        )
    add(TEMPORARY_TYPE, 12, has_file=False, expect="marked deleted: file already missing")
    for _ in range(4):
        add(TEMPORARY_TYPE, rng.uniform(8, 60), linked=True, expect="kept: linked to an order")
    for _ in range(8):
        add(TEMPORARY_TYPE, rng.uniform(0, 6.9), expect="kept: within 7 days")
    for _ in range(6):
        add(
            PERMANENT_TYPE,
            rng.uniform(1, 120),
            linked=True,
            expect="kept: order attachment (permanent)",
        )
    return rows


def seed(db_url: str, root: Path, now: dt.datetime, rng: random.Random) -> list[DemoRow]:
    """Create the application tables and files for the demo rows."""
    rows = demo_rows(rng)
    engine = make_engine(db_url)
    files, attachments = app_tables(sa.MetaData())
    files.metadata.create_all(engine)
    with engine.begin() as conn:
        for row in rows:
            key = f"{row.snapshot_type}/{row.file_id[:2]}/{row.file_id}.pdf"
            if row.has_file:
                path = root / key
                path.parent.mkdir(parents=True, exist_ok=True)
                size = row.size or rng.randint(20_000, 400_000)
                path.write_bytes(b"%PDF-1.4\n" + b"\0" * (size - 9))
            conn.execute(
                sa.insert(files).values(
                    fileId=row.file_id,
                    snapshotType=row.snapshot_type,
                    parseSessionId=f"ps-{row.file_id[:8]}",
                    storageKey=key,
                    sizeBytes=row.size,
                    createdAt=now - dt.timedelta(days=row.age_days),
                )
            )
            if row.linked:
                conn.execute(
                    sa.insert(attachments).values(
                        orderId=f"order-{row.file_id[:6]}", fileId=row.file_id
                    )
                )
    engine.dispose()
    return rows


def report(db_url: str, root: Path, rows: list[DemoRow]) -> str:
    """One line per demo row: what the job was expected to do, and what is there now."""
    engine = make_engine(db_url)
    files, _ = app_tables(sa.MetaData())
    with engine.connect() as conn:
        state = {
            r.fileId: r
            for r in conn.execute(sa.select(files.c.fileId, files.c.storageKey, files.c.deletedAt))
        }
    engine.dispose()
    lines = [f"{'type':<24} {'age':>6}  {'row':<8} {'file':<8} expected"]
    for row in sorted(rows, key=lambda r: (r.expect, -r.age_days)):
        now = state[row.file_id]
        row_state = "deleted" if now.deletedAt is not None else "live"
        file_state = "present" if (root / now.storageKey).exists() else "gone"
        lines.append(
            f"{row.snapshot_type:<24} {row.age_days:5.1f}d  {row_state:<8} {file_state:<8} "
            f"{row.expect}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=".demo", help="folder for the demo (recreated)")
    args = parser.parse_args(argv)

    base = Path(args.dir).resolve()
    shutil.rmtree(base, ignore_errors=True)
    root = base / "snapshots"
    root.mkdir(parents=True)
    home = base / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "python_logs:\n  managed_python_loggers: [snapshot_ops]\ntelemetry:\n  enabled: false\n"
    )
    db_url = f"sqlite:///{base / 'app.sqlite'}"
    rows = seed(db_url, root, dt.datetime.now(dt.UTC), random.Random(7))

    env = dict(
        os.environ,
        SNAPSHOT_OPS_DATABASE_URL=db_url,
        SNAPSHOT_OPS_STORAGE_URL=root.as_uri(),
        # The demo application writes UTC wall time (SQLAlchemy's DateTime on SQLite) and
        # says so: SQLite keeps no zone, so there `auto` refuses naive times until the
        # application's zone is stated (snapshot_ops.naivezone).
        SNAPSHOT_OPS_NAIVE_TIME_ZONE="UTC",
        DAGSTER_HOME=str(home),
    )
    command = job_command()
    sys.stdout.write(
        f"demo data in {base}\nrunning: dagster job execute -m snapshot_ops "
        "-j snapshot_cleanup_job\n"
    )
    sys.stdout.flush()
    result = subprocess.run(command, env=env, check=False, capture_output=True, text=True)
    log_path = base / "run.log"
    log_path.write_text(result.stdout + result.stderr)
    for line in (result.stdout + result.stderr).splitlines():
        if "cleanup summary" in line or "RUN_SUCCESS" in line or "RUN_FAILURE" in line:
            sys.stdout.write(line + "\n")
    sys.stdout.write(f"(full run log: {log_path})\n\n{report(db_url, root, rows)}\n")
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
