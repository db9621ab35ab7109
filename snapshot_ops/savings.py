"""Storage reclaimed per day and the 30-day savings view, computed from the job's run log.

Free of Dagster: `assets.py` wraps these. The rules, stated once:

- A day is a calendar day in the schedule's timezone (so a day may last 23 or 25 hours), and
  a run belongs to the day of its `reference_time`: a scheduled run's tick, or the moment a
  manual run started. A re-run of a tick therefore counts on the tick's day.
- A dry run never counts (it deletes nothing). A failed run counts for what it did reclaim
  (its files are really gone) and adds to the failed runs and the error count.
- "Files reclaimed" is the run log's `deleted_count` (objects the runs removed; objects that
  were already gone are its `missing_count`, counted apart); "bytes" is its
  `bytes_reclaimed`.
- The 30-day view covers the 30 days ending with its `as_of` day, every day present (zero
  when no run counted), and compares them with the 30 days before. The table a dashboard
  reads always ends on the latest day (`latest_day`): today in the schedule's timezone, so
  a run or a backfill for a past day changes that day's figures and never the window.
"""

from __future__ import annotations

import base64
import datetime as dt
import zoneinfo
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING

import sqlalchemy as sa

from snapshot_ops.db import CRASHED, FAILED, Catalog
from snapshot_ops.db.instants import UtcInstant
from snapshot_ops.rules import DEFAULT_RETENTION_DAYS

if TYPE_CHECKING:
    # pandas (with numpy, a few tenths of a second) is imported by the functions that use
    # it, not when the code location loads: every process that loads the definitions
    # (each run, the webserver, the daemon, every step process) would pay for it otherwise.
    #
    # A cleanup run does pay for it, in refresh_storage_assets. Measured on a run with
    # nothing to delete (2-CPU machine, PostgreSQL): the import takes 0.23-0.27 s, all the
    # computing and writing of the day's figures, the 30-day view and its checks 0.02-0.04
    # s; the modules it loads add 0.2-0.3 s more to the process's exit. Kept, because:
    # - an empty run still changes the figures (its day's `runs`, the partition's `runAt`),
    #   so there is no "nothing new" case to skip; updating the stored rows in place
    #   would be a second implementation of the figures, beside this one;
    # - importing pandas on a thread from the run's first step hid the import (0.32-0.46 s
    #   before the first materialization became 0.04-0.06 s) but the steps before it took
    #   as much longer (the import holds the GIL), so the run was no faster.
    import pandas as pd

WINDOW_DAYS = 30
#: How long past its retention a snapshot may stay before the job counts as falling behind.
GRACE = dt.timedelta(days=1)
#: The view's table (in the job's own schema, or with its name prefix on SQLite).
SAVINGS_TABLE = "storage_savings_30d"
RUN_LOG_COLUMNS = (
    "run_id",
    "run_at",
    "reference_time",
    "dry_run",
    "status",
    "deleted_count",
    "missing_count",
    "bytes_reclaimed",
    "error_count",
)
DAILY_COLUMNS = (
    "day",
    "bytes_reclaimed",
    "files_reclaimed",
    "runs",
    "failed_runs",
    "error_count",
)


@dataclass(frozen=True)
class DayFigures:
    """What the cleanup reclaimed on one day, from the run log."""

    day: dt.date
    timezone: str
    bytes_reclaimed: int
    deleted_count: int
    missing_count: int
    error_count: int
    runs: int
    failed_runs: int
    dry_runs_ignored: int
    last_run_at: dt.datetime | None  # the latest counted run's start, UTC


@dataclass(frozen=True)
class SavingsView:
    """The 30 days ending with `as_of`, one row per day, and the totals against the 30 before."""

    as_of: dt.date
    timezone: str
    daily: pd.DataFrame  # DAILY_COLUMNS, one row per day, oldest first
    total_bytes: int
    total_files: int
    previous_bytes: int
    previous_files: int

    @property
    def first_day(self) -> dt.date:
        return self.as_of - dt.timedelta(days=WINDOW_DAYS - 1)

    @property
    def change_bytes(self) -> int:
        return self.total_bytes - self.previous_bytes

    @property
    def change_pct(self) -> float | None:
        """Change in bytes against the previous 30 days, in percent (None if those were 0)."""
        if self.previous_bytes == 0:
            return None
        return round(100.0 * self.change_bytes / self.previous_bytes, 1)


