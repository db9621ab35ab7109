"""The job's own tables evolve through the Alembic history in `snapshot_ops/migrations`.

- On an empty database the history's head makes exactly the tables the catalog queries
  (Alembic's autogenerate comparison finds no difference in columns, types, time zones,
  nullability or server defaults; every column's type and nullability is set and is the
  one made; same primary keys), and the job runs on them.
- A database set up by the release before migrations (its DDL is kept below, as it was
  emitted then) has the tables but no version table: it is adopted at the baseline and the
  next run finishes its journal and keeps its run log, counts intact but for revision
  0002's (a run's deleted_count no longer includes its already-missing objects).
- Runs (separate processes) migrating a fresh database at once take turns: all succeed,
  one version row. In process: while another transaction holds the schema lock, making
  the tables waits (and makes nothing) until the lock is free.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from snapshot_ops import migrations
from snapshot_ops.db import SCHEMA_LOCK_KEY, Catalog, make_engine
from snapshot_ops.savings import savings_table
from snapshot_ops_tests.support.scenarios import DAY, REPO, state
from snapshot_ops_tests.support.waiting import wait_until
from snapshot_ops_tests.support.world import NOW

#: The own tables as `Catalog.ensure_own_tables` created them before the migration history
#: (SQLAlchemy's DDL for its `create_all`, on PostgreSQL in schema snapshot_ops, on SQLite
#: prefixed). `{ns}`: "snapshot_ops." or "snapshot_ops_"; `{ts}`: the timestamp type.
RELEASED_RUNS_DDL = """
CREATE TABLE {ns}cleanup_runs (
    run_id TEXT NOT NULL,
    run_at {ts} NOT NULL,
    reference_time {ts} NOT NULL,
    cutoff {ts} NOT NULL,
    dry_run BOOLEAN NOT NULL,
    status TEXT NOT NULL,
    candidate_count BIGINT DEFAULT '0' NOT NULL,
    marked_count BIGINT DEFAULT '0' NOT NULL,
    deleted_count BIGINT DEFAULT '0' NOT NULL,
    missing_count BIGINT DEFAULT '0' NOT NULL,
    bytes_reclaimed BIGINT DEFAULT '0' NOT NULL,
    error_count BIGINT DEFAULT '0' NOT NULL,
    errors TEXT DEFAULT '[]' NOT NULL,
    finished_at {ts},
    PRIMARY KEY (run_id)
)"""
RELEASED_PENDING_DDL = """
CREATE TABLE {ns}pending_deletes (
    file_id TEXT NOT NULL,
    storage_key TEXT NOT NULL,
    size_bytes BIGINT,
    run_id TEXT NOT NULL,
    marked_at {ts} NOT NULL,
    attempts INTEGER DEFAULT '0' NOT NULL,
    last_error TEXT,
    claimed_by TEXT,
    lease_until {ts},
    next_attempt_at {ts},
    PRIMARY KEY (file_id)
)"""
#: The journal as releases before its leases and backoff made it (the release before the
#: migration history added these columns on its first run).
EARLY_PENDING_DDL = """
CREATE TABLE {ns}pending_deletes (
    file_id TEXT NOT NULL,
    storage_key TEXT NOT NULL,
    size_bytes BIGINT,
    run_id TEXT NOT NULL,
    marked_at {ts} NOT NULL,
    attempts INTEGER DEFAULT '0' NOT NULL,
    last_error TEXT,
    PRIMARY KEY (file_id)
)"""


def own_tables(catalog: Catalog) -> list[sa.Table]:
    return [catalog.runs, catalog.pending, savings_table(catalog)]


def differences(catalog: Catalog) -> list:
    """What Alembic's autogenerate (as `alembic check` runs it) finds between the catalog's
    models of its own tables and those tables in the database: [] when they agree."""
    models = sa.MetaData()
    for table in own_tables(catalog):
        table.to_metadata(models)
    names = {table.name for table in models.tables.values()}

    def include_name(name, kind, parent_names):
        if kind == "schema":
            return name == catalog.own.schema
        return kind != "table" or name in names

    options = {
        "compare_type": True,
        "compare_server_default": True,
        "include_schemas": True,
        "include_name": include_name,
    }
    with catalog.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts=options), models)


def open_catalog(url: str) -> Catalog:
    return Catalog(make_engine(url))


def version_rows(catalog: Catalog) -> list[str]:
    name = f"{catalog.own.prefix}{migrations.VERSION_TABLE}"
    table = sa.table(name, sa.column("version_num"), schema=catalog.own.schema)
    with catalog.engine.connect() as conn:
        return list(conn.execute(sa.select(table.c.version_num)).scalars())


def test_head_makes_the_tables_the_catalog_queries(world):
    catalog = open_catalog(world.db_url)
    catalog.ensure_own_tables()
    catalog.ensure_own_tables()  # at head: changes nothing

    assert version_rows(catalog) == [migrations.head()]
    assert differences(catalog) == []
    inspector = sa.inspect(catalog.engine)
    dialect = catalog.engine.dialect
    for model in own_tables(catalog):
        # Alembic's comparison passes over a model column of no type (NullType, which does
        # not compile) and one of unspecified nullability (None): each is checked here.
        made = [
            (c["name"], c["type"].compile(dialect=dialect), c["nullable"])
            for c in inspector.get_columns(model.name, schema=model.schema)
        ]
        assert made == [
            (c.name, c.type.compile(dialect=dialect), c.nullable) for c in model.columns
        ], model.name
        primary = inspector.get_pk_constraint(model.name, schema=model.schema)
        assert primary["constrained_columns"] == [c.name for c in model.primary_key]
    catalog.engine.dispose()

    expired = world.add(age=10 * DAY)
    result = world.run()
    assert result.success
    assert state(world)[expired] == (True, False)
    assert [r.deleted_count for r in world.run_log()] == [1]


def set_up_as_released(world, journal_ddl: str) -> None:
    """The own tables as the release before migrations left them after one run."""
    sqlite = world.db_url.startswith("sqlite")
    names = {"ns": "snapshot_ops_" if sqlite else "snapshot_ops.", "ts": "DATETIME"}
    if not sqlite:
        names["ts"] = "TIMESTAMP WITH TIME ZONE"
    with world.engine.begin() as conn:
        if not sqlite:
            conn.exec_driver_sql("CREATE SCHEMA snapshot_ops")
        conn.exec_driver_sql(RELEASED_RUNS_DDL.format(**names))
        conn.exec_driver_sql(journal_ddl.format(**names))


@pytest.mark.parametrize(
    "journal_ddl", [RELEASED_PENDING_DDL, EARLY_PENDING_DDL], ids=["released", "early-journal"]
)
def test_a_database_from_before_migrations_is_adopted_and_keeps_its_data(world, journal_ddl):
    set_up_as_released(world, journal_ddl)
    catalog = open_catalog(world.db_url)
    # An earlier run marked one row and journaled it, then died before deleting its object.
    marked = world.add(age=10 * DAY)
    expired = world.add(age=10 * DAY)
    kept = world.add(age=10 * DAY, linked=True)
    earlier = NOW - DAY
    key = world.row(marked).storageKey
    with world.engine.begin() as conn:
        conn.execute(
            sa.update(world.files).where(world.files.c.fileId == marked).values(deletedAt=earlier)
        )
        conn.execute(
            sa.insert(catalog.runs).values(
                run_id="before-upgrade",
                run_at=earlier,
                reference_time=earlier,
                cutoff=earlier - 7 * DAY,
                dry_run=False,
                status="succeeded",
                candidate_count=4,
                marked_count=4,
                # Back then an already-missing object was counted in both.
                deleted_count=4,
                missing_count=1,
                bytes_reclaimed=300,
                finished_at=earlier,
            )
        )
        entry = {
            "file_id": marked,
            "storage_key": key,
            "size_bytes": 100,
            "run_id": "before-upgrade",
            "marked_at": earlier,
            "attempts": 1,
            "last_error": "store unavailable",
        }  # only the columns every release had
        journal = sa.table(
            catalog.pending.name,
            *(sa.column(name, catalog.pending.c[name].type) for name in entry),
            schema=catalog.pending.schema,
        )
        conn.execute(sa.insert(journal).values(entry))

    catalog.ensure_own_tables()
    assert version_rows(catalog) == [migrations.head()]
    [entry] = world.pending()
    assert (entry.file_id, entry.run_id, entry.attempts) == (marked, "before-upgrade", 1)
    assert entry.claimed_by is None and entry.next_attempt_at is None
    catalog.engine.dispose()

    result = world.run()

    assert result.success
    now = state(world)
    assert now[marked] == (True, False)  # the journal entry was finished
    assert now[expired] == (True, False)
    assert now[kept] == (False, True)
    assert world.pending() == []
    before, after = world.run_log()
    # Revision 0002: deleted_count counts what the run removed, once, whatever runs later.
    assert (
        before.run_id,
        before.status,
        before.deleted_count,
        before.missing_count,
        before.bytes_reclaimed,
    ) == ("before-upgrade", "succeeded", 3, 1, 300)
    assert (after.status, after.deleted_count, after.marked_count) == ("succeeded", 2, 1)


#: One run's start, as its own process: wait for the gate file to go, then migrate.
MIGRATE = """
import pathlib, sys, time
from snapshot_ops.db import SCHEMA_LOCK_KEY, Catalog, make_engine
catalog = Catalog(make_engine(sys.argv[1]))
gate = pathlib.Path(sys.argv[2])
gate.with_suffix(f".ready{sys.argv[3]}").touch()
while gate.exists():
    time.sleep(0.005)
