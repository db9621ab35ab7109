"""max_deletes_per_second holds for a run as a whole, across ranges running at once.

A run over S3 (moto's server behind the fault proxy, which notes when each request arrived)
is split into two key ranges on the multiprocess executor, so both ranges delete at the same
time from two processes. Counting the keys of the DeleteObjects requests the store received,
no window of one second holds more than the limit, plus one request of one range (a
request admitted at the end of a window may reach the store a little later than the next
one). This tests the protection, not the speed: the run itself just has to finish with
every expired object deleted.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterRunStatus

from snapshot_ops_tests.support.operations import (
    REPO,
    Engine,
    execute,
    production_home,
    production_instance,
)
from snapshot_ops_tests.support.stores import TEST_RETRY, S3Store
from snapshot_ops_tests.support.world import World

DAY = dt.timedelta(days=1)
LIMIT = 20  # keys per second for the run
RANGES = 2  # so 10 per second for each range
SHARE = LIMIT // RANGES  # keys per second, and per request at most, of one range
EXPIRED = 120  # 60 per range: six windows each, so the two ranges' deleting overlaps


def keys_per_window(arrivals: list[tuple[float, int]], window: float = 1.0) -> int:
    """The most keys that arrived within any `window` seconds."""
    arrivals = sorted(arrivals)
    return max(sum(n for t, n in arrivals if start <= t < start + window) for start, _ in arrivals)


@pytest.fixture
def multiprocess(make_pg_database, s3_store: S3Store, tmp_path: Path) -> Engine:
    """A persistent instance for a multiprocess run; the environment reaches the proxy."""
    env = dict(os.environ)  # with the AWS_* variables of the S3 proxy
    env.update(production_home(tmp_path / "dagster_home", make_pg_database("rate_dagster")))
    env["SNAPSHOT_OPS_EXECUTOR"] = "multiprocess"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return Engine("multiprocess", env, [], {"config": {"start_method": {"forkserver": {}}}})


def test_deletes_stay_under_the_limit_across_ranges(
    multiprocess: Engine, s3_store: S3Store, postgres_url: str, storage_root: Path, tmp_path
):
    engine = multiprocess
    world = World(postgres_url, storage_root, s3_store)
    try:
        expired = [world.add(age=8 * DAY + n * dt.timedelta(seconds=1)) for n in range(EXPIRED)]
        kept = world.add(age=2 * DAY)

        run_id, output = execute(
            world,
            engine,
            tmp_path,
            storage={"max_deletes_per_second": LIMIT, **TEST_RETRY},
            ranges=RANGES,
            batch_size=20,
        )

        assert run_status(engine.env, run_id) == DagsterRunStatus.SUCCESS, output
        assert all(world.is_deleted(i) and not world.has_file(i) for i in expired)
        assert not world.is_deleted(kept) and world.has_file(kept)
    finally:
        world.engine.dispose()
    deletes = s3_store.proxy.requests(lambda seen: seen.is_s3_delete_objects)
    arrivals = [(seen.at, len(seen.s3_delete_keys())) for seen in deletes]
    assert sum(n for _, n in arrivals) == EXPIRED
    assert keys_per_window(arrivals) <= LIMIT + SHARE, sorted(arrivals)
    assert max(n for _, n in arrivals) <= SHARE  # a batch larger than a share is split
    # The two ranges deleted at the same time, or the test would show one range's share.
    (start_0, end_0), (start_1, end_1) = ranges_windows(engine.env, run_id)
    assert start_0 < end_1 and start_1 < end_0


def run_status(env: dict[str, str], run_id: str) -> DagsterRunStatus:
    instance = production_instance(env)
    try:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        return run.status
    finally:
        instance.dispose()


def ranges_windows(env: dict[str, str], run_id: str) -> list[tuple[float, float]]:
    """Wall-clock (start, end) of each marking step, in range order."""
    instance = production_instance(env)
    try:
        events = [e for e in instance.all_logs(run_id) if e.is_dagster_event and e.step_key]
    finally:
        instance.dispose()
    windows = []
    for n in range(RANGES):
        key = f"mark_and_delete_expired[range_{n}]"
        times = {e.dagster_event_type: e.timestamp for e in events if e.step_key == key}
        windows.append((times[DagsterEventType.STEP_START], times[DagsterEventType.STEP_SUCCESS]))
    return windows
