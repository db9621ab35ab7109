"""The job sees every row of the application's tables, or the run stops before marking.

PostgreSQL can put a filter between the job's role and the rows: row-level security (a
tenant policy, RLS enabled with no policy at all, which denies every row, or FORCE ROW
LEVEL SECURITY on a table the job's role owns). A job that sees no "OrderAttachments" row
thinks every snapshot is unlinked and deletes an order's file; one that sees no
"SnapshotFiles" row reports a clean, empty run forever. Every transaction the job opens
runs with `row_security = off`, under which PostgreSQL fails a query that a policy would
filter instead of filtering it, and the first step probes both tables before anything is
counted.

Each case has two expired parse-session snapshots: `linked` (an order links it) and `plain`.
The job runs as the least-privileged role of docs/safety.md; a run that cannot see every
row must fail naming the table and BYPASSRLS, with both files on disk, both rows live and
nothing journaled. The same role with BYPASSRLS deletes exactly `plain`.

The same holds for the other ways a name can show the job fewer rows (a view, a
materialized view, a foreign table, a partition, a same-named table earlier on the
search_path) and for an isolation level a role or database may default to: under
REPEATABLE READ the marking re-check would miss an attach committed during its lock wait.
"""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from dagster import Failure

from snapshot_ops import journal, reconcile
from snapshot_ops.cleanup import mark_and_delete
from snapshot_ops.db import Catalog, make_engine
from snapshot_ops.db.schema import Tables
from snapshot_ops.defs.jobs import _catalog
from snapshot_ops.defs.resources import SnapshotDatabase
from snapshot_ops.demo import app_tables
from snapshot_ops.errors import SchemaError
from snapshot_ops.rules import make_policy
from snapshot_ops.storage import open_storage
from snapshot_ops_tests.support.jobs import failure_message, run_cleanup
from snapshot_ops_tests.support.scenarios import DAY, state, wait_for_lock_wait
from snapshot_ops_tests.support.world import NOW, World

TENANT_POLICY = (
    'ALTER TABLE "{table}" ADD COLUMN "tenantId" text',
    'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY',
    'CREATE POLICY tenant ON "{table}" '
    "USING (\"tenantId\" = current_setting('app.tenant_id', true))",
)
#: What a "turn RLS on" switch of a hosted console does: no policy, so every row is denied.
NO_POLICY = ('ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY',)
#: The job's role owns the table, and FORCE makes RLS (no policy: deny all) apply to it too.
FORCED_ON_OWNER = (
    'ALTER TABLE "{table}" OWNER TO {role}',
    'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY',
    'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY',
)


def admin(world: World, *statements: str) -> None:
    """Run statements as the administrator (the World's superuser connection)."""
    with world.engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def two_expired(world: World) -> tuple[str, str]:
    """`linked` (an order links it) and `plain`, both expired parse-session snapshots."""
    return world.add(age=10 * DAY, linked=True), world.add(age=10 * DAY)


def assert_untouched(world: World, *file_ids: str) -> None:
    """Each row live with its file on disk, and nothing journaled (if the journal exists:
    a run refused while its catalog opened never made it)."""
    now = state(world)
    assert [now[i] for i in file_ids] == [(False, True)] * len(file_ids)
    if sa.inspect(world.engine).has_table("pending_deletes", schema="snapshot_ops"):
        assert world.pending() == []


@pytest.mark.parametrize(
    ("rules", "tables", "named"),
    [
        (TENANT_POLICY, ("OrderAttachments",), "OrderAttachments"),
        (NO_POLICY, ("OrderAttachments",), "OrderAttachments"),
        (FORCED_ON_OWNER, ("OrderAttachments",), "OrderAttachments"),
        (TENANT_POLICY, ("OrderAttachments", "SnapshotFiles"), "SnapshotFiles"),
        (NO_POLICY, ("SnapshotFiles",), "SnapshotFiles"),
    ],
    ids=["tenant-policy", "no-policy", "forced-on-owner", "both-tables", "snapshot-files"],
)
def test_row_level_security_stops_the_run_before_marking(cleanup_role, rules, tables, named):
    world, role, role_url = cleanup_role
    linked, plain = two_expired(world)
    admin(world, *(r.format(table=t, role=role) for t in tables for r in rules))
    world.db_url = role_url

    result = world.run()

    assert not result.success
    assert_untouched(world, linked, plain)
    assert world.run_log() == []  # stopped before the run was even logged
    message = failure_message(result)
    assert f'"{named}"' in message
    assert "row-level security" in message
    assert f"ALTER ROLE {role} BYPASSRLS" in message
    assert "lacks a privilege" not in message
    # Stopped by the first step's probe of the tables, before any count or mark read them.
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_failure_data.error.cause.cls_name == "RowSecurityError"


