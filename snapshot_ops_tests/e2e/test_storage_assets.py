"""The storage assets through Dagster: lineage, what a cleanup run materializes, a real
backfill that deletes nothing and reproduces the numbers, and checks that fail when they
should.

A week of daily runs (across the night the clocks go back in Europe/London, with a day
without a run, a dry run and a failed run) is run in process against one Dagster instance;
the backfill is the `dagster asset materialize --partition-range` CLI on that instance.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
import zoneinfo
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import AssetCheckKey, AssetKey, AssetSelection, DagsterInstance, materialize

from snapshot_ops import savings
from snapshot_ops.db import SNAPSHOT_COLUMNS, Catalog, make_engine
from snapshot_ops.defs.assets import (
    BACKING_OFF_CHECK,
    CLEANUP_RUNS,
    ORDER_ATTACHMENTS,
    OVERDUE_CHECK,
    RECLAIMED_KEY,
    SAVINGS_KEY,
    SNAPSHOT_FILES,
    TOTAL_CHECK,
    build_storage_assets,
)
from snapshot_ops.defs.resources import SnapshotDatabase
from snapshot_ops_tests.support.commands import python_module, run_command

LONDON = "Europe/London"
TZ = zoneinfo.ZoneInfo(LONDON)
DAY = dt.timedelta(days=1)
#: Per day of the simulated week: (files expiring that day, their size); None = no run.
WEEK = {
    dt.date(2026, 10, 21): (2, 1000),
    dt.date(2026, 10, 22): (1, 3000),
    dt.date(2026, 10, 23): None,
    dt.date(2026, 10, 24): (3, 500),
    dt.date(2026, 10, 25): (2, 2500),  # 25 hours long in London
    dt.date(2026, 10, 26): (1, 100),
    dt.date(2026, 10, 27): (2, 4000),
}
NUMBERS = ("bytesReclaimed", "deletedCount", "errors", "runs", "failedRuns", "runAt")


@pytest.fixture(autouse=True)
def london(monkeypatch):
    """Days are counted in the schedule's timezone, read from the environment by the job."""
    monkeypatch.setenv("SNAPSHOT_OPS_TIMEZONE", LONDON)


