"""In-process profile of the marking-and-deleting work: `cleanup.mark_and_delete` alone.

    python -m bench.profile --rows 50000                 # one run
    python -m bench.profile --rows 50000 --repeat 5      # medians with min-max
    python -m bench.profile --rows 50000 --cprofile      # plus the top functions

A backlog (`bench.data.backlog`: half of the rows expired, 5 % of those linked) is generated
once into a fresh PostgreSQL database; each repeat runs on its own clone of it (`CREATE
DATABASE ... TEMPLATE`) and a fresh copy of the objects in a local folder, then calls
`cleanup.mark_and_delete` directly, with no Dagster around it, and checks the outcome
(every expected row marked and object gone, nothing else). It prints wall time, this
process's user and system CPU over the call, rows marked per second, and the process CPU
per marked row (the Python cost of the job plus its syscalls), the CPU of the PostgreSQL
backends that served it (read from /proc before its connections close), then the median
and min-max over the repeats. With --sqlite the rows are copied into a SQLite file instead.

After each repeat of the job, the machine's limit runs on fresh copies of the same database
and objects (`bench.baselines`: 32 threads unlinking exactly the expected files, then one
set-based UPDATE), so both see the same machine load; the summary prints both and the ratio
of their medians (the job's time over the limit's). --no-limit leaves it out.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import os
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import baselines, data
from bench.pgurls import libpq_url
from snapshot_ops import cleanup
from snapshot_ops.db import Catalog, make_engine
from snapshot_ops.demo import app_tables
from snapshot_ops.rules import Policy
from snapshot_ops.storage.filesystem import FilesystemBackend

DEFAULT_PG = os.environ.get(
    "SNAPSHOT_OPS_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
RUN_ID = "profile-run"
#: One profiler per thread the run starts (cProfile sees only the thread that enabled it).
_thread_profiles: list[cProfile.Profile] = []


def _profile_thread(*_args: object) -> None:
    """Installed by threading.setprofile: the first event in a new thread starts a profiler
    of its own there (enabling it replaces this hook in that thread)."""
    profile = cProfile.Profile(time.thread_time)
    _thread_profiles.append(profile)
    profile.enable()


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _copy_to_sqlite(src_url: str, path: Path) -> str:
    """Copy the application's two tables from PostgreSQL into a new SQLite file."""
    url = f"sqlite:///{path}"
    source, target = sa.create_engine(src_url), sa.create_engine(url)
    try:
        files, attachments = app_tables(sa.MetaData())
        files.metadata.create_all(target)
        with source.connect() as src, target.begin() as dst:
            for table in (files, attachments):
                rows = [_in_utc(dict(r._mapping)) for r in src.execute(sa.select(table))]
                dst.execute(sa.insert(table), rows)
            # The index the job recommends for its candidate query.
            for statement in Catalog(target).missing_indexes():
                dst.exec_driver_sql(statement)
    finally:
        source.dispose()
        target.dispose()
    return url


def _in_utc(row: dict[str, Any]) -> dict[str, Any]:
    """A row with its aware times in UTC: SQLAlchemy's DateTime on SQLite writes the wall
    time of the value it is given (PostgreSQL gives them in the session's zone), and the
    copy holds UTC wall time, as the job is told (`run_once`)."""
    return {k: v.astimezone(dt.UTC) if isinstance(v, dt.datetime) else v for k, v in row.items()}


def _expected(src_url: str) -> set[str]:
    engine = sa.create_engine(src_url)
    try:
        with engine.connect() as conn:
            return set(conn.exec_driver_sql('SELECT "fileId" FROM bench.expected').scalars())
    finally:
        engine.dispose()


