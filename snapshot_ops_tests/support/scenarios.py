"""Shared pieces of the safety tests: bulk application data, the job as a real process, the
checkpoint pause handshake (see snapshot_ops.checkpoints), waiting for the job to wait on a
row lock, and an application attaching candidates while a run goes on."""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import threading
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from snapshot_ops.demo import job_command
from snapshot_ops.rules import TEMPORARY_TYPE
from snapshot_ops_tests.support import REPO
from snapshot_ops_tests.support.waiting import wait_until
from snapshot_ops_tests.support.world import NOW, World

DAY = dt.timedelta(days=1)


def bulk_add(
    world: World,
    count: int,
    *,
    age: dt.timedelta = 10 * DAY,
    snapshot_type: str = TEMPORARY_TYPE,
    linked: bool = False,
    size: int = 100,
    label: str = "bulk",
) -> list[str]:
    """Insert `count` rows with their files in one transaction; return their fileIds."""
    ids = [f"{label}-{uuid.uuid4()}" for _ in range(count)]
    rows = []
    for n, file_id in enumerate(ids):
        key = f"{label}/{file_id[-2:]}/{file_id}.pdf"
        path = world.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
        rows.append(
            {
                "fileId": file_id,
                "snapshotType": snapshot_type,
                "parseSessionId": f"ps-{n}",
                "storageKey": key,
                "sizeBytes": size,
                # Distinct ages give the keyset order something to order by.
                "createdAt": NOW - age - n * dt.timedelta(seconds=1),
                "deletedAt": None,
            }
        )
    with world.engine.begin() as conn:
        conn.execute(sa.insert(world.files), rows)
        if linked:
            conn.execute(
                sa.insert(world.attachments), [{"orderId": "o-1", "fileId": i} for i in ids]
            )
    return ids


def state(world: World) -> dict[str, tuple[bool, bool]]:
    """fileId -> (row marked deleted, object present on disk), for every row."""
    with world.engine.connect() as conn:
        rows = conn.execute(
            sa.select(world.files.c.fileId, world.files.c.storageKey, world.files.c.deletedAt)
        ).all()
    return {
        r.fileId: (r.deletedAt is not None, (world.root / r.storageKey).is_file()) for r in rows
    }


def job_env(world: World, home: Path, **extra: str) -> dict[str, str]:
    """Environment for running the job as a separate process against `world`."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOT_OPS_CRASH")}
    return {
        **env,
        "DAGSTER_HOME": str(home),
        "SNAPSHOT_OPS_DATABASE_URL": world.db_url,
        "SNAPSHOT_OPS_STORAGE_URL": world.root.as_uri(),
        **extra,
    }


def start_job(world: World, home: Path, *, batch_size: int, **extra: str) -> subprocess.Popen:
    """Start `dagster job execute -m snapshot_ops -j snapshot_cleanup_job` as of NOW."""
    config = home.parent / f"{home.name}-run.yaml"
    config.write_text(
        "ops:\n  identify_expired_candidates:\n    config:\n"
        f"      reference_time: '{NOW.isoformat()}'\n      batch_size: {batch_size}\n"
    )
    return subprocess.Popen(
        job_command("-c", str(config)),
        cwd=REPO,
        env=job_env(world, home, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_paused(folder: Path, process: subprocess.Popen | None = None, timeout: float = 120):
    """Block until a run paused at its checkpoint created `folder/paused`."""

    def paused() -> bool:
        if (folder / "paused").exists():
            return True
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended before pausing:\n{process.stdout.read()}")
        return False

    wait_until(paused, timeout=timeout, interval=0.02, what="the run to reach its checkpoint")


def wait_for_lock_wait(engine: sa.Engine, timeout: float = 20.0) -> None:
    """Block until some session of this database is waiting on a row lock."""
    with engine.connect() as conn:

        def waiting() -> int:
            count = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
            conn.rollback()
            return count

        wait_until(
            waiting,
            timeout=timeout,
            interval=0.02,
            what="the cleanup to wait for the attaching transaction's lock",
        )


class Attacher(threading.Thread):
    """The application attaching random candidates, as fast as it can, until stopped."""

    def __init__(self, world: World, ids: list[str], seed: int) -> None:
        super().__init__(daemon=True)
        self.world, self.ids, self.rng = world, ids, random.Random(seed)
        self.stop = threading.Event()
        self.attached: list[tuple[str, float]] = []  # (fileId, when)
        self.refused: list[float] = []  # found the row already marked deleted

    def run(self) -> None:
        while not self.stop.is_set():
            file_id = self.rng.choice(self.ids)
            if self.world.attach(file_id, order_id=f"o-{self.name}"):
                self.attached.append((file_id, time.monotonic()))
            else:
                self.refused.append(time.monotonic())
            time.sleep(0.002)  # an application's pace, and it leaves the run some CPU


def lost_files(world: World, attachers: list[Attacher]) -> list[str]:
    """Attached fileIds whose row is marked deleted or whose object is gone."""
    now = state(world)
    attached = {file_id for a in attachers for file_id, _ in a.attached}
    return sorted(i for i in attached if now[i] != (False, True))