@pytest.fixture
def instance(tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with DagsterInstance.local_temp(tempdir=str(home)) as inst:
        yield inst


def run_job(world, instance=None, **config):
    """Run the job on `world`, as of the wall clock unless `reference_time` is given."""
    config.setdefault("reference_time", None)
    return world.run(instance=instance, **config)


def run_checks(world):
    """Execute both asset checks on their own, as the UI's "Execute checks" does."""
    assets, checks = build_storage_assets(LONDON)
    result = materialize(
        [SNAPSHOT_FILES, ORDER_ATTACHMENTS, CLEANUP_RUNS, *assets, *checks],
        selection=AssetSelection.all_asset_checks(),
        resources={"database": SnapshotDatabase(url=world.db_url)},
    )
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def tick(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(3), TZ)


def numbers(metadata) -> dict:
    return {name: metadata[name].value for name in NUMBERS}


def on_disk(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def latest_by_partition(instance, run_id: str) -> dict[str, dict]:
    records = instance.fetch_materializations(RECLAIMED_KEY, limit=200).records
    return {
        r.partition_key: numbers(r.asset_materialization.metadata)
        for r in reversed(records)
        if r.run_id == run_id
    }


def latest_check_evaluations(instance) -> dict:
    keys = [
        AssetCheckKey(SAVINGS_KEY, TOTAL_CHECK),
        AssetCheckKey(SNAPSHOT_FILES.key, OVERDUE_CHECK),
    ]
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    return {
        key.name: record.event.dagster_event.event_specific_data for key, record in latest.items()
    }


def backfill(world, home: Path, first: dt.date, last: dt.date) -> None:
    env = dict(
        os.environ,
        DAGSTER_HOME=str(home),
        SNAPSHOT_OPS_DATABASE_URL=world.db_url,
        SNAPSHOT_OPS_STORAGE_URL=world.root.as_uri(),
        SNAPSHOT_OPS_TIMEZONE=LONDON,
    )
    command = python_module(
        "dagster",
        "asset",
        "materialize",
        "-m",
        "snapshot_ops",
        "--select",
        RECLAIMED_KEY.to_user_string(),
        "--partition-range",
        f"{first}...{last}",
    )
    run_command(command, env=env)


@pytest.mark.unit
def test_definitions_read_snapshot_files_to_cleanup_to_reclaimed_to_savings():
    from snapshot_ops.definitions import defs

    graph = defs.resolve_asset_graph()

    def parents(key) -> set[str]:
        return {k.to_user_string() for k in graph.get(AssetKey(key)).parent_keys}

    assert parents("snapshot_cleanup_runs") == {"SnapshotFiles", "OrderAttachments"}
    assert parents("snapshot_storage_reclaimed") == {"snapshot_cleanup_runs"}
    assert parents("snapshot_storage_savings_30d") == {"snapshot_storage_reclaimed"}
    for external in ("SnapshotFiles", "OrderAttachments", "snapshot_cleanup_runs"):
        assert not graph.get(AssetKey(external)).is_materializable
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert checks == {
        ("snapshot_storage_savings_30d", TOTAL_CHECK),
        ("SnapshotFiles", OVERDUE_CHECK),
        ("snapshot_cleanup_runs", BACKING_OFF_CHECK),
    }
    job = defs.resolve_job_def("snapshot_cleanup_job")
    assert job.graph.node_names()[-1] == "refresh_storage_assets"
    partitions = graph.get(RECLAIMED_KEY).partitions_def
    schedule = defs.resolve_schedule_def("daily_snapshot_cleanup")
    assert partitions.timezone == schedule.execution_timezone


@pytest.mark.integration
def test_assets_carry_owners_freshness_and_the_columns_of_their_real_tables(world):
    """Each asset has owners; the column schemas name exactly the columns of the tables the
    job reads and writes (the run log and the savings table as created, the application's
    columns the job reads), so a renamed column cannot leave a stale schema behind."""
    from snapshot_ops.definitions import defs

    graph = defs.resolve_asset_graph()
    catalog = Catalog(make_engine(world.db_url))
    catalog.ensure_own_tables()
    savings.write_savings(catalog, savings.compute_savings(catalog, dt.date(2026, 11, 1), "UTC"))
    inspector = sa.inspect(world.engine)
    table = savings.savings_table(catalog)
    created = {
        "snapshot_cleanup_runs": inspector.get_columns(catalog.runs.name, catalog.runs.schema),
        "snapshot_storage_savings_30d": inspector.get_columns(table.name, table.schema),
    }
    catalog.engine.dispose()
    expected = {
        "SnapshotFiles": list(SNAPSHOT_COLUMNS),
        "OrderAttachments": ["fileId"],
        **{key: [c["name"] for c in columns] for key, columns in created.items()},
    }
    for key, columns in expected.items():
        node = graph.get(AssetKey(key))
        schema = node.metadata["dagster/column_schema"]
        assert [c.name for c in schema.columns] == columns, key
    for node in graph.asset_nodes:
        assert node.owners, node.key
    policy = graph.get(CLEANUP_RUNS.key).freshness_policy
    assert policy.fail_window.to_timedelta() == dt.timedelta(hours=36)


def test_a_week_of_runs_then_a_backfill_reproduces_the_numbers_and_deletes_nothing(
    pg_world, instance, tmp_path
):
    world = pg_world
    expected: dict[str, dict] = {}
    for day, plan in WEEK.items():
        if plan is None:
            expected[day.isoformat()] = {"bytesReclaimed": 0, "deletedCount": 0, "runs": 0}
            continue
        count, size = plan
        for _ in range(count):
            world.add(age=7.5 * DAY, size=size, now=tick(day))
        if day == dt.date(2026, 10, 24):
            dry = run_job(world, instance, reference_time=tick(day).isoformat(), dry_run=True)
            assert dry.success and dry.get_asset_materialization_events() == []
        result = run_job(world, instance, reference_time=tick(day).isoformat())
        assert result.success, day
        expected[day.isoformat()] = {
            "bytesReclaimed": count * size,
            "deletedCount": count,
            "runs": 1,
        }
        materialized = {
            (e.asset_key.to_user_string(), e.partition)
            for e in result.get_asset_materialization_events()
        }
        assert materialized == {
            ("snapshot_cleanup_runs", None),
            ("snapshot_storage_reclaimed", day.isoformat()),
            ("snapshot_storage_savings_30d", None),
        }
        assert all(e.passed for e in result.get_asset_check_evaluations())
        assert len(result.get_asset_check_evaluations()) == 3

    # Every run's day carries its own figures; the day without a run has none yet.
    job_numbers: dict[str, dict] = {}
    for record in reversed(instance.fetch_materializations(RECLAIMED_KEY, limit=50).records):
        job_numbers[record.partition_key] = numbers(record.asset_materialization.metadata)
    assert set(job_numbers) == {d.isoformat() for d, p in WEEK.items() if p is not None}
    for key, values in job_numbers.items():
        assert {k: values[k] for k in expected[key]} == expected[key]
        assert values["errors"] == 0

    # The 30-day view, as the last run left it, in the table a dashboard reads: it ends
    # today (London), whatever day the runs were for, and sums the run log over its days.
    today = dt.datetime.now(TZ).date()
    in_window = sum(
        plan[0] * plan[1]
        for day, plan in WEEK.items()
        if plan is not None and today - 29 * DAY <= day <= today
    )
    assert savings_table_rows(world) == (30, in_window, today - 29 * DAY, today)
    savings_event = instance.fetch_materializations(SAVINGS_KEY, limit=1).records[0]
    assert savings_event.asset_materialization.metadata["totalBytes30d"].value == in_window
    # The same figures computed for the 30 days ending the week's last day hold the week.
    total = sum(c * s for c, s in filter(None, WEEK.values()))
    catalog = Catalog(make_engine(world.db_url))
    view = savings.compute_savings(catalog, max(WEEK), LONDON)
    catalog.engine.dispose()
    assert (view.total_bytes, int((view.daily["bytes_reclaimed"] == 0).sum())) == (total, 24)

    # A backfill of the whole week, twice: same numbers, nothing deleted, no run logged.
    files_before, live_before = on_disk(world.root), world.live_rows()
    world.add(age=30 * DAY)  # expired and live: a cleanup would delete it, a backfill must not
    files_before, live_before = on_disk(world.root), world.live_rows()
    log_before = len(world.run_log())
    first, last = min(WEEK), max(WEEK)
    backfilled = []
    for _ in range(2):
        backfill(world, instance.root_directory, first, last)
        run = instance.get_runs(limit=1)[0]
        backfilled.append(latest_by_partition(instance, run.run_id))
        assert on_disk(world.root) == files_before
        assert world.live_rows() == live_before
        assert len(world.run_log()) == log_before

    assert backfilled[0] == backfilled[1]
    assert set(backfilled[0]) == {d.isoformat() for d in WEEK}
    for key, values in backfilled[0].items():
        assert {k: values[k] for k in expected[key]} == expected[key], key
        if key in job_numbers:
            assert values == job_numbers[key], key
    assert backfilled[0]["2026-10-23"]["runAt"] is None


def test_dry_run_materializes_nothing(pg_world):
    pg_world.add(age=8 * DAY)
    result = run_job(pg_world, dry_run=True)
    assert result.success
    assert result.get_asset_materialization_events() == []
    assert result.get_asset_check_evaluations() == []
    # The migrations create the savings table with the job's other tables; a dry run
    # writes no row to it.
    with pg_world.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM snapshot_ops.storage_savings_30d"))
        assert rows.scalar_one() == 0


def test_failed_run_still_reports_what_it_reclaimed_and_fails_the_backlog_check(pg_world, instance):
    reclaimed = pg_world.add(age=8 * DAY, size=700)
    refused = pg_world.add(age=8 * DAY, key="../outside.pdf", with_file=False)

    result = run_job(pg_world, instance)  # as of the wall clock: both rows are long expired

    assert not result.success  # the refused key is an error of the run
    assert pg_world.is_deleted(reclaimed) and not pg_world.is_deleted(refused)
    # The failing step reported its events to the instance rather than its own stream.
    event = instance.fetch_materializations(RECLAIMED_KEY, limit=1).records[0]
    metadata = event.asset_materialization.metadata
    assert (metadata["bytesReclaimed"].value, metadata["deletedCount"].value) == (700, 1)
    assert (metadata["errors"].value, metadata["failedRuns"].value) == (1, 1)
    assert event.partition_key == dt.datetime.now(TZ).date().isoformat()
    assert instance.fetch_materializations(SAVINGS_KEY, limit=1).records
    checks = latest_check_evaluations(instance)
    # The refused row is live, unlinked and long past retention: the job is behind on it.
    assert not checks[OVERDUE_CHECK].passed
    assert checks[OVERDUE_CHECK].metadata["overdue"].value == 1
    assert checks[TOTAL_CHECK].passed


def test_backlog_check_fails_when_the_job_falls_behind(pg_world):
    now = dt.datetime.now(dt.UTC)
    pg_world.add(age=9 * DAY, now=now, size=1234)  # retention 7 + 1 day grace: overdue
    pg_world.add(age=30 * DAY, now=now, linked=True)  # linked: kept on purpose, not overdue
    pg_world.add(age=7.5 * DAY, now=now)  # expired, within the grace day

    failing = run_checks(pg_world)[OVERDUE_CHECK]
    assert not failing.passed
    assert failing.metadata["overdue"].value == 1
    assert failing.metadata["overdueBytes"].value == 1234

    assert run_job(pg_world).success  # as of now: deletes both expired rows
    assert run_checks(pg_world)[OVERDUE_CHECK].passed


def test_total_check_fails_when_the_view_disagrees_with_the_run_log(pg_world):
    pg_world.add(age=8 * DAY, size=500)
    assert run_checks(pg_world)[TOTAL_CHECK].passed is False  # never written yet
    assert run_job(pg_world).success
    assert run_checks(pg_world)[TOTAL_CHECK].passed

    # Someone edits the table a dashboard reads.
    with pg_world.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE snapshot_ops.storage_savings_30d SET bytes_reclaimed = bytes_reclaimed + 1 "
            "WHERE bytes_reclaimed > 0"
        )
    tampered = run_checks(pg_world)[TOTAL_CHECK]
    assert not tampered.passed
    assert (tampered.metadata["viewBytes"].value, tampered.metadata["runLogBytes"].value) == (
        501,
        500,
    )

    # Materializing the view from the UI rewrites the table: the check passes again.
    assets, _ = build_storage_assets(LONDON)
    materialize(
        [CLEANUP_RUNS, *assets],
        selection=[SAVINGS_KEY],
        resources={"database": SnapshotDatabase(url=pg_world.db_url)},
    )
    assert run_checks(pg_world)[TOTAL_CHECK].passed

    # A run logged after the view was refreshed (here: written straight into the log) makes
    # the view stale, and the check says so.
    catalog = Catalog(make_engine(pg_world.db_url))
    now = dt.datetime.now(dt.UTC)
    run_id = str(uuid.uuid4())
    catalog.start_run(
        run_id=run_id,
        run_at=now,
        reference_time=now,
        cutoff=now - 7 * DAY,
        dry_run=False,
        candidate_count=1,
    )
    catalog.finish_run(run_id, status="succeeded", errors=[], deleted_count=1, bytes_reclaimed=10)
    catalog.engine.dispose()
    assert not run_checks(pg_world)[TOTAL_CHECK].passed


def savings_table_rows(world) -> tuple[int, int, dt.date, dt.date]:
    """(rows, the dashboard tile's sum, first day, as_of) of the table a BI tool reads."""
    with world.engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*), sum(bytes_reclaimed), min(day), max(as_of) "
                "FROM snapshot_ops.storage_savings_30d"
            )
        ).one()


