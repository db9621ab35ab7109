"""Random datasets (hypothesis): what the job deletes equals an independent oracle written
straight from the design document's SQL, and nothing within the retention is ever deleted.
The same holds for every representation of "createdAt" applications use (native
timestamps, naive UTC under a non-UTC database zone, naive New York wall time on both
databases, ISO 8601 text layouts, epoch seconds and milliseconds; see
time_representations.py), where the oracle reads each stored value the application's way
and "deletedAt" must come back in the same representation. On PostgreSQL a timestamp
column is also judged by the design's SQL itself, `"createdAt" < reference - retention`,
in a session whose TimeZone is the zone the application writes naive values in, so a
naive value is read exactly as PostgreSQL reads it there.

The cutoffs (reference times up to 3 days before NOW, 2026-11-20 03:00 UTC, minus 12 hours
to 7 days) stay clear of New York's daylight-saving change (2026-11-01): there the job
keeps a naive value unless every instant it can denote is older (so a delete may come up
to an hour late, never early), which test_wall_times.py pins down at the edges.

The oracle is the retention rule's plain statement, run as SQL before the job:

    SnapshotFiles WHERE snapshotType = 'ParseSessionSnapshot'
      AND createdAt < reference - retention
      AND NOT EXISTS (SELECT 1 FROM OrderAttachments oa WHERE oa.fileId = SnapshotFiles.fileId)

(plus `deletedAt IS NULL`: a row already deleted is not deleted again). The datasets mix
types differing only in case or by a space, ages on both sides of the cutoff to the second,
future timestamps, duplicate attachment rows, rows already deleted, missing objects, null,
zero and negative sizes, storage keys shared between rows, and random retentions and
reference times. After the run: exactly the oracle's rows are marked; an object is gone
exactly when an oracle row named it and no live row still does; the run log's count agrees.
"""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapshot_ops.rules import PERMANENT_TYPE, TEMPORARY_TYPE
from snapshot_ops_tests.support.jobs import failure_message
from snapshot_ops_tests.support.time_representations import (
    REPRESENTATIONS,
    RepWorld,
    set_database_timezone,
)
from snapshot_ops_tests.support.world import NOW

DAY = 86_400
ORACLE = sa.text(
    """
    SELECT "fileId" FROM "SnapshotFiles"
    WHERE "snapshotType" = 'ParseSessionSnapshot'
      AND "createdAt" < CAST(:reference AS timestamptz) - make_interval(secs => :retention)
      AND "deletedAt" IS NULL
      AND NOT EXISTS (
        SELECT 1 FROM "OrderAttachments" oa WHERE oa."fileId" = "SnapshotFiles"."fileId"
      )
    """
)

rows_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                [TEMPORARY_TYPE] * 4
                + [PERMANENT_TYPE, "parseSessionSnapshot", "ParseSessionSnapshot "]
            ),
            # Seconds of age: near the usual 7-day cutoff to the second, or anywhere from a
            # day in the future to 40 days old.
            "age": st.one_of(
                st.sampled_from([7 * DAY - 1, 7 * DAY, 7 * DAY + 1, DAY - 1, DAY, DAY + 1]),
                st.integers(-DAY, 40 * DAY),
            ),
            "links": st.sampled_from([0, 0, 0, 1, 2]),  # 2: a duplicate attachment row
            "deleted": st.sampled_from([False, False, False, True]),
            "size": st.sampled_from([100, 100, None, 0, -5]),
            "has_file": st.sampled_from([True, True, True, False]),
            "key": st.integers(0, 11),  # a small pool, so some rows share an object
        }
    ),
    min_size=1,
    max_size=14,
)


@pytest.fixture
def app(pg_world):
    """One database for all examples of a test; each example starts from empty tables."""

    def reset() -> None:
        ran_before = sa.inspect(pg_world.engine).has_schema("snapshot_ops")
        with pg_world.engine.begin() as conn:
            conn.execute(sa.delete(pg_world.attachments))
            conn.execute(sa.delete(pg_world.files))
            if ran_before:
                conn.exec_driver_sql("DELETE FROM snapshot_ops.cleanup_runs")
                conn.exec_driver_sql("DELETE FROM snapshot_ops.pending_deletes")
        shutil.rmtree(pg_world.root)
        pg_world.root.mkdir()

    pg_world.reset = reset
    return pg_world


