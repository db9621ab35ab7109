"""Alerting: a failed cleanup run is reported with its `errors` summary (its own failures,
what is new; known failures waiting out their backoff are one line, not listed) through
dagster-slack's and dagster-msteams' run-failure sensors (real clients posting to a real
HTTP server on loopback), or to the log when neither is configured; the freshness policy on
snapshot_cleanup_runs, evaluated by Dagster's own freshness daemon, turns into one alert per
stale spell, and a deployment that never ran a cleanup is flagged after 36 hours.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging

import dagster_slack.sensors
import pytest
from dagster import (
    DagsterEventType,
    build_run_status_sensor_context,
    build_sensor_context,
    instance_for_test,
)
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.freshness import FreshnessDaemon
from dagster_msteams.client import TeamsClient
from slack_sdk import WebClient

from snapshot_ops.defs.alerts import (
    FRESHNESS_LIMIT,
    MAX_ALERT_ERRORS,
    MAX_ERROR_CHARS,
    MAX_MESSAGE_CHARS,
    LogNotifier,
    TeamsNotifier,
    failure_text,
    known_text,
    notifiers,
)
from snapshot_ops.defs.assets import CLEANUP_RUNS
from snapshot_ops.defs.sensors import (
    FAILURE_SENSOR,
    SLACK_FAILURE_SENSOR,
    TEAMS_FAILURE_SENSOR,
    check_freshness,
    failure_alert_sensors,
    freshness_sensor,
)
from snapshot_ops.errors import ConfigError
from snapshot_ops.settings import AlertSettings, alert_settings

DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)


# -- the message and the settings --------------------------------------------------------------


@pytest.mark.unit
def test_failure_text_lists_each_error_once_and_counts_the_rest():
    errors = [f"key {i}: refused" for i in range(MAX_ALERT_ERRORS + 5)] + ["key 0: refused", ""]
    text = failure_text("snapshot_cleanup_job", "run-1", errors)
    lines = text.splitlines()
    assert lines[:3] == ["snapshot_cleanup_job failed", "run: run-1", "errors (25):"]
    assert lines[3:-1] == [f"- key {i}: refused" for i in range(MAX_ALERT_ERRORS)]
    assert lines[-1] == "- and 5 more"


@pytest.mark.unit
def test_failure_text_lists_the_new_errors_and_counts_the_known_ones_on_one_line():
    known = known_text(3, "f-1, marked 2026-11-12T03:00:00+00:00, failed 2 time(s)")
    text = failure_text("snapshot_cleanup_job", "run-1", ["failed f-9: AccessDenied"], known)
    assert text.splitlines() == [
        "snapshot_cleanup_job failed",
        "run: run-1",
        "known, not listed: 3 failed delete(s) of earlier runs wait out their backoff (not "
        "retried by this run; asset check no_pending_deletes_backing_off); oldest: f-1, "
        "marked 2026-11-12T03:00:00+00:00, failed 2 time(s)",
        "errors (1):",
        "- failed f-9: AccessDenied",
    ]
    assert known_text(0, "") == ""
    assert failure_text("snapshot_cleanup_job", "run-1", ["e"], "") == failure_text(
        "snapshot_cleanup_job", "run-1", ["e"]
    )
    long = failure_text("snapshot_cleanup_job", "run-1", [], known_text(1, "x" * 3000))
    assert len(long.splitlines()[2]) == MAX_ERROR_CHARS and long.endswith("…")


@pytest.mark.unit
def test_failure_text_stays_within_what_slack_accepts():
    """Slack refuses a section over 3,000 characters: long errors are cut and counted."""
    errors = [f"{i}: " + "x" * 2000 for i in range(10)]
    text = failure_text("snapshot_cleanup_job", "run-1", errors)
    assert len(text) <= MAX_MESSAGE_CHARS
    assert "- 0: xxx" in text and text.endswith("more")
    shown = [line for line in text.splitlines() if line.startswith("- ") and "more" not in line]
    assert text.splitlines()[-1] == f"- and {10 - len(shown)} more"


@pytest.mark.unit
def test_alert_settings_name_the_destinations_and_refuse_half_configurations():
    assert alert_settings({}) == AlertSettings()
    assert [type(n) for n in notifiers(alert_settings({}))] == [LogNotifier]
    assert [s.name for s in failure_alert_sensors(alert_settings({}))] == [FAILURE_SENSOR]
    both = alert_settings(
        {
            "SNAPSHOT_OPS_SLACK_TOKEN": "xoxb-1",
            "SNAPSHOT_OPS_SLACK_CHANNEL": "#ops",
            "SNAPSHOT_OPS_TEAMS_WEBHOOK_URL": "https://example.webhook.office.com/x",
            "SNAPSHOT_OPS_WEBSERVER_URL": "https://dagster.example/",
        }
    )
    assert both.webserver_url == "https://dagster.example"
    assert [s.name for s in failure_alert_sensors(both)] == [
        SLACK_FAILURE_SENSOR,
        TEAMS_FAILURE_SENSOR,
    ]
    with pytest.raises(ConfigError, match="both SNAPSHOT_OPS_SLACK_TOKEN"):
        alert_settings({"SNAPSHOT_OPS_SLACK_TOKEN": "xoxb-1"})
    with pytest.raises(ConfigError, match="must start with https://") as refused:
        alert_settings({"SNAPSHOT_OPS_TEAMS_WEBHOOK_URL": "outlook.office.com/secret-token"})
    assert "secret-token" not in str(refused.value)
    with pytest.raises(ConfigError, match="no longer read"):
        alert_settings({"SNAPSHOT_OPS_ALERT_WEBHOOK_URL": "https://hooks.example/x"})


# -- failed runs ---------------------------------------------------------------------------------


def _run(world, instance, raise_on_error=False, **config):
    return world.run(raise_on_error=raise_on_error, instance=instance, **config)


def _evaluate_failure_sensor(sensor, instance, result) -> None:
    [failure] = [e for e in result.all_events if e.event_type == DagsterEventType.RUN_FAILURE]
    sensor(
        build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=failure,
            dagster_instance=instance,
            dagster_run=result.dagster_run,
        ).for_run_failure()
    )


def _refused_keys_run(world, instance):
    """A run that fails on two refused storage keys after deleting the good file."""
    good = world.add(age=8 * DAY)
    bad = world.add(age=8 * DAY, key="../outside.pdf", with_file=False)
    world.add(age=9 * DAY, key="a/./b.pdf", with_file=False)
    result = _run(world, instance)
    assert not result.success
    assert world.is_deleted(good) and not world.is_deleted(bad)
    return result


def test_failed_cleanup_posts_its_errors_to_slack(pg_world, webhook, monkeypatch):
    """dagster-slack's sensor, with slack_sdk's real WebClient pointed at the local server
    (its base_url, the one thing changed), posts chat.postMessage carrying each error."""
    monkeypatch.setattr(
        dagster_slack.sensors, "WebClient", functools.partial(WebClient, base_url=webhook.url + "/")
    )
    settings = AlertSettings(slack_token="xoxb-test-token", slack_channel="#snapshot-ops")
    [sensor] = failure_alert_sensors(settings)
    with instance_for_test() as instance:
        result = _refused_keys_run(pg_world, instance)
        _evaluate_failure_sensor(sensor, instance, result)

    [body] = webhook.bodies
    assert webhook.paths == ["/hook/chat.postMessage"]
    assert webhook.authorizations == ["Bearer xoxb-test-token"]
    assert body["channel"] == "#snapshot-ops"
    text = body["text"]  # also the blocks' main section
    assert text.startswith(f"snapshot_cleanup_job failed\nrun: {result.run_id}\nerrors (2):")
    assert "../outside.pdf" in text and "a/./b.pdf" in text
    assert any(text == block.get("text", {}).get("text") for block in body["blocks"])


def test_failed_cleanup_posts_its_errors_to_teams(pg_world, webhook):
    """dagster-msteams' sensor posts an adaptive card whose text is the errors summary, one
    line per error (not just the run's one-line failure description)."""
    settings = AlertSettings(teams_webhook_url=webhook.url, webserver_url="https://dagster.example")
    [sensor] = failure_alert_sensors(settings)
    with instance_for_test() as instance:
        result = _refused_keys_run(pg_world, instance)
        _evaluate_failure_sensor(sensor, instance, result)

    [body] = webhook.bodies
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    [block] = attachment["content"]["body"]
    lines = block["text"].splitlines()
    assert lines[:3] == ["snapshot_cleanup_job failed", f"run: {result.run_id}", "errors (2):"]
    assert sorted(("../outside.pdf" in e, "a/./b.pdf" in e) for e in lines[3:5]) == [
        (False, True),
        (True, False),
    ]
    assert f"(https://dagster.example/runs/{result.run_id})" in lines[-1]


def test_failure_alert_goes_to_the_log_without_a_destination(pg_world, caplog):
    pg_world.add(age=8 * DAY, key="/etc/absolute.pdf", with_file=False)
    [sensor] = failure_alert_sensors(AlertSettings())
    with instance_for_test() as instance:
        result = _run(pg_world, instance)
        with caplog.at_level(logging.ERROR, logger="snapshot_ops.alerts"):
            _evaluate_failure_sensor(sensor, instance, result)
    [record] = [r for r in caplog.records if r.name == "snapshot_ops.alerts"]
    assert "snapshot_cleanup_job failed" in record.getMessage()
    assert "/etc/absolute.pdf" in record.getMessage()


def test_crash_before_any_cleanup_reports_the_step_error(pg_world, webhook):
    """A failure with no errors list (here: a config the job refuses) still says why."""
    [sensor] = failure_alert_sensors(AlertSettings(teams_webhook_url=webhook.url))
    with instance_for_test() as instance:
        result = _run(pg_world, instance, batch_size=0)
        _evaluate_failure_sensor(sensor, instance, result)
    [body] = webhook.bodies
    text = body["attachments"][0]["content"]["body"][0]["text"]
    assert "errors (1):" in text and "batch_size must be at least 1" in text


# -- freshness -----------------------------------------------------------------------------------


def _evaluate_freshness(instance, at: dt.datetime) -> None:
    """One iteration of Dagster's freshness daemon over the project's definitions, at `at`."""
    origin = LoadableTargetOrigin(module_name="snapshot_ops.definitions", attribute="defs")
    target = InProcessWorkspaceLoadTarget(InProcessCodeLocationOrigin(origin))
    with WorkspaceProcessContext(instance, target) as workspace, freeze_time(at):
        asyncio.run(FreshnessDaemon()._evaluate_assets(workspace))  # noqa: SLF001


def _freshness_state(instance) -> str | None:
    record = instance.get_freshness_state_records([CLEANUP_RUNS.key]).get(CLEANUP_RUNS.key)
    return None if record is None else record.freshness_state.value


def _sensor_tick(sensor, instance, cursor):
    context = build_sensor_context(instance=instance, cursor=cursor)
    sensor(context)
    return context.cursor


def test_freshness_policy_fails_after_36_hours_and_alerts_once_per_spell(pg_world, webhook):
    assert CLEANUP_RUNS.freshness_policy.fail_window.to_timedelta() == FRESHNESS_LIMIT
    sensor = freshness_sensor([TeamsNotifier(TeamsClient(hook_url=webhook.url))])
    pg_world.add(age=8 * DAY)
    with instance_for_test() as instance:
        _run(pg_world, instance, raise_on_error=True)
        ran = dt.datetime.now(dt.UTC)

        _evaluate_freshness(instance, ran + 35 * HOUR)
        assert _freshness_state(instance) == "PASS"
        cursor = _sensor_tick(sensor, instance, None)
        assert webhook.bodies == []

        _evaluate_freshness(instance, ran + 37 * HOUR)
        assert _freshness_state(instance) == "FAIL"
        cursor = _sensor_tick(sensor, instance, cursor)
        [alert] = webhook.bodies
        text = alert["attachments"][0]["content"]["body"][0]["text"]
        assert "no cleanup run logged for more than 36 hours" in text
        assert "snapshot_cleanup_runs" in text

        # Still stale later on: already reported for this spell.
        _evaluate_freshness(instance, ran + 40 * HOUR)
        cursor = _sensor_tick(sensor, instance, cursor)
        assert len(webhook.bodies) == 1

        # A new run ends the spell; the next stale spell alerts again.
        _run(pg_world, instance, raise_on_error=True)
        again = dt.datetime.now(dt.UTC)
        _evaluate_freshness(instance, again + HOUR)
        assert _freshness_state(instance) == "PASS"
        cursor = _sensor_tick(sensor, instance, cursor)
        _evaluate_freshness(instance, again + 37 * HOUR)
        _sensor_tick(sensor, instance, cursor)
        assert len(webhook.bodies) == 2


def test_freshness_never_materialized_counts_from_when_watching_began():
    with instance_for_test() as instance:
        start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
        text, cursor = check_freshness(instance, None, start)
        assert text is None
        text, cursor = check_freshness(instance, cursor, start + 35 * HOUR)
        assert text is None
        text, cursor = check_freshness(instance, cursor, start + 37 * HOUR)
        assert text is not None and "since this check was enabled" in text
        assert json.loads(cursor)["alerted_for"] == "never"
        text, _ = check_freshness(instance, cursor, start + 40 * HOUR)
        assert text is None  # once