def table_day(world, day: dt.date) -> tuple[int, int]:
    with world.engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT bytes_reclaimed, runs FROM snapshot_ops.storage_savings_30d "
                "WHERE day = :day"
            ),
            {"day": day},
        ).one()


def test_a_run_for_a_past_day_changes_that_day_only_and_never_moves_the_view_back(
    pg_world, instance
):
    world = pg_world
    today = dt.datetime.now(TZ).date()
    yesterday, past = today - DAY, today - 20 * DAY
    for _ in range(3):
        world.add(age=7.5 * DAY, size=1000, now=tick(yesterday))
    assert run_job(world, instance, reference_time=tick(yesterday).isoformat()).success
    assert savings_table_rows(world) == (30, 3000, today - 29 * DAY, today)

    # A row that shows up late with an old createdAt; docs/operations.md, "Backfill", says to
    # redo a day with a run whose reference_time is that day's 03:00.
    world.add(age=8 * DAY, size=500, now=tick(past))
    redo = run_job(world, instance, reference_time=tick(past).isoformat())

    assert redo.success
    assert savings_table_rows(world) == (30, 3500, today - 29 * DAY, today)
    assert table_day(world, past) == (500, 1)
    assert table_day(world, yesterday) == (3000, 1)
    [view] = [e for e in redo.get_asset_materialization_events() if e.asset_key == SAVINGS_KEY]
    metadata = view.materialization.metadata
    assert (metadata["asOf"].value, metadata["totalBytes30d"].value) == (today.isoformat(), 3500)
    assert all(e.passed for e in redo.get_asset_check_evaluations())

    # The same for a past-day run that fails (its events go to the instance directly).
    world.add(age=8 * DAY, size=200, now=tick(past - DAY))
    world.add(age=8 * DAY, key="../outside.pdf", with_file=False, now=tick(past - DAY))
    failed = run_job(world, instance, reference_time=tick(past - DAY).isoformat())
    assert not failed.success
    assert savings_table_rows(world) == (30, 3700, today - 29 * DAY, today)
    assert table_day(world, past - DAY) == (200, 1)
    latest = instance.fetch_materializations(SAVINGS_KEY, limit=1).records[0]
    assert latest.asset_materialization.metadata["asOf"].value == today.isoformat()
    assert latest.asset_materialization.metadata["totalBytes30d"].value == 3700
    checks = latest_check_evaluations(instance)
    assert checks[TOTAL_CHECK].passed
    # Judged as of the latest run (yesterday's), the refused row is overdue; as of its own
    # past day it would not be (created a day after that run's cutoff + grace).
    assert not checks[OVERDUE_CHECK].passed