def local_day(instant: dt.datetime, timezone: str) -> dt.date:
    """The calendar day an aware instant falls on in `timezone`."""
    if instant.tzinfo is None:
        raise ValueError("instant must be timezone-aware")
    return instant.astimezone(zoneinfo.ZoneInfo(timezone)).date()


def day_bounds(first: dt.date, last: dt.date, timezone: str) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) in UTC of the local days `first`..`last`: local midnight to midnight."""
    zone = zoneinfo.ZoneInfo(timezone)
    start = dt.datetime.combine(first, dt.time(), zone)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def load_run_log(catalog: Catalog, first: dt.date, last: dt.date, timezone: str) -> pd.DataFrame:
    """Run-log rows whose reference time falls on the local days `first`..`last`, with `day`."""
    import pandas as pd  # deferred: see the TYPE_CHECKING import above

    start, end = day_bounds(first, last, timezone)
    r = catalog.runs.c
    query = sa.select(*(r[name] for name in RUN_LOG_COLUMNS)).where(
        r.reference_time >= start, r.reference_time < end
    )
    with catalog.engine.connect() as conn:
        frame = pd.read_sql(query, conn)
    # SQLite hands back naive UTC strings, PostgreSQL aware timestamps: make both aware UTC.
    for column in ("run_at", "reference_time"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    frame["dry_run"] = frame["dry_run"].astype(bool)
    frame["day"] = frame["reference_time"].dt.tz_convert(timezone).dt.date
    return frame


def daily_figures(log: pd.DataFrame, first: dt.date, last: dt.date) -> pd.DataFrame:
    """One row per day from `first` to `last` (zeros where nothing counted), oldest first."""
    import pandas as pd  # deferred: see the TYPE_CHECKING import above

    counted = log[~log["dry_run"]]
    # Numeric columns only: an empty log's text columns would refuse the zeros of reindex.
    numeric = pd.DataFrame(
        {
            "day": counted["day"],
            "bytes_reclaimed": counted["bytes_reclaimed"].astype("int64"),
            "files_reclaimed": counted["deleted_count"].astype("int64"),
            "runs": 1,
            "failed_runs": counted["status"].isin((FAILED, CRASHED)).astype("int64"),
            "error_count": counted["error_count"].astype("int64"),
        }
    )
    grouped = numeric.groupby("day").sum()
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    frame = grouped.reindex(days, fill_value=0).astype("int64")
    frame.index.name = "day"
    return frame.reset_index()[list(DAILY_COLUMNS)]


def day_figures(catalog: Catalog, day: dt.date, timezone: str) -> DayFigures:
    """The figures of one day (a partition of the reclaimed asset), rebuilt from the run log."""
    log = load_run_log(catalog, day, day, timezone)
    counted = log[~log["dry_run"]]
    last_run_at = counted["run_at"].max() if len(counted) else None
    return DayFigures(
        day=day,
        timezone=timezone,
        bytes_reclaimed=int(counted["bytes_reclaimed"].sum()),
        deleted_count=int(counted["deleted_count"].sum()),
        missing_count=int(counted["missing_count"].sum()),
        error_count=int(counted["error_count"].sum()),
        runs=len(counted),
        failed_runs=int(counted["status"].isin((FAILED, CRASHED)).sum()),
        dry_runs_ignored=int(log["dry_run"].sum()),
        last_run_at=None if last_run_at is None else last_run_at.to_pydatetime(),
    )


def latest_reference_time(catalog: Catalog) -> dt.datetime | None:
    """The latest reference time of a real (not dry) run in the log, UTC; None if none."""
    r = catalog.runs.c
    with catalog.engine.connect() as conn:
        latest = conn.execute(
            sa.select(sa.func.max(r.reference_time)).where(r.dry_run.is_(False))
        ).scalar()
    return None if latest is None else _aware(latest)


def latest_day(catalog: Catalog, timezone: str, now: dt.datetime) -> dt.date:
    """The day the 30-day view ends on: `now`'s day in `timezone` (today there).

    A run's reference time may be up to rules.FUTURE_TOLERANCE ahead of the clock, so its day
    can be tomorrow just before midnight; the view then ends on that day, so it always holds
    every logged run. Never earlier than today: a run for a past day does not move it back.
    """
    today = local_day(now, timezone)
    latest = latest_reference_time(catalog)
    return today if latest is None else max(today, local_day(latest, timezone))


def compute_savings(catalog: Catalog, as_of: dt.date, timezone: str) -> SavingsView:
    """The 30-day view ending with `as_of`, and the previous 30 days' totals."""
    first = as_of - dt.timedelta(days=WINDOW_DAYS - 1)
    previous_first = first - dt.timedelta(days=WINDOW_DAYS)
    log = load_run_log(catalog, previous_first, as_of, timezone)
    current = daily_figures(log, first, as_of)
    previous = daily_figures(log, previous_first, first - dt.timedelta(days=1))
    return SavingsView(
        as_of=as_of,
        timezone=timezone,
        daily=current,
        total_bytes=int(current["bytes_reclaimed"].sum()),
        total_files=int(current["files_reclaimed"].sum()),
        previous_bytes=int(previous["bytes_reclaimed"].sum()),
        previous_files=int(previous["files_reclaimed"].sum()),
    )


