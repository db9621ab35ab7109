"""The job runs as a PostgreSQL role that may only read "OrderAttachments", read
"SnapshotFiles" and update its "deletedAt", and own its own schema (created for it by an
administrator). The test checks the role really is that narrow, then runs the whole job as
it, and shows that without the one write it needs the run fails saying so, touching nothing.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from snapshot_ops.rules import PERMANENT_TYPE
from snapshot_ops_tests.support.scenarios import DAY, state


def test_the_role_can_do_nothing_more(cleanup_role):
    world, _, role_url = cleanup_role
    file_id = world.add(age=10 * DAY)
    engine = sa.create_engine(
        role_url.replace("postgresql://", "postgresql+psycopg2://"), poolclass=sa.pool.NullPool
    )
    forbidden = [
        f'DELETE FROM "SnapshotFiles" WHERE "fileId" = \'{file_id}\'',
        f'UPDATE "SnapshotFiles" SET "storageKey" = \'x\' WHERE "fileId" = \'{file_id}\'',
        "INSERT INTO \"OrderAttachments\" VALUES ('o', 'f')",
        'DELETE FROM "OrderAttachments"',
        "CREATE TABLE public.t (x int)",
    ]
    for statement in forbidden:
        with engine.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="denied"):
            conn.exec_driver_sql(statement)
    engine.dispose()


def test_the_job_runs_as_the_least_privileged_role(cleanup_role):
    world, _, role_url = cleanup_role
    expired = world.add(age=10 * DAY)
    linked = world.add(age=10 * DAY, linked=True)
    fresh = world.add(age=1 * DAY)
    permanent = world.add(age=99 * DAY, snapshot_type=PERMANENT_TYPE)
    world.db_url = role_url  # the job connects as the role; the test reads as admin

    result = world.run()

    assert result.success
    now = state(world)
    assert now[expired] == (True, False)
    assert all(now[i] == (False, True) for i in (linked, fresh, permanent))
    [log] = world.run_log()
    assert (log.status, log.deleted_count) == ("succeeded", 1)
    assert world.pending() == []


def test_without_the_update_grant_the_run_fails_and_touches_nothing(cleanup_role):
    world, name, role_url = cleanup_role
    expired = world.add(age=10 * DAY)
    with world.engine.connect() as conn:
        conn.exec_driver_sql(f'REVOKE UPDATE ("deletedAt") ON "SnapshotFiles" FROM {name}')
        conn.commit()
    world.db_url = role_url

    result = world.run()

    assert not result.success
    assert state(world)[expired] == (False, True)
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "permission denied" in failure[0].step_failure_data.error.message