catalog.ensure_own_tables()
"""


def migrate_at_once(url: str, gate: Path, runs: int = 2) -> tuple[list[str], list[str]]:
    """Start `runs` processes that each call `ensure_own_tables`, release them together;
    return the errors of those that failed and the version table's rows afterwards."""
    gate.touch()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, url, str(gate), str(n)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(runs)
    ]

    def all_ready() -> bool:
        assert all(p.poll() is None for p in processes), [p.communicate() for p in processes]
        return len(list(gate.parent.glob(f"{gate.stem}.ready*"))) >= runs

    wait_until(all_ready, timeout=300, interval=0.01, what=f"{runs} migrating processes to start")
    gate.unlink()  # all go at once
    errors = [p.communicate(timeout=120)[1] for p in processes]
    failed = [  # the exception's line of each traceback
        ([line for line in e.splitlines() if "Error" in line] or [e])[-1]
        for p, e in zip(processes, errors, strict=True)
        if p.returncode
    ]
    catalog = open_catalog(url)
    try:
        return failed, version_rows(catalog)
    finally:
        catalog.engine.dispose()


def test_runs_migrating_a_fresh_database_at_once_take_turns(world, tmp_path):
    assert migrate_at_once(world.db_url, tmp_path / "gate") == ([], [migrations.head()])