def _backend_cpu(engine: sa.Engine) -> float:
    """CPU seconds (user + system) the PostgreSQL backends of `engine`'s database used so far.

    Read from /proc, so only for a server on this machine (0.0 when it is not readable).
    Every backend of the database counts: each repeat's database is fresh and used only by
    this process, so they are the run's own (plus the few set-up statements).
    """
    with engine.connect() as conn:
        pids = conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        ).scalars()
        total = 0.0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return 0.0
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_limit(db_url: str, root: Path, rows: list[data.Row], cutoff: dt.datetime) -> float:
    """The machine's limit on fresh objects: `bench.baselines`' 32-thread unlink of exactly
    the expected files plus its one set-based UPDATE on `db_url`; return the seconds."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    data.write_files(str(root), [r for r in rows if r.has_object])
    keys = [r.key for r in rows if r.kind == "candidate"]
    deleting = baselines.parallel_unlink(str(root), keys)
    updating, _ = baselines.set_based_update(libpq_url(db_url), cutoff)
    return deleting + updating


def run_once(
    db_url: str,
    root: Path,
    rows: list[data.Row],
    now: dt.datetime,
    *,
    batch_size: int,
    profiler: cProfile.Profile | None,
) -> dict[str, Any]:
    """Write the objects, run mark_and_delete on `db_url`, return its figures."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    data.write_files(str(root), [r for r in rows if r.has_object])
    # The SQLite copy holds UTC wall time (_copy_to_sqlite); PostgreSQL holds timestamptz.
    catalog = Catalog(make_engine(db_url), naive_time_zone="UTC")
    catalog.ensure_own_tables()
    catalog.times  # noqa: B018 -- the format check is set-up, not the measured work
    policy = Policy(reference_time=now, retention=data.RETENTION, max_deletions=10**9)
    catalog.start_run(
        run_id=RUN_ID,
        run_at=now,
        reference_time=now,
        cutoff=policy.cutoff,
        dry_run=False,
        candidate_count=0,
    )
    storage = FilesystemBackend(str(root))
    try:
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        if profiler is not None:
            profiler.enable()
            threading.setprofile(_profile_thread)  # the deleting threads' work too
        marked, deleted = cleanup.mark_and_delete(
            catalog,
            storage,
            policy,
            run_id=RUN_ID,
            marked_at=now,
            batch_size=batch_size,
        )
        if profiler is not None:
            profiler.disable()
            threading.setprofile(None)  # type: ignore[arg-type]
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        backend = _backend_cpu(catalog.engine) if not catalog.is_sqlite else 0.0
    finally:
        storage.close()
        catalog.engine.dispose()
    return {
        "wall": wall,
        "user": after.ru_utime - before.ru_utime,
        "sys": after.ru_stime - before.ru_stime,
        "backend": backend,
        "marked": marked.marked_count,
        "deleted": deleted.removed,
        "errors": len(marked.errors) + len(deleted.errors),
    }


def verify(db_url: str, root: Path, expected: set[str], survivors: set[str]) -> None:
    """Fail unless exactly the expected rows are marked and only their objects are gone."""
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            marked = {
                str(i)
                for i in conn.execute(
                    sa.text('SELECT "fileId" FROM "SnapshotFiles" WHERE "deletedAt" IS NOT NULL')
                ).scalars()
            }
    finally:
        engine.dispose()
    present = data.count_files(str(root))
    if marked != expected:
        raise SystemExit(
            f"rows wrong: {len(expected - marked)} expected rows not marked, "
            f"{len(marked - expected)} others marked"
        )
    if present != survivors:
        raise SystemExit(
            f"objects wrong: {len(survivors - present)} kept ones gone, "
            f"{len(present - survivors)} expected deletions left"
        )