def test_with_bypassrls_the_role_sees_every_row(cleanup_role):
    world, role, role_url = cleanup_role
    linked, plain = two_expired(world)
    admin(
        world,
        *(r.format(table=t) for t in ("OrderAttachments", "SnapshotFiles") for r in TENANT_POLICY),
        f"ALTER ROLE {role} BYPASSRLS",
    )
    world.db_url = role_url

    result = world.run()

    assert result.success
    now = state(world)
    assert (now[linked], now[plain]) == ((False, True), (True, False))
    [log] = world.run_log()
    assert (log.status, log.deleted_count) == ("succeeded", 1)


# -- row-level security turned on after the first step: every statement refuses ---------------


def test_row_level_security_turned_on_mid_run_fails_the_marking_untouched(cleanup_role):
    # The catalog is open and its pooled connection in use (as in a run whose first step
    # passed) when the administrator turns RLS on: the next transaction on that same
    # connection must refuse, and the step must say why, not "lacks a privilege".
    world, role, role_url = cleanup_role
    linked, plain = two_expired(world)
    database = SnapshotDatabase(url=role_url)
    catalog = database.catalog()
    catalog.ensure_own_tables()
    admin(world, *(r.format(table="OrderAttachments") for r in TENANT_POLICY))
    policy = make_policy(
        reference_time=NOW.isoformat(), retention_days=7, max_deletions=100, now=NOW
    )

    try:
        with pytest.raises(Failure) as failed, _catalog(database) as same:
            assert same is catalog
            mark_and_delete(
                catalog,
                open_storage(world.root.as_uri()),
                policy,
                run_id="r1",
                marked_at=NOW,
                batch_size=10,
            )
    finally:
        catalog.engine.dispose()

    assert_untouched(world, linked, plain)
    message = failed.value.description
    assert '"OrderAttachments"' in message and f"ALTER ROLE {role} BYPASSRLS" in message
    assert "lacks a privilege" not in message


def test_a_missing_grant_is_still_named_as_one(cleanup_role):
    # The same SQLSTATE (42501) as row-level security, another fix.
    world, role, role_url = cleanup_role
    linked, plain = two_expired(world)
    admin(world, f'REVOKE SELECT ON "OrderAttachments" FROM {role}')
    world.db_url = role_url

    result = world.run()

    assert not result.success
    assert_untouched(world, linked, plain)
    message = failure_message(result)
    assert "the database role lacks a privilege the job needs" in message
    assert "row-level security" not in message and "BYPASSRLS" not in message


def test_the_reconciliation_report_refuses_hidden_rows(cleanup_role, monkeypatch, capsys):
    # A row the report cannot see makes its object look orphaned, and orphans are what a
    # person deletes by hand.
    world, role, role_url = cleanup_role
    two_expired(world)
    admin(world, *(r.format(table="SnapshotFiles") for r in NO_POLICY))
    monkeypatch.setenv("SNAPSHOT_OPS_DATABASE_URL", role_url)
    monkeypatch.setenv("SNAPSHOT_OPS_STORAGE_URL", world.root.as_uri())

    assert reconcile.main([]) == 2

    err = capsys.readouterr().err
    assert '"SnapshotFiles"' in err and f"ALTER ROLE {role} BYPASSRLS" in err


