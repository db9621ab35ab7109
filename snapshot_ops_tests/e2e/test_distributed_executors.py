"""The cleanup job on executors that run each step in another process: Celery and multiprocess.

SNAPSHOT_OPS_EXECUTOR picks the job's executor. These tests run the whole job with
`dagster job execute` on a persistent instance (the repository's dagster.yaml, Dagster's
storage on PostgreSQL under a temporary DAGSTER_HOME), so op outputs travel between processes
through the default IO manager's files under that home, and pin down that:

- on Celery (two workers started with dagster-celery's own `worker start` command, on the
  RabbitMQ at 127.0.0.1:5672, listening on a queue unique to this test session) and on the
  multiprocess executor, a run split into three key ranges (three marking steps) deletes
  exactly the expired, unlinked snapshots' files and marks exactly their rows, and every
  step ran in a worker process, not the run's own;
- the failure hook and the resources work there too: a step that fails after the run was
  logged leaves its run-log row closed as failed, by the hook running in the worker;
- an application attaching random candidates during a Celery run over three ranges loses
  no file.

The workers run in their own process groups, are stopped by process id when the session
ends, and log to test-artifacts/.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kombu
import pytest
import yaml
from dagster import DagsterEventType, DagsterRunStatus

from snapshot_ops.rules import PERMANENT_TYPE
from snapshot_ops_tests.support.operations import (
    ARTIFACTS,
    REPO,
    Engine,
    execute,
    production_home,
    production_instance,
    stop_servers,
)
from snapshot_ops_tests.support.scenarios import Attacher, bulk_add, lost_files, state
from snapshot_ops_tests.support.waiting import wait_until
from snapshot_ops_tests.support.world import World

DAY = dt.timedelta(days=1)
BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
#: Key ranges of the runs here: each is its own `mark_and_delete_expired[range_N]` step.
RANGES = 3
MARKING = "mark_and_delete_expired"
STEPS = {
    "identify_expired_candidates",
    "finish_pending_deletes",
    *(f"{MARKING}[range_{n}]" for n in range(RANGES)),
    "record_cleanup_run",
    "refresh_storage_assets",
}
WORKERS = 2
#: Candidates of the run that an application attaches to at random meanwhile.
CANDIDATES = 1000


@dataclass
class CeleryWorkers:
    """Running `dagster-celery worker start` processes and the environment a run needs."""

    pids: list[int]  # each the leader of its worker's process group
    env: dict[str, str]  # DAGSTER_HOME, DAGSTER_PG_*, SNAPSHOT_OPS_EXECUTOR and the broker
    logs: list[Path]


def _wait_until_ready(
    processes: list[subprocess.Popen[bytes]], logs: list[Path], timeout: float = 120
) -> None:
    def ready() -> bool:
        for process, log in zip(processes, logs, strict=True):
            assert process.poll() is None, f"a Celery worker exited early:\n{_tail(log)}"
        return all(" ready." in log.read_text(errors="replace") for log in logs)

    wait_until(
        ready,
        timeout=timeout,
        interval=0.5,
        what=lambda: "the Celery workers to be ready:\n" + "\n".join(_tail(log) for log in logs),
    )


def _tail(log: Path, size: int = 3000) -> str:
    """The end of a worker's log, so that a failure says why without the file."""
    return f"--- {log.name}\n" + log.read_text(errors="replace")[-size:]