def _line(label: str, values: list[float], unit: str, digits: int = 2) -> str:
    median = statistics.median(values)
    return (
        f"{label:>14}: {median:.{digits}f} {unit} "
        f"(min {min(values):.{digits}f}, max {max(values):.{digits}f}, n={len(values)})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000, help="rows in the table")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--cprofile", action="store_true", help="print the top functions")
    parser.add_argument("--top", type=int, default=30, help="functions --cprofile prints")
    parser.add_argument("--sqlite", action="store_true", help="run on a SQLite copy")
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="PostgreSQL admin URL")
    parser.add_argument("--workdir", default=None, help="where the objects are written")
    parser.add_argument("--no-limit", action="store_true", help="skip the machine's limit")
    args = parser.parse_args(argv)

    now = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
    rows = data.make_rows(data.backlog(args.rows), now)
    survivors = {r.key for r in rows if r.has_object and r.kind != "candidate"}
    tag = f"snapshot_profile_{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="snapshot-profile-", dir=args.workdir))
    src = f"{tag}_src"
    made: list[str] = []
    results: list[dict[str, Any]] = []
    limits: list[float] = []  # the machine's limit, one per repeat
    cutoff = now - data.RETENTION  # the job's cutoff (Policy.cutoff)
    profiler = cProfile.Profile(time.thread_time) if args.cprofile else None
    try:
        src_url = data.create_database(args.pg_url, src)
        made.append(src)
        data.load_rows(src_url, rows, now, indexes=True)
        expected = _expected(src_url)
        for n in range(args.repeat):
            if args.sqlite:
                db_url = _copy_to_sqlite(src_url, work / f"app-{n}.db")
            else:
                made.append(f"{tag}_{n}")
                db_url = data.create_database(args.pg_url, made[-1], template=src)
            result = run_once(
                db_url,
                work / "objects",
                rows,
                now,
                batch_size=args.batch_size,
                profiler=profiler,
            )
            verify(db_url, work / "objects", expected, survivors)
            if not args.sqlite:
                data.drop_database(args.pg_url, made.pop())
            results.append(result)
            cpu = result["user"] + result["sys"]
            _out(
                f"run {n + 1}: {result['marked']} marked, {result['deleted']} deleted in "
                f"{result['wall']:.2f} s wall ({result['marked'] / result['wall']:,.0f} rows/s); "
                f"CPU user {result['user']:.2f} s + sys {result['sys']:.2f} s "
                f"= {cpu / result['marked'] * 1e6:.0f} us/row; "
                f"PostgreSQL backends {result['backend']:.2f} s"
            )
            if not args.no_limit and not args.sqlite:
                made.append(f"{tag}_limit")
                limit_url = data.create_database(args.pg_url, made[-1], template=src)
                limits.append(run_limit(limit_url, work / "objects", rows, cutoff))
                verify(limit_url, work / "objects", expected, survivors)
                data.drop_database(args.pg_url, made.pop())
                _out(f"       limit: {limits[-1]:.2f} s ({result['wall'] / limits[-1]:.2f}x)")
    finally:
        for name in made:
            data.drop_database(args.pg_url, name)
        shutil.rmtree(work, ignore_errors=True)
    _out()
    _out(f"{args.rows} rows, {results[0]['marked']} marked, batch {args.batch_size}")
    _out(_line("wall", [r["wall"] for r in results], "s"))
    _out(_line("rows/s", [r["marked"] / r["wall"] for r in results], "rows/s", 0))
    _out(_line("user CPU/row", [r["user"] / r["marked"] * 1e6 for r in results], "us", 1))
    _out(_line("sys CPU/row", [r["sys"] / r["marked"] * 1e6 for r in results], "us", 1))
    _out(_line("PG CPU/row", [r["backend"] / r["marked"] * 1e6 for r in results], "us", 1))
    if limits:
        _out(_line("limit wall", limits, "s"))
        ratio = statistics.median(r["wall"] for r in results) / statistics.median(limits)
        _out(f"{'job/limit':>14}: {ratio:.2f}x (ratio of the medians)")
    if profiler is not None:
        out = io.StringIO()
        for profile in _thread_profiles:
            profile.disable()
        stats = pstats.Stats(profiler, *_thread_profiles, stream=out)
        stats.sort_stats("tottime").print_stats(args.top)
        _out(out.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