def test_the_journal_command_refuses_hidden_rows(cleanup_role, monkeypatch, capsys):
    world, role, role_url = cleanup_role
    two_expired(world)
    admin(world, *(r.format(table="SnapshotFiles") for r in NO_POLICY))
    monkeypatch.setenv("SNAPSHOT_OPS_DATABASE_URL", role_url)

    assert journal.main(["list"]) == journal.BAD_SETUP

    err = capsys.readouterr().err
    assert '"SnapshotFiles"' in err and f"ALTER ROLE {role} BYPASSRLS" in err


# -- the configured name must be a table, the one the application uses -------------------------


def test_a_tenant_filtering_view_is_refused_by_its_setting(cleanup_role):
    world, role, role_url = cleanup_role
    linked, plain = two_expired(world)
    admin(
        world,
        'ALTER TABLE "OrderAttachments" ADD COLUMN "tenantId" text',
        'CREATE VIEW "TenantAttachments" AS SELECT * FROM "OrderAttachments" '
        "WHERE \"tenantId\" = current_setting('app.tenant_id', true)",
        f'GRANT SELECT ON "TenantAttachments" TO {role}',
    )
    database = SnapshotDatabase(url=role_url, order_attachments_table="TenantAttachments")

    result = run_cleanup(database, world.root.as_uri())

    assert not result.success
    assert_untouched(world, linked, plain)
    message = failure_message(result)
    assert '"TenantAttachments" is a view, not a table' in message
    assert "set order_attachments_table (and app_schema" in message


@pytest.mark.parametrize(
    ("make", "what"),
    [
        ('CREATE VIEW "Shown" AS SELECT * FROM "SnapshotFiles"', "a view"),
        (
            'CREATE MATERIALIZED VIEW "Shown" AS SELECT * FROM "SnapshotFiles"',
            "a materialized view",
        ),
        ("FOREIGN", "a foreign table"),
    ],
    ids=["view", "materialized-view", "foreign-table"],
)
def test_a_relation_that_is_not_a_table_is_refused(pg_world, make, what):
    if make == "FOREIGN":
        database = pg_world.engine.url.database
        make = (
            "CREATE EXTENSION postgres_fdw",
            f"CREATE SERVER here FOREIGN DATA WRAPPER postgres_fdw OPTIONS (dbname '{database}')",
            'CREATE FOREIGN TABLE "Shown" ("fileId" text, "snapshotType" text, '
            '"storageKey" text, "sizeBytes" bigint, "createdAt" timestamptz, '
            "\"deletedAt\" timestamptz) SERVER here OPTIONS (table_name 'SnapshotFiles')",
        )
    admin(pg_world, *([make] if isinstance(make, str) else make))

    message = refusal(make_engine(pg_world.db_url), snapshot_files_table="Shown")

    assert message.startswith(f'"Shown" is {what}, not a table')
    assert "set snapshot_files_table (and app_schema" in message


def test_a_sqlite_view_is_refused(sqlite_url, storage_root):
    world = World(sqlite_url, storage_root)
    admin(world, 'CREATE VIEW "Shown" AS SELECT * FROM "OrderAttachments"')

    message = refusal(world.engine, order_attachments_table="Shown")

    assert message.startswith('"Shown" is a view, not a table')
    assert "set order_attachments_table (and app_schema" in message


def test_a_partition_is_refused_and_its_table_named(postgres_url):
    engine = make_engine(postgres_url)
    admin_statements = (
        'CREATE TABLE "OrderAttachments" ("orderId" text, "fileId" text) PARTITION BY HASH '
        '("fileId")',
        'CREATE TABLE "OrderAttachments_0" PARTITION OF "OrderAttachments" '
        "FOR VALUES WITH (MODULUS 2, REMAINDER 0)",
        'CREATE TABLE "OrderAttachments_1" PARTITION OF "OrderAttachments" '
        "FOR VALUES WITH (MODULUS 2, REMAINDER 1)",
    )
    with engine.begin() as conn:
        for statement in admin_statements:
            conn.exec_driver_sql(statement)
    files, _ = app_tables(sa.MetaData())
    files.create(engine)

    message = refusal(engine, order_attachments_table="OrderAttachments_0")

    assert message.startswith('"OrderAttachments_0" is a partition of "OrderAttachments"')
    assert "set order_attachments_table (and app_schema" in message
    # The partitioned table itself is the application's table: accepted.
    engine = make_engine(postgres_url)
    try:
        Tables(engine)
    finally:
        engine.dispose()