def test_the_savings_asset_refuses_a_past_as_of_and_its_hint_is_accepted(pg_world):
    world = pg_world
    world.add(age=8 * DAY, size=400)
    assert run_job(world).success  # as of now
    today = dt.datetime.now(TZ).date()
    assets, _ = build_storage_assets(LONDON)

    def materialize_view(**config):
        return materialize(
            [CLEANUP_RUNS, *assets],
            selection=[SAVINGS_KEY],
            resources={"database": SnapshotDatabase(url=world.db_url)},
            run_config={"ops": {SAVINGS_KEY.to_python_identifier(): {"config": config}}},
            raise_on_error=False,
        )

    refused = materialize_view(as_of=(today - 20 * DAY).isoformat())
    assert not refused.success
    [failure] = [e for e in refused.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message
    assert f"give {today.isoformat()})" in message
    assert savings_table_rows(world) == (30, 400, today - 29 * DAY, today)
    assert materialize_view(as_of=today.isoformat()).success  # the suggested value
    assert materialize_view().success  # or none
    assert savings_table_rows(world) == (30, 400, today - 29 * DAY, today)


def test_total_check_fails_when_the_view_ends_before_the_latest_run(pg_world):
    world = pg_world
    world.add(age=8 * DAY, size=400)
    assert run_job(world).success
    assert run_checks(world)[TOTAL_CHECK].passed
    # A view written for a past day (as an older release did after a backfill run).
    catalog = Catalog(make_engine(world.db_url))
    past = dt.datetime.now(TZ).date() - 20 * DAY
    savings.write_savings(catalog, savings.compute_savings(catalog, past, LONDON))
    catalog.engine.dispose()
    stale = run_checks(world)[TOTAL_CHECK]
    assert not stale.passed
    assert stale.metadata["asOf"].value == past.isoformat()
    assert "materialize snapshot_storage_savings_30d" in stale.description


def test_a_run_at_half_past_midnight_summer_time_counts_on_the_london_day(pg_world, instance):
    # 00:30 BST on 15 July is 23:30 UTC on 14 July: the run's day is London's, the 15th.
    reference = dt.datetime(2026, 7, 15, 0, 30, tzinfo=TZ)
    assert reference.astimezone(dt.UTC).date() == dt.date(2026, 7, 14)
    pg_world.add(age=8 * DAY, size=900, now=reference)

    result = run_job(pg_world, instance, reference_time=reference.isoformat())

    assert result.success
    [event] = [e for e in result.get_asset_materialization_events() if e.partition]
    assert event.partition == "2026-07-15"
    metadata = event.materialization.metadata
    assert (metadata["bytesReclaimed"].value, metadata["runs"].value) == (900, 1)
    assert metadata["dayStartsAt"].value == "2026-07-14T23:00:00+00:00"
    [runs_logged] = [
        e for e in result.get_asset_materialization_events() if e.asset_key == CLEANUP_RUNS.key
    ]
    assert runs_logged.materialization.metadata["day"].value == "2026-07-15"
