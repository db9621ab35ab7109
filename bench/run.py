"""The benchmark command: the real job against three baselines, on identical copies of the data.

    python -m bench.run --backend fs --rows 100000             # a backlog: half expired
    python -m bench.run --backend fs --scenario steady          # 1M rows, 20k newly expired
    python -m bench.run --backend s3 --rows 100000             # S3 via a local moto server

It generates the rows in a fresh PostgreSQL database (then clones it per contender) and the
objects per contender, runs each contender, checks its outcome (every expected row marked
and object gone, nothing else touched) and writes a markdown table and JSON to --out.

The job runs as `dagster job execute -m snapshot_ops -j snapshot_cleanup_job` in a child
process with its own DAGSTER_HOME, the way a run launcher starts a production run: a fresh
interpreter that imports the code location and writes its event log to the instance. That
also keeps the run's memory apart from the harness's, and the per-phase times come from
that event log (each step's STEP_START to STEP_SUCCESS).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import baselines, data
from bench.measure import Measured, run_measured
from snapshot_ops.demo import job_command

REPO = Path(__file__).resolve().parent.parent
PHASES = ("identify", "mark", "delete", "record")
CONTENDERS = ("job", "oneliner", "limit", "naive")
LABELS = {
    "job": "snapshot_cleanup_job (dagster job execute)",
    "oneliner": "(a) one-liner: find -delete + one UPDATE",
    "limit": "(b) machine's limit: 32 threads unlink + one UPDATE",
    "naive": "(c) naive script: per row delete + UPDATE",
}
S3_LABELS = {
    "oneliner": "(a) plain loop of 1,000-key DeleteObjects + one UPDATE",
    "limit": "(b) 32 threads of 1,000-key DeleteObjects + one UPDATE",
    "naive": "(c) naive script: per row DeleteObject + UPDATE",
}
#: The issue's targets, as ratios measured in the same run.
TARGETS = {
    "job_over_oneliner": "<= 1.0 at 100k, <= 0.6 at 1M",
    "job_over_limit": "<= 1.5 at 1M",
    "naive_over_job": ">= 8",
    "peak_memory_mb": "< 400",
}
S3_PREFIX = "snapshots"
DEFAULT_PG = os.environ.get("SNAPSHOT_OPS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
#: Moto accepts any credentials; these only keep botocore from looking for real ones.
MOTO_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _psycopg2_url(url: str) -> str:
    parsed = sa.engine.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


def _libpq_url(url: str) -> str:
    return (
        sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


# -- S3 ---------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """moto's S3 server in its own process on a free loopback port (stopped by `stop`)."""

    def __init__(self, log_path: Path) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=self._log,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"moto server did not start; see {log_path}") from None
                time.sleep(0.2)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session(
            aws_access_key_id=MOTO_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=MOTO_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=MOTO_ENV["AWS_DEFAULT_REGION"],
        ).client("s3", endpoint_url=self.endpoint, config=Config(max_pool_connections=40))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


# -- the contenders ---------------------------------------------------------------------------