def test_a_table_shadowed_on_the_search_path_is_refused_naming_both_schemas(cleanup_role):
    # The role's own schema ("$user", first on the default search_path) holds an empty
    # "OrderAttachments": unqualified, the job would read it and see no link at all.
    world, role, role_url = cleanup_role
    linked, plain = two_expired(world)
    admin(
        world,
        f"CREATE SCHEMA {role} AUTHORIZATION {role}",
        f'CREATE TABLE {role}."OrderAttachments" ("orderId" text, "fileId" text)',
        f'ALTER TABLE {role}."OrderAttachments" OWNER TO {role}',
    )

    result = run_cleanup(role_url, world.root.as_uri())

    assert not result.success
    assert_untouched(world, linked, plain)
    message = failure_message(result)
    assert (
        '"OrderAttachments" (order_attachments_table) is in more than one schema of the '
        f"search_path ({role}, public)"
    ) in message
    assert "set app_schema on the database resource" in message

    # Naming the application's schema settles it: exactly `plain` goes.
    result = run_cleanup(SnapshotDatabase(url=role_url, app_schema="public"), world.root.as_uri())

    assert result.success
    now = state(world)
    assert (now[linked], now[plain]) == ((False, True), (True, False))


# -- READ COMMITTED whatever the role or database sets -----------------------------------------


@pytest.mark.parametrize("scope", ["ROLE", "DATABASE"])
def test_an_attach_during_the_lock_wait_is_seen_under_a_repeatable_read_default(
    cleanup_role, scope
):
    # The re-check of "OrderAttachments" sees an attach that committed while the job waited
    # for the row lock only if it reads a new snapshot: READ COMMITTED. Under a default of
    # REPEATABLE READ it would read the transaction's first one, from before the wait.
    world, role, role_url = cleanup_role
    target, other = world.add(age=10 * DAY), world.add(age=10 * DAY)
    database = world.engine.url.database
    name = role if scope == "ROLE" else f'"{database}"'
    admin(world, f"ALTER {scope} {name} SET default_transaction_isolation = 'repeatable read'")
    as_role = sa.create_engine(
        sa.engine.make_url(role_url).set(drivername="postgresql+psycopg2"),
        poolclass=sa.pool.NullPool,
    )
    with as_role.connect() as conn:  # the premise: the role's sessions default to it
        assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "repeatable read"
    as_role.dispose()

    files, attachments = world.files, world.attachments
    out: list = []
    with world.engine.connect() as app:  # the application attaches `target` ...
        app.execute(
            sa.select(files.c.fileId)
            .where(files.c.fileId == target, files.c.deletedAt.is_(None))
            .with_for_update()
        )
        app.execute(sa.insert(attachments).values(orderId="o-9", fileId=target))
        thread = threading.Thread(target=mark_as_job, args=(role_url, world, out))
        thread.start()
        wait_for_lock_wait(world.engine)  # ... and commits while the job waits for the row
        app.commit()
    thread.join(timeout=60)

    [report] = out
    assert report.attached_meanwhile == [target]
    now = state(world)
    assert (now[target], now[other]) == ((False, True), (True, False))


def mark_as_job(url: str, world: World, out: list) -> None:
    """Mark and delete the expired candidates as the job does, on the job's engine."""
    catalog = Catalog(make_engine(url))
    try:
        catalog.ensure_own_tables()
        policy = make_policy(
            reference_time=NOW.isoformat(), retention_days=7, max_deletions=100, now=NOW
        )
        marked, _ = mark_and_delete(
            catalog,
            open_storage(world.root.as_uri()),
            policy,
            run_id="r1",
            marked_at=NOW,
            batch_size=10,
        )
        out.append(marked)
    finally:
        catalog.engine.dispose()


def refusal(engine: sa.Engine, **settings: str) -> str:
    """The SchemaError that reading the application's tables on `engine` (with the database
    resource's `settings`) raises; the engine is disposed either way."""
    try:
        with pytest.raises(SchemaError) as refused:
            Tables(engine, **settings)
    finally:
        engine.dispose()
    return str(refused.value)