# -- the view's table, for BI tools -----------------------------------------------------------


def savings_table(catalog: Catalog) -> sa.Table:
    """The view's table beside the run log (the job's own names, `Catalog.own`: same
    schema, or same name prefix on SQLite)."""
    return sa.Table(
        catalog.own.name(SAVINGS_TABLE),
        sa.MetaData(schema=catalog.own.schema),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("bytes_reclaimed", sa.BigInteger, nullable=False),
        sa.Column("files_reclaimed", sa.BigInteger, nullable=False),
        sa.Column("runs", sa.Integer, nullable=False),
        sa.Column("failed_runs", sa.Integer, nullable=False),
        sa.Column("error_count", sa.BigInteger, nullable=False),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False),
        sa.Column("refreshed_at", UtcInstant(), nullable=False),
    )


def write_savings(catalog: Catalog, view: SavingsView) -> str:
    """Replace the table's rows with the view in one transaction; return the table's name.

    The rows are replaced, not the table: a dashboard's grants and saved queries on it stay,
    and a reader sees either the old 30 days or the new ones, never an empty table.
    """
    table = savings_table(catalog)
    catalog.ensure_own_tables()  # the table is one of the job's own (migrations/)
    rows = view.daily.assign(
        as_of=view.as_of, timezone=view.timezone, refreshed_at=dt.datetime.now(dt.UTC)
    )
    with catalog.engine.begin() as conn:
        catalog.lock_own_schema(conn)  # two runs finishing at once take turns
        conn.execute(sa.delete(table))
        rows.to_sql(table.name, conn, schema=table.schema, if_exists="append", index=False)
    return f"{table.schema}.{table.name}" if table.schema else table.name


def read_savings(catalog: Catalog) -> pd.DataFrame:
    """The table as stored (empty if it was never written), oldest day first."""
    import pandas as pd  # deferred: see the TYPE_CHECKING import above

    table = savings_table(catalog)
    with catalog.engine.connect() as conn:
        if not sa.inspect(conn).has_table(table.name, schema=table.schema):
            return pd.DataFrame(columns=[c.name for c in table.columns])
        frame = pd.read_sql(sa.select(table).order_by(table.c.day), conn)
    frame["day"] = pd.to_datetime(frame["day"]).dt.date
    frame["as_of"] = pd.to_datetime(frame["as_of"]).dt.date
    return frame


def run_log_totals(
    catalog: Catalog, first: dt.date, last: dt.date, timezone: str
) -> tuple[int, int]:
    """(bytes, files) the run log holds for the local days `first`..`last`, in plain SQL.

    Deliberately not the pandas path above, so a check comparing the two means something.
    """
    start, end = day_bounds(first, last, timezone)
    r = catalog.runs.c
    with catalog.engine.connect() as conn:
        row = conn.execute(
            sa.select(
                sa.func.coalesce(sa.func.sum(r.bytes_reclaimed), 0),
                sa.func.coalesce(sa.func.sum(r.deleted_count), 0),
            ).where(r.reference_time >= start, r.reference_time < end, r.dry_run.is_(False))
        ).one()
    return int(row[0]), int(row[1])