def read_run(home: Path) -> dict[str, Any]:
    """Per-step times and output metadata of the one run in the Dagster instance at `home`."""
    from dagster import DagsterEventType, DagsterInstance

    instance = DagsterInstance.from_config(str(home))
    try:
        [run] = instance.get_runs(limit=1)
        steps: dict[str, dict[str, Any]] = {}
        run_start = run_end = None
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None:
                continue
            kind = event.event_type
            if kind == DagsterEventType.RUN_START:
                run_start = entry.timestamp
            elif kind in (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE):
                run_end = entry.timestamp
            if event.step_key is None:
                continue
            step = steps.setdefault(event.step_key, {"metadata": {}})
            if kind == DagsterEventType.STEP_START:
                step["start"] = entry.timestamp
            elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
                step["end"] = entry.timestamp
            elif kind == DagsterEventType.STEP_OUTPUT:
                for name, value in event.step_output_data.metadata.items():
                    step["metadata"][name] = _plain(value.value)
        return {
            "status": str(run.status.value),
            "run_start": run_start,
            "run_seconds": (run_end - run_start) if run_start and run_end else None,
            "steps": [
                {
                    "step": key,
                    "phases": [p for p in PHASES if p in key],
                    "start": s.get("start"),
                    "seconds": s["end"] - s["start"] if "start" in s and "end" in s else None,
                    "metadata": s["metadata"],
                }
                for key, s in sorted(steps.items(), key=lambda kv: kv[1].get("start") or 0)
            ],
        }
    finally:
        instance.dispose()


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def dagster_instance_env(admin_url: str, database: str) -> dict[str, str]:
    """The environment the project's dagster.yaml reads its PostgreSQL storage from."""
    url = sa.engine.make_url(admin_url)
    return {
        "DAGSTER_PG_HOST": url.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(url.port or 5432),
        "DAGSTER_PG_DB": database,
        "DAGSTER_PG_USERNAME": url.username or "postgres",
        "DAGSTER_PG_PASSWORD": url.password or "",
    }


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
    home = work / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    # The project's own instance settings (run, event and schedule storage on PostgreSQL),
    # as a deployment uses them; the storage database is a fresh one of the benchmark's.
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    os.environ.update(instance_env)  # read_run and the set-up below load the same instance
    # A production instance exists before its runs: create its storage now, outside the
    # measured run, rather than have the first run pay for creating Dagster's tables.
    from dagster import DagsterInstance

    DagsterInstance.from_config(str(home)).dispose()
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
        **os.environ,
        **env_extra,
        **instance_env,
        "DAGSTER_HOME": str(home),
        "SNAPSHOT_OPS_DATABASE_URL": _libpq_url(db_url),
        "SNAPSHOT_OPS_STORAGE_URL": storage_url,
    }
    command = job_command("-c", str(config_path))
    log_path = work / "job.log"
    measured = run_measured(command, env=env, cwd=REPO, log_path=log_path)
    if measured.returncode != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"the job failed (exit {measured.returncode}):\n{tail}")
    run = read_run(home)
    if run["run_start"] is not None:
        run["startup_seconds"] = run["run_start"] - measured.started_at
    return {**_measured(measured), **run}


def _measured(m: Measured) -> dict[str, Any]:
    return {
        "seconds": m.wall_seconds,
        "peak_bytes": m.peak_bytes,
        "tree_peak_bytes": m.tree_peak_bytes,
        "max_single_bytes": m.max_single_bytes,
    }


def run_naive(
    db_url: str, storage_url: str, cutoff: dt.datetime, work: Path, env_extra: dict[str, str]
) -> dict[str, Any]:
    """Run bench/naive.py in a child process; measure it the same way as the job."""
    command = [
        sys.executable,
        "-m",
        "bench.naive",
        "--db",
        _libpq_url(db_url),
        "--storage",
        storage_url,
        "--cutoff",
        cutoff.isoformat(),
    ]
    log_path = work / "naive.log"
    measured = run_measured(command, env={**os.environ, **env_extra}, cwd=REPO, log_path=log_path)
    if measured.returncode != 0:
        raise RuntimeError(f"the naive script failed:\n{log_path.read_text()[-4000:]}")
    return _measured(measured)


# -- checks -----------------------------------------------------------------------------------


def verify(db_url: str, present: set[str], survivors: set[str]) -> dict[str, Any]:
    """Did the contender mark every expected row and remove its object, and nothing else?"""
    engine = sa.create_engine(_psycopg2_url(db_url))
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


