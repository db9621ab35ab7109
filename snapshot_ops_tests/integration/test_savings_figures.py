"""The storage figures against a run log with known values, on PostgreSQL and SQLite.

Pins down how savings.py counts: days are calendar days in the schedule's timezone (a run at
00:30 local on the day the clocks go back belongs to that day, not to the UTC day before),
days without a run are zero rather than missing, a dry run never counts, a failed run counts
for what it reclaimed, and the 30-day view and its BI table hold exactly those numbers.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo

import pytest
import sqlalchemy as sa

from snapshot_ops import savings
from snapshot_ops.db import Catalog, make_engine
from snapshot_ops.defs.assets import DAILY_SCHEMA, savings_metadata

LONDON = "Europe/London"
TZ = zoneinfo.ZoneInfo(LONDON)
DAY = dt.timedelta(days=1)
AS_OF = dt.date(2026, 10, 26)  # the clocks went back at 02:00 BST on 25 October 2026


def local(year: int, month: int, day: int, hour: int, minute: int = 0, fold: int = 0):
    return dt.datetime(year, month, day, hour, minute, tzinfo=TZ, fold=fold)


def log_run(
    catalog: Catalog,
    reference_time: dt.datetime,
    *,
    deleted: int,
    reclaimed: int,
    status: str = "succeeded",
    errors: tuple[str, ...] = (),
    dry_run: bool = False,
    missing: int = 0,
) -> None:
    """Write one finished run into the run log the way the job does (start, then finish)."""
    run_id = str(uuid.uuid4())
    utc = reference_time.astimezone(dt.UTC)
    catalog.start_run(
        run_id=run_id,
        run_at=utc + dt.timedelta(seconds=5),
        reference_time=utc,
        cutoff=utc - 7 * DAY,
        dry_run=dry_run,
        candidate_count=deleted,
    )
    catalog.finish_run(
        run_id,
        status=status,
        errors=list(errors),
        marked_count=deleted,
        deleted_count=deleted,
        missing_count=missing,
        bytes_reclaimed=reclaimed,
    )


@pytest.fixture
def catalog(world):
    """A catalog on the test database (PostgreSQL and SQLite) holding the known run log."""
    cat = Catalog(make_engine(world.db_url))
    cat.ensure_own_tables()
    # In the 30 days ending 26 October:
    log_run(cat, local(2026, 10, 20, 3), deleted=10, reclaimed=1000)
    # 21 October: no run at all.
    log_run(
        cat,
        local(2026, 10, 22, 3),
        deleted=3,
        reclaimed=300,
        status="failed",
        errors=("failed a: denied", "failed b: denied"),
    )
    # A dry run's row holds what it would have done; it must not count as reclaimed.
    log_run(cat, local(2026, 10, 22, 10), deleted=99, reclaimed=99_999, dry_run=True)
    # 25 October lasts 25 hours in London: 00:30 BST is still the 24th in UTC ...
    log_run(cat, local(2026, 10, 25, 0, 30), deleted=1, reclaimed=50, missing=1)
    # ... and 23:30 GMT is the last half hour of the 25th.
    log_run(cat, local(2026, 10, 25, 23, 30), deleted=2, reclaimed=70)
    log_run(cat, local(2026, 10, 26, 0, 30), deleted=1, reclaimed=5)
    # After the window: must not leak into it.
    log_run(cat, local(2026, 10, 27, 0, 10), deleted=7, reclaimed=7000)
    # In the previous 30 days (28 Aug - 26 Sep), and one day before that window.
    log_run(cat, local(2026, 9, 10, 3), deleted=4, reclaimed=400)
    log_run(cat, local(2026, 8, 27, 23, 30), deleted=8, reclaimed=800)
    yield cat
    cat.engine.dispose()


@pytest.mark.unit
def test_local_days_last_23_24_or_25_hours():
    def hours(day: dt.date, zone: str) -> float:
        start, end = savings.day_bounds(day, day, zone)
        return (end - start) / dt.timedelta(hours=1)

    assert hours(dt.date(2026, 10, 25), LONDON) == 25
    assert hours(dt.date(2026, 3, 29), LONDON) == 23
    assert hours(dt.date(2026, 10, 25), "UTC") == 24
    assert savings.local_day(dt.datetime(2026, 10, 24, 23, 30, tzinfo=dt.UTC), LONDON) == (
        dt.date(2026, 10, 25)
    )


def test_each_day_counts_real_runs_in_the_schedule_timezone(catalog):
    by_day = {
        d: savings.day_figures(catalog, d, LONDON)
        for d in (
            dt.date(2026, 10, 21),
            dt.date(2026, 10, 22),
            dt.date(2026, 10, 24),
            dt.date(2026, 10, 25),
        )
    }
    assert by_day[dt.date(2026, 10, 21)].runs == 0
    assert by_day[dt.date(2026, 10, 21)].bytes_reclaimed == 0
    assert by_day[dt.date(2026, 10, 21)].last_run_at is None

    failed_day = by_day[dt.date(2026, 10, 22)]
    assert (failed_day.bytes_reclaimed, failed_day.deleted_count) == (300, 3)
    assert (failed_day.runs, failed_day.failed_runs, failed_day.error_count) == (1, 1, 2)
    assert failed_day.dry_runs_ignored == 1

    # Bucketing by UTC date would put the 00:30 BST run on the 24th.
    assert by_day[dt.date(2026, 10, 24)].runs == 0
    dst_day = by_day[dt.date(2026, 10, 25)]
    assert (dst_day.runs, dst_day.bytes_reclaimed, dst_day.deleted_count) == (2, 120, 3)
    assert dst_day.missing_count == 1
    assert dst_day.last_run_at == local(2026, 10, 25, 23, 30).astimezone(dt.UTC) + dt.timedelta(
        seconds=5
    )


def test_thirty_day_view_has_every_day_and_compares_with_the_thirty_before(catalog):
    view = savings.compute_savings(catalog, AS_OF, LONDON)

    days = view.daily["day"].tolist()
    assert days == [AS_OF - dt.timedelta(days=29 - i) for i in range(30)]
    bytes_by_day = dict(zip(view.daily["day"], view.daily["bytes_reclaimed"], strict=True))
    expected = {
        dt.date(2026, 10, 20): 1000,
        dt.date(2026, 10, 22): 300,
        dt.date(2026, 10, 25): 120,
        dt.date(2026, 10, 26): 5,
    }
    assert bytes_by_day == {d: expected.get(d, 0) for d in days}
    assert (view.total_bytes, view.total_files) == (1425, 17)
    assert (view.previous_bytes, view.previous_files) == (400, 4)
    assert view.change_bytes == 1025
    assert view.change_pct == pytest.approx(256.2)
    assert int(view.daily["failed_runs"].sum()) == 1
    assert int(view.daily["runs"].sum()) == 5


def test_a_log_with_no_real_run_gives_thirty_zero_days(world):
    cat = Catalog(make_engine(world.db_url))
    cat.ensure_own_tables()
    empty = savings.compute_savings(cat, AS_OF, LONDON)
    log_run(cat, local(2026, 10, 25, 3), deleted=5, reclaimed=500, dry_run=True)
    only_dry = savings.compute_savings(cat, AS_OF, LONDON)
    cat.engine.dispose()
    for view in (empty, only_dry):
        assert len(view.daily) == 30
        assert int(view.daily[["bytes_reclaimed", "files_reclaimed", "runs"]].sum().sum()) == 0
        assert (view.total_bytes, view.previous_bytes, view.change_pct) == (0, 0, None)
    assert "0 B" in savings.markdown_view(only_dry)


def test_view_is_written_to_a_table_a_dashboard_can_read(catalog, world):
    name = savings.write_savings(catalog, savings.compute_savings(catalog, AS_OF, LONDON))
    # Rewritten, not appended: still 30 rows after a second refresh with another end day.
    name = savings.write_savings(catalog, savings.compute_savings(catalog, AS_OF + DAY, LONDON))
    expected = (
        "storage_savings_30d"
        if world.db_url.startswith("postgres")
        else ("snapshot_ops_storage_savings_30d")
    )
    assert name.split(".")[-1] == expected
    if world.db_url.startswith("postgres"):
        assert name == "snapshot_ops.storage_savings_30d"  # the job's own schema
    with world.engine.connect() as conn:
        rows, total, as_of = conn.execute(
            sa.text(f"SELECT count(*), sum(bytes_reclaimed), max(as_of) FROM {name}")
        ).one()
    assert (rows, total) == (30, 1425 + 7000)
    assert str(as_of) == str(AS_OF + DAY)

    stored = savings.read_savings(catalog)
    assert stored["day"].iloc[-1] == AS_OF + DAY
    assert int(stored["files_reclaimed"].sum()) == 17 + 7


def test_chart_is_an_inline_image_and_the_days_a_metadata_table(catalog):
    view = savings.compute_savings(catalog, AS_OF, LONDON)
    metadata = savings_metadata(view, "storage_savings_30d")
    md = metadata["chart"].value
    assert md.startswith("![Storage reclaimed per day, last 30 days](data:image/svg+xml;base64,")
    assert "|---" not in md  # the rows are the `days` table, not markdown
    days = metadata["days"]
    assert days.schema == DAILY_SCHEMA
    rows = {r.data["day"]: r.data for r in days.records}
    assert len(rows) == 30 and sorted(rows)[0] == str(view.first_day)
    assert set(rows["2026-10-20"]) == {c.name for c in DAILY_SCHEMA.columns}
    # A day without a run is there, as zeros.
    assert rows["2026-10-21"] == {
        "day": "2026-10-21",
        "bytes_reclaimed": 0,
        "files_reclaimed": 0,
        "runs": 0,
        "failed_runs": 0,
        "error_count": 0,
        "reclaimed": "0 B",
    }
    ran = rows["2026-10-20"]
    assert (ran["bytes_reclaimed"], ran["files_reclaimed"], ran["runs"]) == (1000, 10, 1)
    assert ran["reclaimed"] == "1,000 B"
    svg = savings.svg_chart(view)
    assert svg.count("<rect ") == 31  # background + one bar per day
    assert "2026-10-22: 300 B, 3 files" in svg
