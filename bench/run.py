"""The benchmark command: the real job against three baselines, on identical copies of the data.

    python -m bench.run --backend fs --rows 100000             # a backlog: half expired
    python -m bench.run --backend fs --scenario steady          # 1M rows, 20k newly expired
    python -m bench.run --backend s3 --rows 100000             # S3 via a local moto server
    python -m bench.run --scenario empty --rows 1000           # the fixed cost of a run

It generates the rows in a fresh PostgreSQL database (then clones it per contender) and the
objects per contender, runs each contender, checks its outcome (every expected row marked
and object gone, nothing else touched) and writes a markdown table and JSON to --out.

The job runs as `dagster job execute -m snapshot_ops -j snapshot_cleanup_job` in a child
process with its own DAGSTER_HOME (bench/contenders.py); the per-phase times come from that
run's event log (bench/eventlog.py). With nothing expired (`--scenario empty`) the job is
timed against a one-op Dagster job run the same way on the same instance
(bench/trivial_job.py): the job's fixed cost over Dagster's own.

The modules: contenders.py (how each contender runs), eventlog.py (what a run wrote),
checks.py (the outcome check), figures.py (ratios, medians, targets), report.py (the page),
moto_server.py (S3 through moto's server); this one reads the command line and runs the
rounds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import baselines, data, figures
from bench.checks import verify
from bench.contenders import CONTENDERS, S3_PREFIX, run_contender, run_trivial
from bench.eventlog import dagster_instance_env
from bench.moto_server import MOTO_ENV, MotoServer
from bench.pgurls import psycopg2_url
from bench.report import code_version, machine, markdown

REPO = Path(__file__).resolve().parent.parent
#: The contenders each scenario runs unless --contenders says otherwise.
DEFAULT_CONTENDERS = {
    "backlog": ("job", "oneliner", "limit", "naive"),
    "steady": ("job", "oneliner", "limit", "naive"),
    "empty": ("job", "trivial"),
}
DEFAULT_PG = os.environ.get("SNAPSHOT_OPS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def scenario_mix(args: argparse.Namespace) -> data.Mix:
    """The row mix of the chosen scenario and sizes."""
    if args.scenario == "steady":
        return data.steady_day(args.rows or 1_000_000, args.expired or 20_000)
    if args.scenario == "empty":
        # Nothing expired: a run finds nothing to delete, so it costs only its fixed part.
        return data.Mix(rows=args.rows or 10_000, expired=0)
    return data.backlog(args.rows or 100_000, args.expired)


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Generate the data, run every contender on its own copy, check and collect results."""
    mix = scenario_mix(args)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
    cutoff = now - data.RETENTION
    admin_url = psycopg2_url(args.pg_url)
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
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in args.contenders}
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
        # Interleaved rounds (A B C D, A B C D, ...): a drift in the machine's speed then
        # touches every contender alike, and each round's ratios compare neighbours.
        for round_no, contender in itertools.product(range(args.repeat), args.contenders):
            contender_work = work / f"{contender}-{round_no}"
            contender_work.mkdir()
            if contender == "trivial":
                # No data: it only starts a run on the same instance and does nothing.
                _out(f"{contender}: running")
                outcome = run_trivial(contender_work, instance_env)
                runs[contender].append(outcome)
                _out(f"round {round_no + 1}/{args.repeat} {contender}: {outcome['seconds']:.2f}s")
                continue
            db_name = f"{tag}_{contender}"
            db_url = data.create_database(admin_url, db_name, template=src)
            # The one-liner and the limit are handed exactly the expired objects.
            objects = live if contender in ("job", "naive") else expected
            keep = survivors if contender in ("job", "naive") else set()
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
        result["contenders"] = {c: figures.summarize_runs(r) for c, r in runs.items()}
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
    s3 = args.backend == "s3"
    per_round = [
        figures.ratios(figures.round_contenders(runs, i), len(expected), s3)
        for i in range(args.repeat)
    ]
    result["ratios_per_round"] = per_round
    result["ratios"], result["ratio_spread"] = figures.over_rounds(per_round)
    result["targets"] = figures.judge(args.scenario, args.backend, mix.rows, result["ratios"])
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("fs", "s3"), default="fs")
    parser.add_argument(
        "--scenario",
        choices=tuple(DEFAULT_CONTENDERS),
        default="backlog",
        help=(
            "backlog: half the rows expired; steady: a day's newly expired; empty: nothing "
            "expired, the job against a one-op Dagster job (its fixed cost)"
        ),
    )
    parser.add_argument(
        "--rows", type=int, help="rows in the table (100k backlog, 1M steady, 10k empty)"
    )
    parser.add_argument(
        "--expired",
        type=int,
        help="expired parse-session rows (half the rows; 20k on a steady day)",
    )
    parser.add_argument(
        "--contenders",
        default=None,
        help=(
            f"comma-separated subset of {','.join(CONTENDERS)} (default: "
            + "; ".join(f"{s}: {','.join(c)}" for s, c in DEFAULT_CONTENDERS.items())
            + ")"
        ),
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
    if args.contenders is None:
        args.contenders = list(DEFAULT_CONTENDERS[args.scenario])
    else:
        args.contenders = [c for c in args.contenders.split(",") if c]
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    unknown = set(args.contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    if args.scenario == "empty" and args.expired:
        parser.error("--scenario empty has nothing expired; leave out --expired")
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
