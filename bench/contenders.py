"""The contenders: how each one is run on its prepared copy of the data, and timed.

- `job`: the cleanup job as `dagster job execute -m snapshot_ops -j snapshot_cleanup_job` in
  a child process with its own DAGSTER_HOME, the way a run launcher starts a production run:
  a fresh interpreter that imports the code location and writes its event log to the
  instance. That also keeps the run's memory apart from the harness's.
- `trivial`: `bench.trivial_job` (one op that does nothing) run exactly the same way on the
  same instance: Dagster's own fixed cost of a run, the reference of the job's.
- `oneliner`, `limit`: `find -delete` (a loop of 1,000-key DeleteObjects on S3) and 32
  threads deleting, each followed by one set-based UPDATE (bench/baselines.py).
- `naive`: bench/naive.py in a child process, measured like the job.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import baselines, eventlog
from bench.measure import Measured, run_measured
from bench.pgurls import libpq_url
from bench.trivial_job import JOB_NAME as TRIVIAL_JOB
from snapshot_ops.demo import job_command

REPO = Path(__file__).resolve().parent.parent
CONTENDERS = ("job", "trivial", "oneliner", "limit", "naive")
#: Contenders that run as a Dagster run (and so get a DAGSTER_HOME and an event log).
DAGSTER_RUNS = ("job", "trivial")
LABELS = {
    "job": "snapshot_cleanup_job (dagster job execute)",
    "trivial": "one-op Dagster job doing nothing (dagster job execute)",
    "oneliner": "(a) one-liner: find -delete + one UPDATE",
    "limit": "(b) machine's limit: 32 threads unlink + one UPDATE",
    "naive": "(c) naive script: per row delete + UPDATE",
}
S3_LABELS = {
    **LABELS,
    "oneliner": "(a) plain loop of 1,000-key DeleteObjects + one UPDATE",
    "limit": "(b) 32 threads of 1,000-key DeleteObjects + one UPDATE",
    "naive": "(c) naive script: per row DeleteObject + UPDATE",
}
S3_PREFIX = "snapshots"


def measured_figures(m: Measured) -> dict[str, Any]:
    return {
        "seconds": m.wall_seconds,
        "peak_bytes": m.peak_bytes,
        "tree_peak_bytes": m.tree_peak_bytes,
        "max_single_bytes": m.max_single_bytes,
    }


def run_dagster(
    command: Sequence[str], work: Path, env: dict[str, str], instance_env: dict[str, str]
) -> dict[str, Any]:
    """Run a `dagster job execute` command in a child process with its own DAGSTER_HOME (the
    project's dagster.yaml on the benchmark's PostgreSQL database); measure it and read its
    run back from the instance. Raises RuntimeError with the log's tail if it exits non-zero.
    """
    home = work / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    # The project's own instance settings (run, event and schedule storage on PostgreSQL),
    # as a deployment uses them; the storage database is a fresh one of the benchmark's.
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    os.environ.update(instance_env)  # read_run and the set-up below load the same instance
    eventlog.create_instance_storage(home)
    env = {**os.environ, **env, **instance_env, "DAGSTER_HOME": str(home)}
    log_path = work / "dagster.log"
    measured = run_measured(command, env=env, cwd=REPO, log_path=log_path)
    if measured.returncode != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{command[-1]} failed (exit {measured.returncode}):\n{tail}")
    run = eventlog.read_run(home)
    if run["run_start"] is not None:
        run["startup_seconds"] = run["run_start"] - measured.started_at
    return {**measured_figures(measured), **run}


def run_job(
    db_url: str,
    storage_url: str,
    now: dt.datetime,
    rows: int,
    work: Path,
    env_extra: dict[str, str],
    run_config: dict[str, Any] | None,
    instance_env: dict[str, str],
) -> dict[str, Any]:
    """Run the real job as `dagster job execute` in a child process; measure it."""
    config = run_config or {
        "ops": {
            "identify_expired_candidates": {
                # The cap is a safety net for production; the benchmark deletes a backlog.
                "config": {"reference_time": now.isoformat(), "max_deletions": rows + 1}
            }
        }
    }
    config_path = work / "run_config.yaml"
    config_path.write_text(json.dumps(config))  # JSON is YAML
    env = {
        **env_extra,
        "SNAPSHOT_OPS_DATABASE_URL": libpq_url(db_url),
        "SNAPSHOT_OPS_STORAGE_URL": storage_url,
    }
    return run_dagster(job_command("-c", str(config_path)), work, env, instance_env)


def run_trivial(work: Path, instance_env: dict[str, str]) -> dict[str, Any]:
    """Run `bench.trivial_job` as the job is run, on the same instance; measure it."""
    command = [
        sys.executable, "-m", "dagster", "job", "execute",
        "-m", "bench.trivial_job", "-j", TRIVIAL_JOB,
    ]  # fmt: skip
    outcome = run_dagster(command, work, {}, instance_env)
    # Nothing to look for in the data: the run must only have succeeded.
    outcome["check"] = {"ok": outcome["status"] == "SUCCESS", "status": outcome["status"]}
    return outcome


def run_naive(
    db_url: str, storage_url: str, cutoff: dt.datetime, work: Path, env_extra: dict[str, str]
) -> dict[str, Any]:
    """Run bench/naive.py in a child process; measure it the same way as the job."""
    command = [
        sys.executable,
        "-m",
        "bench.naive",
        "--db",
        libpq_url(db_url),
        "--storage",
        storage_url,
        "--cutoff",
        cutoff.isoformat(),
    ]
    log_path = work / "naive.log"
    measured = run_measured(command, env={**os.environ, **env_extra}, cwd=REPO, log_path=log_path)
    if measured.returncode != 0:
        raise RuntimeError(f"the naive script failed:\n{log_path.read_text()[-4000:]}")
    return measured_figures(measured)


def run_contender(
    contender: str,
    *,
    db_url: str,
    storage_url: str,
    client: Any,
    cutoff: dt.datetime,
    now: dt.datetime,
    rows: int,
    expected: Sequence[str],
    work: Path,
    env_extra: dict[str, str],
    run_config: dict[str, Any] | None,
    instance_env: dict[str, str],
) -> dict[str, Any]:
    """Run one data-handling contender (all but `trivial`) on its prepared copy; time it."""
    if contender == "job":
        return run_job(db_url, storage_url, now, rows, work, env_extra, run_config, instance_env)
    if contender == "naive":
        return run_naive(db_url, storage_url, cutoff, work, env_extra)
    bucket = storage_url.split("/")[2]
    root = storage_url.removeprefix("file://")
    if contender == "oneliner":
        if client is not None:
            deleting = baselines.s3_loop(client, bucket, S3_PREFIX, expected)
        else:
            deleting = baselines.find_delete(root)
    else:
        if client is not None:
            deleting = baselines.s3_parallel(client, bucket, S3_PREFIX, expected)
        else:
            deleting = baselines.parallel_unlink(root, expected)
    updating, marked = baselines.set_based_update(libpq_url(db_url), cutoff)
    return {
        "seconds": deleting + updating,
        "delete_seconds": deleting,
        "update_seconds": updating,
        "rows_updated": marked,
    }