# -- how a person sees it ------------------------------------------------------------------


def human_bytes(value: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def svg_chart(view: SavingsView, width: int = 720, height: int = 240) -> str:
    """A bar chart of bytes reclaimed per day, as a standalone SVG document."""
    daily = view.daily
    left, right, top, bottom = 64, 12, 28, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(int(daily["bytes_reclaimed"].max()), 1)
    slot = plot_w / len(daily)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold" fill="#231f1b">'
        f"{escape(f'Storage reclaimed per day, {human_bytes(view.total_bytes)} in 30 days')}"
        "</text>",
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - fraction)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" '
            'stroke="#d5d2cc" stroke-width="1"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#5c5650">'
            f"{escape(human_bytes(peak * fraction))}</text>"
        )
    for i, row in enumerate(daily.itertuples(index=False)):
        bar_h = plot_h * row.bytes_reclaimed / peak
        x = left + i * slot + slot * 0.15
        colour = "#c0392b" if row.failed_runs else "#4f43dd"
        label = f"{row.day}: {human_bytes(row.bytes_reclaimed)}, {row.files_reclaimed} files"
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot_h - bar_h:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{bar_h:.1f}" fill="{colour}"><title>{escape(label)}</title></rect>'
        )
        if i % 5 == 0 or i == len(daily) - 1:
            parts.append(
                f'<text x="{x + slot * 0.35:.1f}" y="{height - bottom + 16}" '
                f'text-anchor="middle" fill="#5c5650">{row.day:%d %b}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def markdown_view(view: SavingsView) -> str:
    """The chart (an inline SVG image) and a one-paragraph summary; the per-day rows are the
    view's `days` table metadata (assets.savings_metadata), not repeated here."""
    svg = base64.b64encode(svg_chart(view).encode()).decode()
    change = view.change_pct
    trend = (
        "n/a (nothing reclaimed in the previous 30 days)" if change is None else (f"{change:+.1f}%")
    )
    return "\n".join(
        [
            f"![Storage reclaimed per day, last 30 days](data:image/svg+xml;base64,{svg})",
            "",
            f"**{human_bytes(view.total_bytes)}** and **{view.total_files:,} files** reclaimed "
            f"from {view.first_day} to {view.as_of} ({view.timezone}); previous 30 days: "
            f"{human_bytes(view.previous_bytes)}, change {trend}. Red bar: a day with a failed "
            "run. Per day: the `days` table.",
        ]
    )


def daily_records(view: SavingsView) -> list[dict[str, object]]:
    """The daily rows as plain dicts of str and int."""
    return [
        {"day": row["day"].isoformat(), **{name: int(row[name]) for name in DAILY_COLUMNS[1:]}}
        for row in view.daily.to_dict("records")
    ]


# -- is the job keeping up? -------------------------------------------------------------------


@dataclass(frozen=True)
class Backlog:
    """Parse-session snapshots still live and unlinked a day after they should have gone."""

    overdue: int
    overdue_bytes: int
    threshold: dt.datetime  # created before this instant = overdue
    retention: dt.timedelta
    #: Live, unlinked ones with a NULL "createdAt": no run can date them, so none deletes them.
    undated: int = 0


def latest_retention(catalog: Catalog) -> dt.timedelta:
    """The retention the latest real (not dry) run used; the default if there is none."""
    r = catalog.runs.c
    with catalog.engine.connect() as conn:
        row = conn.execute(
            sa.select(r.reference_time, r.cutoff)
            .where(r.dry_run.is_(False))
            .order_by(r.run_at.desc())
            .limit(1)
        ).first()
    if row is None:
        return dt.timedelta(days=DEFAULT_RETENTION_DAYS)
    return _aware(row.reference_time) - _aware(row.cutoff)


def backlog(catalog: Catalog, now: dt.datetime, retention: dt.timedelta) -> Backlog:
    """Count what a run at `now` should long have deleted (older than retention + 1 day), and
    the rows without a "createdAt" that no run will delete."""
    threshold = now - retention - GRACE
    summary = catalog.summarize(threshold)
    return Backlog(
        summary.candidates, summary.known_bytes, threshold, retention, catalog.count_undated()
    )


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite returns the stored UTC instants without their offset.
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