def load(world, rows: list[dict]) -> dict[str, str]:
    """Write the rows (and objects) as the application would; return fileId -> key."""
    keys: dict[str, str] = {}
    with world.engine.begin() as conn:
        for n, row in enumerate(rows):
            file_id = f"f{n:02d}"
            key = f"k/{row['key']:02d} é.pdf"  # unicode and a space in every key
            keys[file_id] = key
            if row["has_file"]:
                path = world.root / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"x" * 10)
            conn.execute(
                sa.insert(world.files).values(
                    fileId=file_id,
                    snapshotType=row["type"],
                    parseSessionId="ps",
                    storageKey=key,
                    sizeBytes=row["size"],
                    createdAt=NOW - dt.timedelta(seconds=row["age"]),
                    deletedAt=NOW - dt.timedelta(days=1) if row["deleted"] else None,
                )
            )
            for link in range(row["links"]):
                conn.execute(
                    sa.insert(world.attachments).values(orderId=f"o{link}", fileId=file_id)
                )
    return keys


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=rows_strategy,
    retention_days=st.sampled_from([7, 7, 1, 0.5, 30]),
    back_seconds=st.sampled_from([0, 0, 1, 3 * DAY]),
)
def test_the_job_deletes_exactly_what_the_seed_sql_selects(app, rows, retention_days, back_seconds):
    app.reset()
    keys = load(app, rows)
    reference = NOW - dt.timedelta(seconds=back_seconds)
    retention = dt.timedelta(days=retention_days)
    with app.engine.connect() as conn:
        oracle = set(
            conn.execute(
                ORACLE, {"reference": reference.isoformat(), "retention": retention.total_seconds()}
            ).scalars()
        )
        before = {r.fileId: r for r in conn.execute(sa.select(app.files))}
    present_before = {k for k in set(keys.values()) if (app.root / k).is_file()}

    result = app.run(
        reference_time=reference.isoformat(), retention_days=retention_days, batch_size=3
    )

    with app.engine.connect() as conn:
        after = {r.fileId: r for r in conn.execute(sa.select(app.files))}
    newly_marked = {
        i for i in after if before[i].deletedAt is None and after[i].deletedAt is not None
    }
    if not result.success:
        # Only the storage valve may stop a run here: with many files missing, the store can
        # fail to show the objects the database names (none older than the retention, too
        # few of the younger ones), before marking or before settling a batch. What it
        # marked is still within the rule, and journaled while its file stays (unless a
        # live row shares that file).
        message = failure_message(result)
        assert (
            "the objects the database says it should" in message
            or "came back already missing" in message
        )
        assert newly_marked <= oracle
        pending = {p.file_id for p in app.pending()}
        shared = {after[i].storageKey for i in after if after[i].deletedAt is None}
        kept = {i for i in newly_marked if (app.root / keys[i]).is_file()}
        assert all(i in pending for i in kept if keys[i] not in shared)
        return
    assert newly_marked == oracle
    assert all(after[i].deletedAt == before[i].deletedAt for i in after if i not in oracle)
    # No row created within the retention is ever deleted, whatever the input.
    assert all(after[i].createdAt < reference - retention for i in newly_marked)
    live_keys = {after[i].storageKey for i in after if after[i].deletedAt is None}
    doomed = {keys[i] for i in oracle} - live_keys
    for key in set(keys.values()):
        expect_present = key in present_before and key not in doomed
        assert (app.root / key).is_file() == expect_present, key
    # Every marked row is counted once: as deleted, as already missing, or as kept
    # because a live row shares its object.
    [log] = app.run_log()
    [output] = [
        e
        for e in result.events_for_node("mark_and_delete_expired")
        if e.event_type_value == "STEP_OUTPUT"
    ]
    kept = output.step_output_data.metadata["keptSharedKey"].value
    assert log.deleted_count + log.missing_count + kept == len(oracle)
    assert kept >= sum(1 for i in oracle if keys[i] in live_keys)
    assert app.pending() == []


# -- every representation of "createdAt" ------------------------------------------------------

micro_rows_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from([TEMPORARY_TYPE] * 4 + [PERMANENT_TYPE]),
            # Seconds of age near the cutoff or anywhere, plus a sub-second part that
            # representations keep (micro), truncate (milli) or drop (whole seconds).
            "age": st.one_of(
                st.sampled_from([7 * DAY - 1, 7 * DAY, 7 * DAY + 1, DAY - 1, DAY, DAY + 1]),
                st.integers(-DAY, 40 * DAY),
            ),
            "micros": st.sampled_from([0, 0, 1, 999, 1000, 499_999, 500_000, 999_999]),
            "linked": st.sampled_from([False, False, False, True]),
        }
    ),
    min_size=1,
    max_size=12,
)