@pytest.fixture(scope="session")
def celery_workers(
    make_pg_database: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CeleryWorkers]:
    """Two Celery workers (one task at a time each) on a queue unique to this session."""
    base = tmp_path_factory.mktemp("celery")
    token = uuid.uuid4().hex[:10]
    queue = f"snapshot-ops-test-{token}"  # parallel sessions on one broker stay apart
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    env.update(production_home(base / "dagster_home", make_pg_database("celery_dagster")))
    env.update(
        SNAPSHOT_OPS_EXECUTOR="celery",
        SNAPSHOT_OPS_CELERY_BROKER=BROKER,
        SNAPSHOT_OPS_CELERY_QUEUE=queue,
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",  # `worker start` runs `celery`
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
    )
    config = base / "celery.yaml"
    config.write_text(
        yaml.safe_dump({"execution": {"config": {"broker": BROKER, "backend": "rpc://"}}})
    )
    ARTIFACTS.mkdir(exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    logs = [ARTIFACTS / f"celery-worker-{token}-{n}.log" for n in range(WORKERS)]
    try:
        for n, log in enumerate(logs):
            with open(log, "wb") as out:
                processes.append(
                    subprocess.Popen(
                        [
                            str(bin_dir / "dagster-celery"),
                            "worker",
                            "start",
                            "-A",
                            "dagster_celery.app",
                            "-y",
                            str(config),
                            "-q",
                            queue,
                            "-n",
                            f"snapshot-ops-{token}-{n}",
                            "--",
                            "--concurrency=1",
                        ],  # fmt: skip
                        cwd=REPO,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # its own process group, led by its pid
                    )
                )
        _wait_until_ready(processes, logs)
        yield CeleryWorkers(pids=[p.pid for p in processes], env=env, logs=logs)
    finally:
        stop_servers(processes)
        with kombu.Connection(BROKER) as broker:  # the workers declared it; it would stay
            broker.default_channel.queue_delete(queue)


@pytest.fixture
def instance_env(make_pg_database: Callable[[str], str], tmp_path: Path) -> dict[str, str]:
    """A persistent instance home for one multiprocess run."""
    env = dict(os.environ)
    env.update(production_home(tmp_path / "dagster_home", make_pg_database("mp_dagster")))
    env["SNAPSHOT_OPS_EXECUTOR"] = "multiprocess"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture(params=["celery", "multiprocess"])
def engine(request: pytest.FixtureRequest) -> Engine:
    """Each test using this runs once per executor (Celery workers started for the session)."""
    if request.param == "celery":
        workers: CeleryWorkers = request.getfixturevalue("celery_workers")
        return Engine("celery", workers.env, workers.pids, {})
    # forkserver: each step forks from a server that imported Dagster once, instead of
    # starting a new interpreter per step
    execution = {"config": {"start_method": {"forkserver": {}}}}
    return Engine("multiprocess", request.getfixturevalue("instance_env"), [], execution)


def step_pids(env: dict[str, str], run_id: str) -> tuple[DagsterRunStatus, int, dict[str, int]]:
    """The run's status, the pid of its own process, and the pid each step started in."""
    instance = production_instance(env)
    try:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        entries = instance.all_logs(run_id)
        [run_pid] = {
            e.dagster_event.pid
            for e in entries
            if e.dagster_event_type == DagsterEventType.RUN_START
        }
        steps = {
            e.step_key: e.dagster_event.pid
            for e in entries
            if e.dagster_event_type == DagsterEventType.STEP_START
        }
        return run.status, run_pid, steps
    finally:
        instance.dispose()


def test_whole_job_deletes_exactly_the_expired_unlinked_files(
    engine: Engine, pg_world: World, tmp_path: Path
):
    expired = [pg_world.add(age=(8 + n) * DAY) for n in range(12)]
    linked = pg_world.add(age=30 * DAY, linked=True)
    fresh = pg_world.add(age=6 * DAY)
    permanent = pg_world.add(age=400 * DAY, snapshot_type=PERMANENT_TYPE)

    run_id, output = execute(pg_world, engine, tmp_path, ranges=RANGES)

    status, run_pid, steps = step_pids(engine.env, run_id)
    assert status == DagsterRunStatus.SUCCESS, output
    for file_id in expired:
        assert pg_world.is_deleted(file_id) and not pg_world.has_file(file_id)
    for file_id in (linked, fresh, permanent):
        assert not pg_world.is_deleted(file_id) and pg_world.has_file(file_id)
    [log] = pg_world.run_log()
    assert (log.status, log.deleted_count) == ("succeeded", len(expired))
    assert pg_world.pending() == []
    # Every step ran, each outside the run's own process.
    assert set(steps) == STEPS
    assert run_pid not in steps.values()
    if engine.worker_pids:  # in a pool process of one of our Celery workers
        groups = {os.getpgid(pid) for pid in steps.values()}
        assert groups <= set(engine.worker_pids), (steps, engine.worker_pids)
    else:
        assert len(set(steps.values())) == len(STEPS)  # one child process per step


def test_failure_hook_closes_the_run_log_in_the_worker(engine: Engine, pg_world: World, tmp_path):
    # Expired rows whose files are not in the configured folder: the first step logs the run,
    # then refuses to go on (the storage does not hold the candidates' objects) and fails.
    orphans = [pg_world.add(age=(8 + n) * DAY, with_file=False) for n in range(12)]

    run_id, output = execute(pg_world, engine, tmp_path)

    status, run_pid, steps = step_pids(engine.env, run_id)
    assert status == DagsterRunStatus.FAILURE, output
    assert set(steps) == {"identify_expired_candidates"}
    assert run_pid not in steps.values()
    # The hook, run where the step ran with the step's database resource, closed the row.
    [log] = pg_world.run_log()
    assert log.run_id == run_id
    assert log.status == "failed"
    assert not any(pg_world.is_deleted(file_id) for file_id in orphans)


def test_attaches_during_a_celery_run_lose_no_file(
    celery_workers: CeleryWorkers, pg_world: World, tmp_path: Path
):
    engine = Engine("celery", celery_workers.env, celery_workers.pids, {})
    ids = bulk_add(pg_world, CANDIDATES)
    attachers = [Attacher(pg_world, ids, seed) for seed in (1, 2)]
    instance = production_instance(engine.env)
    offset = time.time() - time.monotonic()  # the attachers note monotonic times
    try:
        marking = start_when_marking_starts(instance, pg_world, engine, tmp_path, attachers)
        run_id, output = marking.result(timeout=240)
    finally:
        for a in attachers:
            a.stop.set()
        for a in attachers:
            if a.is_alive():
                a.join(timeout=30)
        instance.dispose()

    status, _, steps = step_pids(engine.env, run_id)
    assert status == DagsterRunStatus.SUCCESS, output
    assert {os.getpgid(pid) for pid in steps.values()} <= set(engine.worker_pids)
    assert set(steps) == STEPS
    assert lost_files(pg_world, attachers) == []
    # The attaches overlapped the marking step: some landed while it ran, and some were
    # refused because it had marked the row first.
    start, end = marking_window(engine.env, run_id)
    during = [t + offset for a in attachers for _, t in a.attached if start < t + offset < end]
    refused = [t for a in attachers for t in a.refused]
    assert during and refused, (len(during), len(refused), end - start)
    # Everything not attached went, and the run log counts exactly that.
    now = state(pg_world)
    attached = {file_id for a in attachers for file_id, _ in a.attached}
    gone = [i for i, s in now.items() if s == (True, False)]
    assert len(gone) + len(attached) == CANDIDATES
    [log] = pg_world.run_log()
    assert (log.status, log.deleted_count) == ("succeeded", len(gone))
    assert pg_world.pending() == []


def start_when_marking_starts(
    instance: Any, world: World, engine: Engine, tmp_path: Path, attachers: list[Attacher]
) -> Future[tuple[str, str]]:
    """Launch the run in a thread; start the attachers once its marking step has started."""
    earlier = {r.run_id for r in instance.get_runs()}  # the session's instance is shared
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(execute, world, engine, tmp_path, batch_size=50, ranges=RANGES)
    pool.shutdown(wait=False)

    def marking_started() -> bool:
        if future.done():
            raise AssertionError(f"the marking step never started: {future.result(timeout=0)}")
        runs = [r.run_id for r in instance.get_runs(limit=5) if r.run_id not in earlier]
        return bool(runs) and any(
            (e.step_key or "").startswith(f"{MARKING}[")
            and e.dagster_event_type == DagsterEventType.STEP_START
            for e in instance.all_logs(runs[0])
        )

    wait_until(marking_started, timeout=240, interval=0.05, what="the marking step to start")
    for a in attachers:
        a.start()
    return future


def marking_window(env: dict[str, str], run_id: str) -> tuple[float, float]:
    """Wall-clock (first start, last end) of the run's marking steps, from their STEP_START
    and STEP_SUCCESS events."""
    instance = production_instance(env)
    try:
        events = [
            e
            for e in instance.all_logs(run_id)
            if (e.step_key or "").startswith(f"{MARKING}[") and e.is_dagster_event
        ]
    finally:
        instance.dispose()
    starts = [e.timestamp for e in events if e.dagster_event_type == DagsterEventType.STEP_START]
    ends = [e.timestamp for e in events if e.dagster_event_type == DagsterEventType.STEP_SUCCESS]
    assert len(starts) == len(ends) == RANGES
    return min(starts), max(ends)