def test_runs_migrating_in_a_schema_an_administrator_made_take_turns(pg_world, tmp_path):
    with pg_world.engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA snapshot_ops")
    assert migrate_at_once(pg_world.db_url, tmp_path / "gate") == ([], [migrations.head()])


def test_making_the_tables_waits_while_another_run_holds_the_schema_lock(pg_world):
    # In process, so mutation testing sees it (the tests above race real processes): while
    # another transaction holds the schema lock, `ensure_own_tables` must wait for it, and
    # the database's lock timeout (1 s here) ends the wait before anything is made. Once
    # the lock is free, it makes the tables.
    with pg_world.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        database = pg_world.engine.url.database
        conn.exec_driver_sql(f"ALTER DATABASE \"{database}\" SET lock_timeout = '1s'")
    catalog = Catalog(make_engine(pg_world.db_url))
    try:
        with pg_world.engine.begin() as holder:
            holder.execute(sa.select(sa.func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))
            with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                catalog.ensure_own_tables()
            assert sa.inspect(catalog.engine).get_table_names(schema="snapshot_ops") == []
        catalog.ensure_own_tables()
        assert "pending_deletes" in sa.inspect(catalog.engine).get_table_names(
            schema="snapshot_ops"
        )
    finally:
        catalog.engine.dispose()