# -- orchestration ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on (no paths, no host names)."""
    model = ""
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        mem_kb = int(handle.readline().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def code_version() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Generate the data, run every contender on its own copy, check and collect results."""
    if args.scenario == "steady":
        mix = data.steady_day(args.rows or 1_000_000, args.expired or 20_000)
    else:
        mix = data.backlog(args.rows or 100_000, args.expired)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
    cutoff = now - data.RETENTION
    admin_url = _psycopg2_url(args.pg_url)
    tag = f"snapshot_bench_{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="snapshot-bench-", dir=args.workdir))
    moto = None
    load = [os.getloadavg()[0]]
    result: dict[str, Any] = {
        "backend": args.backend,
        "scenario": args.scenario,
        "mix": {
            "rows": mix.rows,
            "expired": mix.expired,
            "permanent": mix.permanent,
            "fresh": mix.fresh,
            "tombstones": mix.tombstones,
        },
        "machine": machine(),
        "code": code_version(),
        "date": now.isoformat(),
        "contenders": {},
    }
    try:
        started = time.perf_counter()
        rows = data.make_rows(mix, now, seed=args.seed)
        expected = [r for r in rows if r.kind == "candidate"]
        live = [r for r in rows if r.has_object]
        survivors = {r.key for r in live if r.kind != "candidate"}
        result["mix"]["to_delete"] = len(expected)
        src = f"{tag}_src"
        src_url = data.create_database(admin_url, src)
        data.load_rows(src_url, rows, now, indexes=not args.no_indexes)
        result["generate_db_seconds"] = time.perf_counter() - started
        engine = sa.create_engine(src_url)
        try:  # disposed at once: CREATE DATABASE ... TEMPLATE needs the source unused
            with engine.connect() as conn:
                version = conn.exec_driver_sql("SHOW server_version").scalar()
        finally:
            engine.dispose()
        result["machine"]["postgresql"] = version
        _out(
            f"generated {mix.rows} rows ({len(expected)} to delete) in "
            f"{result['generate_db_seconds']:.1f}s"
        )
        if args.backend == "s3":
            moto = MotoServer(work / "moto.log")
            client = moto.client()
            env_extra = {**MOTO_ENV, "AWS_ENDPOINT_URL": moto.endpoint}
        else:
            client, env_extra = None, {}
        # Dagster's own storage (runs, event logs), on PostgreSQL as in production.
        data.create_database(admin_url, f"{tag}_dagster")
        instance_env = dagster_instance_env(admin_url, f"{tag}_dagster")
        runs: dict[str, list[dict[str, Any]]] = {c: [] for c in args.contenders}
        # Interleaved rounds (A B C D, A B C D, ...): a drift in the machine's speed then
        # touches every contender alike, and each round's ratios compare neighbours.
        for round_no, contender in itertools.product(range(args.repeat), args.contenders):
            db_name = f"{tag}_{contender}"
            db_url = data.create_database(admin_url, db_name, template=src)
            # The one-liner and the limit are handed exactly the expired objects.
            objects = live if contender in ("job", "naive") else expected
            keep = survivors if contender in ("job", "naive") else set()
            contender_work = work / f"{contender}-{round_no}"
            contender_work.mkdir()
            t0 = time.perf_counter()
            if client is not None:
                bucket = f"{tag}-{contender}".replace("_", "-")
                data.put_objects(client, bucket, S3_PREFIX, objects)
                storage_url = f"s3://{bucket}/{S3_PREFIX}"
            else:
                root = contender_work / "objects"
                root.mkdir()
                data.write_files(str(root), objects)
                storage_url = root.as_uri()
            prepared = time.perf_counter() - t0
            load.append(os.getloadavg()[0])
            _out(f"{contender}: {len(objects)} objects written in {prepared:.1f}s; running")
            outcome = run_contender(
                contender,
                db_url=db_url,
                storage_url=storage_url,
                client=client,
                cutoff=cutoff,
                now=now,
                rows=mix.rows,
                expected=[r.key for r in expected],
                work=contender_work,
                env_extra=env_extra,
                run_config=args.run_config,
                instance_env=instance_env,
            )
            if client is not None:
                present = data.list_objects(client, bucket, S3_PREFIX)
                data.empty_bucket(client, bucket)
            else:
                present = data.count_files(str(root))
                # Unlinks are slow on a disk mounted with `discard`: clear up in parallel.
                baselines.parallel_unlink(str(root), sorted(present))
                shutil.rmtree(root)
            outcome["prepare_seconds"] = prepared
            outcome["objects_written"] = len(objects)
            outcome["check"] = verify(db_url, present, keep)
            data.drop_database(admin_url, db_name)
            runs[contender].append(outcome)
            _out(
                f"round {round_no + 1}/{args.repeat} {contender}: {outcome['seconds']:.2f}s, "
                f"check {'ok' if outcome['check']['ok'] else 'FAILED ' + str(outcome['check'])}"
            )
        data.drop_database(admin_url, src)
        result["rounds"] = args.repeat
        result["contenders"] = {c: summarize_runs(r) for c, r in runs.items()}
    finally:
        if moto is not None:
            moto.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        for contender in CONTENDERS:
            data.drop_database(admin_url, f"{tag}_{contender}")
        data.drop_database(admin_url, f"{tag}_src")
        data.drop_database(admin_url, f"{tag}_dagster")
    load.append(os.getloadavg()[0])
    result["load_average_1min"] = load
    per_round = [ratios(round_contenders(runs, i)) for i in range(args.repeat)]
    result["ratios_per_round"] = per_round
    result["ratios"] = {key: _median([r[key] for r in per_round]) for key in per_round[0]}
    result["ratio_spread"] = {key: _spread([r[key] for r in per_round]) for key in per_round[0]}
    return result


def round_contenders(runs: dict[str, list[dict[str, Any]]], index: int) -> dict[str, Any]:
    """The contenders' outcomes of one round, in the shape `ratios` reads."""
    return {"contenders": {c: r[index] for c, r in runs.items() if len(r) > index}}


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One contender's runs: the run of median wall time (its steps, memory, check) with
    every run's seconds beside it, and `ok` only if every run's outcome check passed."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    typical = dict(ordered[(len(ordered) - 1) // 2])
    typical["runs_seconds"] = [r["seconds"] for r in runs]
    typical["seconds_min"], typical["seconds_max"] = ordered[0]["seconds"], ordered[-1]["seconds"]
    typical["peak_bytes_max"] = max((r.get("peak_bytes") or 0) for r in runs) or None
    failed = [r["check"] for r in runs if not r["check"]["ok"]]
    typical["check"] = failed[0] if failed else typical["check"]
    return typical


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _spread(values: list[float | None]) -> list[float] | None:
    known = [v for v in values if v is not None]
    return [min(known), max(known)] if known else None


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
    """Run one contender on its prepared copy; return its timings."""
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
    updating, marked = baselines.set_based_update(_libpq_url(db_url), cutoff)
    return {
        "seconds": deleting + updating,
        "delete_seconds": deleting,
        "update_seconds": updating,
        "rows_updated": marked,
    }


def ratios(result: dict[str, Any]) -> dict[str, float | None]:
    """The issue's figures of merit: job time over each baseline's, naive over job, memory."""
    c = result["contenders"]
    job = c.get("job", {}).get("seconds")

    def over(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    return {
        "job_over_oneliner": over(job, c.get("oneliner", {}).get("seconds")),
        "job_over_limit": over(job, c.get("limit", {}).get("seconds")),
        "naive_over_job": over(c.get("naive", {}).get("seconds"), job),
        "peak_memory_mb": (c["job"]["peak_bytes"] / 1e6) if "job" in c else None,
    }


# -- report -----------------------------------------------------------------------------------


def _rate(count: int, seconds: float | None) -> str:
    return f"{count / seconds:,.0f}" if seconds else "-"


def _seconds_spread(outcome: dict[str, Any]) -> str:
    """Median seconds, with the min-max of the rounds when there was more than one."""
    median = f"{outcome['seconds']:.2f}"
    runs = outcome.get("runs_seconds") or []
    if len(runs) < 2:
        return median
    return f"{median} ({outcome['seconds_min']:.2f}-{outcome['seconds_max']:.2f})"


def _mb(value: int | None) -> str:
    return f"{value / 1e6:,.0f} MB" if value else "-"


def markdown(result: dict[str, Any], command: str) -> str:
    """The result as a markdown page: setup, one row per phase and baseline, the ratios."""
    mix, n = result["mix"], result["mix"]["to_delete"]
    s3 = result["backend"] == "s3"
    lines = [
        f"# snapshot cleanup benchmark: {result['backend']}, {result['scenario']}, "
        f"{mix['rows']:,} rows",
        "",
        f"- command: `{command}`",
        f"- data: {mix['rows']:,} rows: {mix['expired']:,} expired parse-session snapshots "
        f"({n:,} to delete, the rest linked to an order), {mix['fresh']:,} fresh, "
        f"{mix['permanent']:,} permanent, {mix['tombstones']:,} already deleted",
        f"- machine: {result['machine']['cpus']} CPUs ({result['machine']['cpu_model']}), "
        f"{result['machine']['memory_gb']} GB, Linux {result['machine']['kernel']}, "
        f"PostgreSQL {result['machine'].get('postgresql', '?')}, "
        f"Python {result['machine']['python']}",
        f"- code: {result['code']}, {result['date']}; 1-minute load average during the run: "
        + ", ".join(f"{x:.1f}" for x in result["load_average_1min"])
        + " (shared machine: compare the ratios, not the seconds)",
        "",
        "| contender | part | seconds | rows/s | objects/s | peak memory |",
        "|---|---|---:|---:|---:|---:|",
    ]
    c = result["contenders"]
    if "job" in c:
        job = c["job"]
        for step in job["steps"]:
            phases = step["phases"]
            # The step's own counts where it reports them (a step that finishes an earlier
            # run's leftovers deletes none of this run's rows), else the data set's.
            md = step["metadata"]
            rows = n if ({"identify", "mark"} & set(phases)) else 0
            rows = md.get("marked", md.get("candidates", rows)) if rows else 0
            objects = n if "delete" in phases else 0
            if objects and "deleted" in md:
                objects = md["deleted"] + md.get("alreadyMissing", 0)
            lines.append(
                f"| job | {step['step']} ({'+'.join(phases) or 'other'}) | "
                f"{step['seconds']:.2f} | {_rate(rows, step['seconds']) if rows else '-'} | "
                f"{_rate(objects, step['seconds']) if objects else '-'} | |"
            )
        in_steps = sum(s["seconds"] or 0 for s in job["steps"])
        startup = job.get("startup_seconds") or 0.0
        lines.append(
            f"| job | process start, imports, code location load (to RUN_START) | "
            f"{startup:.2f} | | | |"
        )
        lines.append(
            f"| job | Dagster between and after steps, process exit | "
            f"{job['seconds'] - in_steps - startup:.2f} | | | |"
        )
        lines.append(
            f"| **job** | **total (process wall time)** | **{_seconds_spread(job)}** | "
            f"{_rate(n, job['seconds'])} | {_rate(n, job['seconds'])} | {_mb(job['peak_bytes'])} |"
        )
    for name in ("oneliner", "limit"):
        if name in c:
            r = c[name]
            label = (S3_LABELS if s3 else LABELS)[name]
            lines += [
                f"| {label} | delete objects | {r['delete_seconds']:.2f} | | "
                f"{_rate(n, r['delete_seconds'])} | |",
                f"| {label} | one set-based UPDATE | {r['update_seconds']:.2f} | "
                f"{_rate(n, r['update_seconds'])} | | |",
                f"| {label} | **total** | **{_seconds_spread(r)}** | {_rate(n, r['seconds'])} | "
                f"{_rate(n, r['seconds'])} | |",
            ]
    if "naive" in c:
        r = c["naive"]
        label = (S3_LABELS if s3 else LABELS)["naive"]
        lines.append(
            f"| {label} | **total (process wall time)** | **{_seconds_spread(r)}** | "
            f"{_rate(n, r['seconds'])} | {_rate(n, r['seconds'])} | {_mb(r['peak_bytes'])} |"
        )
    lines += [
        "",
        f"| figure | median of {result.get('rounds', 1)} rounds | min-max | target |",
        "|---|---:|---:|---|",
    ]
    names = {
        "job_over_oneliner": "job time / (a) one-liner time",
        "job_over_limit": "job time / (b) machine's limit time",
        "naive_over_job": "(c) naive time / job time",
        "peak_memory_mb": "job peak memory, all processes (MB)",
    }
    for key, label in names.items():
        value = result["ratios"].get(key)
        shown = "-" if value is None else f"{value:.2f}"
        spread = (result.get("ratio_spread") or {}).get(key)
        shown_spread = "-" if not spread else f"{spread[0]:.2f}-{spread[1]:.2f}"
        lines.append(f"| {label} | {shown} | {shown_spread} | {TARGETS[key]} |")
    lines += ["", "Outcome checks (every expected row marked and object gone, nothing else):"]
    for name, r in c.items():
        check = r["check"]
        lines.append(f"- {name}: {'ok' if check['ok'] else 'FAILED ' + json.dumps(check)}")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("fs", "s3"), default="fs")
    parser.add_argument(
        "--scenario",
        choices=("backlog", "steady"),
        default="backlog",
        help="backlog: half the rows expired; steady: a day's newly expired",
    )
    parser.add_argument("--rows", type=int, help="rows in the table (100k backlog, 1M steady)")
    parser.add_argument(
        "--expired",
        type=int,
        help="expired parse-session rows (half the rows; 20k on a steady day)",
    )
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated subset of {','.join(CONTENDERS)}",
    )
    parser.add_argument(
        "--pg-url",
        default=DEFAULT_PG,
        help="PostgreSQL URL of a database to connect to for CREATE DATABASE",
    )
    parser.add_argument(
        "--out",
        default=str(REPO / "bench" / "results"),
        help="folder for the markdown and JSON results",
    )
    parser.add_argument("--workdir", default=None, help="where objects are written (default: tmp)")
    parser.add_argument(
        "--run-config",
        type=json.loads,
        default=None,
        help="the job's run config as JSON (default: reference time + cap)",
    )
    parser.add_argument(
        "--no-indexes", action="store_true", help="leave out the indexes the job recommends"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds: every contender runs this many times, interleaved (medians reported)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    args.contenders = [c for c in args.contenders.split(",") if c]
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    unknown = set(args.contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.backend == "s3":
        try:
            import snapshot_ops.storage.s3  # noqa: F401
        except ImportError:
            _out("the S3 storage backend (snapshot_ops/storage/s3.py) is not in this tree")
            return 2
    command = "python -m bench.run " + " ".join(sys.argv[1:] if argv is None else argv)
    result = run_benchmark(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # A new name per run: committed results are never overwritten.
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{args.backend}-{args.scenario}-{result['mix']['rows']}-{stamp}"
    result["command"] = command
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    page = markdown(result, command)
    (out / f"{name}.md").write_text(page)
    _out(page)
    failed = [name for name, r in result["contenders"].items() if not r["check"]["ok"]]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