@pytest.fixture(params=REPRESENTATIONS, ids=str)
def rep_world(request, storage_root):
    """A RepWorld in one representation; on PostgreSQL the database's TimeZone is Tokyo's
    (so a naive UTC value read or written in session time would be 9 hours off), or the
    application's own for naive local time."""
    rep = request.param
    url = request.getfixturevalue(f"{rep.dialect}_url")
    if rep.dialect == "postgres":
        set_database_timezone(url, rep.database_zone)
    world = RepWorld(url, storage_root, rep)

    def reset() -> None:
        prefix = "snapshot_ops_" if rep.dialect == "sqlite" else "snapshot_ops."
        has_runs = any(
            sa.inspect(world.engine).has_table(name, schema=schema)
            for name, schema in (
                ("snapshot_ops_cleanup_runs", None),
                ("cleanup_runs", "snapshot_ops"),
            )
        )
        with world.engine.begin() as conn:
            conn.exec_driver_sql('DELETE FROM "OrderAttachments"')
            conn.exec_driver_sql('DELETE FROM "SnapshotFiles"')
            if has_runs:
                conn.exec_driver_sql(f"DELETE FROM {prefix}cleanup_runs")
                conn.exec_driver_sql(f"DELETE FROM {prefix}pending_deletes")
        shutil.rmtree(world.root)
        world.root.mkdir()

    world.reset = reset
    yield world
    world.engine.dispose()


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=micro_rows_strategy,
    retention_days=st.sampled_from([7, 7, 1, 0.5]),
    back_micros=st.sampled_from([0, 0, 1, 500_000, 3 * DAY * 1_000_000]),
)
def test_each_representation_deletes_exactly_the_rows_older_than_the_cutoff(
    rep_world, rows, retention_days, back_micros
):
    """The oracle reads each stored value with the representation's own reader (the way the
    application reads it), not with the job's: a row is expired when the instant it stores
    is strictly older than the cutoff."""
    world, rep = rep_world, rep_world.rep
    world.reset()
    reference = NOW - dt.timedelta(microseconds=back_micros)
    cutoff = reference - dt.timedelta(days=retention_days)
    ids = {}
    for n, row in enumerate(rows):
        age = dt.timedelta(seconds=row["age"], microseconds=row["micros"])
        ids[n] = world.add(
            age=age,
            snapshot_type=row["type"],
            linked=row["linked"],
            key=f"k/{n:02d}.pdf",
        )
    before = world.stored()
    oracle = {
        ids[n]
        for n, row in enumerate(rows)
        if row["type"] == TEMPORARY_TYPE
        and not row["linked"]
        and rep.read(before[ids[n]].createdAt) < cutoff
    }
    if rep.dialect == "postgres" and "timestamp" in rep.column_type:
        assert design_sql(world, reference, cutoff) == oracle
    started = dt.datetime.now(dt.UTC)

    result = world.run(
        reference_time=reference.isoformat(),
        retention_days=retention_days,
        batch_size=2,
        naive_time_zone=rep.naive_time_zone,
    )

    assert result.success  # every object exists, so the storage check passes
    finished = dt.datetime.now(dt.UTC)
    after = world.stored()
    marked = {i for i in after if after[i].deletedAt is not None}
    assert marked == oracle
    for file_id in after:
        assert (world.root / after[file_id].storageKey).is_file() == (file_id not in oracle)
        assert after[file_id].createdAt == before[file_id].createdAt
    # "deletedAt" is written in the same representation: the run's instant, read back the
    # application's way (to its precision: whole seconds at worst).
    for file_id in marked:
        written = rep.read(after[file_id].deletedAt)
        assert started - dt.timedelta(seconds=1) <= written <= finished, (written, started)
    [log] = world.run_log()
    assert log.deleted_count == len(oracle)


DESIGN_SQL = sa.text(
    """
    SELECT "fileId" FROM "SnapshotFiles"
    WHERE "snapshotType" = 'ParseSessionSnapshot'
      AND "createdAt" < CAST(:reference AS timestamptz) - :retention * INTERVAL '1 second'
      AND "deletedAt" IS NULL
      AND NOT EXISTS (
        SELECT 1 FROM "OrderAttachments" oa WHERE oa."fileId" = "SnapshotFiles"."fileId"
      )
    """
)


def design_sql(world, reference: dt.datetime, cutoff: dt.datetime) -> set[str]:
    """The design's rule as SQL, with the run's reference time for NOW(), in a session whose
    TimeZone is the zone the application writes naive values in (there PostgreSQL reads a
    naive "createdAt" as that zone's wall time)."""
    zone = world.rep.wall_zone or world.rep.database_zone
    with world.engine.begin() as conn:
        conn.execute(sa.select(sa.func.set_config("TimeZone", zone, True)))
        return set(
            conn.execute(
                DESIGN_SQL,
                {
                    "reference": reference.isoformat(),
                    "retention": (reference - cutoff).total_seconds(),
                },
            ).scalars()
        )
