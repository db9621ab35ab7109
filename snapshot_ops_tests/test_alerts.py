"""Alerting: a failed cleanup run is reported with its `errors` summary, through the log by
default or a real webhook; a cleanup that has not succeeded for more than 36 hours is
flagged once per overdue spell, and not before.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from dagster import DagsterEventType, build_run_status_sensor_context, instance_for_test

from snapshot_ops.alerts import FRESHNESS_LIMIT, overdue_by
from snapshot_ops.jobs import snapshot_cleanup_job
from snapshot_ops.resources import SnapshotDatabase, SnapshotStorage
from snapshot_ops.sensors import AlertNotifier, check_freshness, snapshot_cleanup_failure_alert
from snapshot_ops_tests.conftest import NOW

DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)


@pytest.mark.unit
def test_overdue_only_after_36_hours_counting_from_last_success_or_watch_start():
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    assert FRESHNESS_LIMIT == 36 * HOUR
    assert overdue_by(last_success=start, watching_since=start, now=start + 36 * HOUR) is None
    assert overdue_by(last_success=start, watching_since=start, now=start + 37 * HOUR) == HOUR
    # Never succeeded: the clock starts when watching began, not at the epoch.
    assert overdue_by(last_success=None, watching_since=start, now=start + 35 * HOUR) is None
    assert overdue_by(last_success=None, watching_since=start, now=start + 40 * HOUR) == (4 * HOUR)


def _run(world, instance, raise_on_error=False):
    return snapshot_cleanup_job.execute_in_process(
        run_config={
            "ops": {"identify_expired_candidates": {"config": {"reference_time": NOW.isoformat()}}}
        },
        resources={
            "database": SnapshotDatabase(url=world.db_url),
            "storage": SnapshotStorage(url=world.root.as_uri()),
        },
        instance=instance,
        raise_on_error=raise_on_error,
    )


def _failure_context(instance, result, alerts):
    [failure] = [e for e in result.all_events if e.event_type == DagsterEventType.RUN_FAILURE]
    return build_run_status_sensor_context(
        sensor_name=snapshot_cleanup_failure_alert.name,
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"alerts": alerts},
    ).for_run_failure()


@pytest.mark.integration
def test_failed_cleanup_posts_its_errors_to_the_webhook(pg_world, webhook):
    """Refused storage keys make the cleanup fail; the webhook receives its errors list, one
    entry per error (not just the run's one-line failure description)."""
    good = pg_world.add(age=8 * DAY)
    bad = pg_world.add(age=8 * DAY, key="../outside.pdf", with_file=False)
    pg_world.add(age=9 * DAY, key="a/./b.pdf", with_file=False)
    with instance_for_test() as instance:
        result = _run(pg_world, instance)
        assert not result.success
        snapshot_cleanup_failure_alert(
            _failure_context(instance, result, AlertNotifier(webhook_url=webhook.url))
        )

    assert pg_world.is_deleted(good) and not pg_world.is_deleted(bad)
    [alert] = webhook.bodies
    assert alert["kind"] == "run_failure"
    assert alert["job"] == "snapshot_cleanup_job"
    assert alert["run_id"] == result.run_id
    assert alert["error_count"] == 2
    assert sorted(("../outside.pdf" in e, "a/./b.pdf" in e) for e in alert["errors"]) == [
        (False, True),
        (True, False),
    ]
    assert "snapshot_cleanup_job failed" in alert["text"] and "../outside.pdf" in alert["text"]


@pytest.mark.integration
def test_failure_alert_goes_to_the_log_without_a_webhook(pg_world, caplog):
    pg_world.add(age=8 * DAY, key="/etc/absolute.pdf", with_file=False)
    with instance_for_test() as instance:
        result = _run(pg_world, instance)
        with caplog.at_level(logging.ERROR, logger="snapshot_ops.alerts"):
            snapshot_cleanup_failure_alert(_failure_context(instance, result, AlertNotifier()))
    [record] = [r for r in caplog.records if r.name == "snapshot_ops.alerts"]
    assert "snapshot_cleanup_job failed" in record.getMessage()
    assert "/etc/absolute.pdf" in record.getMessage()


@pytest.mark.integration
def test_crash_before_any_cleanup_reports_the_step_error(pg_world, webhook):
    """A failure with no errors list (here: a config the job refuses) still says why."""
    with instance_for_test() as instance:
        result = snapshot_cleanup_job.execute_in_process(
            run_config={"ops": {"identify_expired_candidates": {"config": {"batch_size": 0}}}},
            resources={
                "database": SnapshotDatabase(url=pg_world.db_url),
                "storage": SnapshotStorage(url=pg_world.root.as_uri()),
            },
            instance=instance,
            raise_on_error=False,
        )
        snapshot_cleanup_failure_alert(
            _failure_context(instance, result, AlertNotifier(webhook_url=webhook.url))
        )
    [alert] = webhook.bodies
    assert alert["error_count"] == 1 and "batch_size must be at least 1" in alert["errors"][0]


@pytest.mark.integration
def test_freshness_flags_36_hours_without_success_once(pg_world):
    pg_world.add(age=8 * DAY)
    with instance_for_test() as instance:
        result = _run(pg_world, instance, raise_on_error=True)
        finished = dt.datetime.now(dt.UTC)

        alert, cursor = check_freshness(instance, None, finished + 35 * HOUR)
        assert alert is None

        alert, cursor = check_freshness(instance, cursor, finished + 37 * HOUR)
        assert alert is not None and alert.kind == "stale"
        assert alert.run_id == result.run_id
        assert "more than 36 hours" in alert.title

        # Still overdue an hour later: already reported for this spell.
        alert, cursor = check_freshness(instance, cursor, finished + 38 * HOUR)
        assert alert is None

        # A new success ends the spell; the next overdue spell alerts again.
        second = _run(pg_world, instance, raise_on_error=True)
        alert, cursor = check_freshness(instance, cursor, dt.datetime.now(dt.UTC))
        assert alert is None
        alert, _ = check_freshness(instance, cursor, dt.datetime.now(dt.UTC) + 40 * HOUR)
        assert alert is not None and alert.run_id == second.run_id


@pytest.mark.integration
def test_freshness_never_succeeded_counts_from_when_watching_began():
    with instance_for_test() as instance:
        start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
        alert, cursor = check_freshness(instance, None, start)
        assert alert is None
        alert, _ = check_freshness(instance, cursor, start + 37 * HOUR)
        assert alert is not None and "since this check was enabled" in alert.title
