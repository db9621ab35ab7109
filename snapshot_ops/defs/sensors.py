"""Alerting sensors: a failed cleanup run, and a cleanup that has stopped running.

- Failed run: dagster-slack's `make_slack_on_run_failure_sensor` and dagster-msteams'
  `make_teams_on_run_failure_sensor` post the run's `errors` summary (`failure_message`) to
  the destinations set in the environment (settings.alert_settings); with neither set, the
  `snapshot_cleanup_failure_alert` sensor writes it to the `snapshot_ops.alerts` log.
- Freshness: the rule lives on the asset, as a Dagster freshness policy on
  `snapshot_cleanup_runs` (assets.py), which the daemon evaluates and the UI shows. See
  `freshness_sensor` for why a sensor is still needed to send the alert.
"""

import datetime as dt
import json

from dagster import (
    DagsterEvent,
    DagsterInstance,
    DefaultSensorStatus,
    JsonMetadataValue,
    RunFailureSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from snapshot_ops.defs.alerts import (
    FRESHNESS_LIMIT,
    LogNotifier,
    Notifier,
    failure_text,
    known_text,
    overdue_by,
)
from snapshot_ops.defs.assets import CLEANUP_RUNS
from snapshot_ops.defs.jobs import snapshot_cleanup_job
from snapshot_ops.settings import AlertSettings

#: The failure sensor's name with no destination configured (the log); with Slack or Teams
#: it gets the destination's name instead, so both may run side by side.
FAILURE_SENSOR = "snapshot_cleanup_failure_alert"
SLACK_FAILURE_SENSOR = "snapshot_cleanup_failure_slack"
TEAMS_FAILURE_SENSOR = "snapshot_cleanup_failure_teams"
FRESHNESS_SENSOR = "snapshot_cleanup_freshness"


def failure_errors(step_failures: list[DagsterEvent]) -> list[str]:
    """The `errors` of a failed run: the cleanup's own list when it reported one, else the
    failure descriptions and exception messages of its failed steps."""
    errors: list[str] = []
    for event in step_failures:
        data = event.step_failure_data
        if data is None:
            continue
        user = data.user_failure_data
        listed = user.metadata.get("errors") if user is not None else None
        if isinstance(listed, JsonMetadataValue) and isinstance(listed.data, list):
            errors += [str(e) for e in listed.data]
        elif user is not None and user.description:
            errors.append(user.description)
        elif data.error is not None:
            errors.append(data.error.message.strip())
        else:
            errors.append(event.message or f"step {event.step_key} failed")
    return errors


def failure_known(step_failures: list[DagsterEvent]) -> str:
    """What a failed run reported as known and not its own (alerts.known_text): the failed
    deletes of earlier runs waiting out their backoff, from record_cleanup_run's
    `backingOff` and `backingOffOldest` metadata; "" when it reported none."""
    for event in step_failures:
        data = event.step_failure_data
        user = data.user_failure_data if data is not None else None
        if user is None:
            continue
        count = user.metadata.get("backingOff")
        oldest = user.metadata.get("backingOffOldest")
        if count is not None:
            return known_text(int(count.value), str(oldest.value) if oldest else "")
    return ""


def failure_message(context: RunFailureSensorContext) -> str:
    """The message of a failed run's alert: its errors summary (alerts.failure_text), or the
    run's own failure message when no step reported one (e.g. a run that never started).
    The errors are the run's own, what is new; known failures waiting out their backoff
    are one line, not listed (`failure_known`)."""
    failures = list(context.get_step_failure_events())
    errors = failure_errors(failures)
    if not errors and context.failure_event.message:
        errors = [context.failure_event.message]
    return failure_text(
        context.dagster_run.job_name,
        context.dagster_run.run_id,
        errors,
        known=failure_known(failures),
    )


@run_failure_sensor(
    name=FAILURE_SENSOR,
    monitored_jobs=[snapshot_cleanup_job],
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Writes the errors summary of a failed cleanup run to the snapshot_ops.alerts log "
        "(used when no Slack or Teams destination is configured)."
    ),
)
def snapshot_cleanup_failure_alert(context: RunFailureSensorContext) -> None:
    """Log a failed cleanup run and its errors."""
    LogNotifier().send(failure_message(context))


def failure_alert_sensors(settings: AlertSettings) -> list[SensorDefinition]:
    """The run-failure sensors for the configured destinations: dagster-slack's and
    dagster-msteams' (each running by default, on the cleanup job only, with
    `failure_message` as the text), or the log sensor when neither is configured."""
    found: list[SensorDefinition] = []
    # Imported here, only for a configured destination: see alerts.py.
    if settings.slack:
        from dagster_slack import make_slack_on_run_failure_sensor

        found.append(
            make_slack_on_run_failure_sensor(
                channel=settings.slack_channel,
                slack_token=settings.slack_token,
                text_fn=failure_message,
                name=SLACK_FAILURE_SENSOR,
                monitored_jobs=[snapshot_cleanup_job],
                default_status=DefaultSensorStatus.RUNNING,
                webserver_base_url=settings.webserver_url,
            )
        )
    if settings.teams:
        from dagster_msteams import make_teams_on_run_failure_sensor

        found.append(
            make_teams_on_run_failure_sensor(
                hook_url=settings.teams_webhook_url,
                message_fn=failure_message,
                timeout=30,
                name=TEAMS_FAILURE_SENSOR,
                monitored_jobs=[snapshot_cleanup_job],
                default_status=DefaultSensorStatus.RUNNING,
                webserver_base_url=settings.webserver_url,
            )
        )
    return found or [snapshot_cleanup_failure_alert]


def check_freshness(
    instance: DagsterInstance, cursor: str | None, now: dt.datetime
) -> tuple[str | None, str]:
    """The freshness alert to send, if any (once per stale spell), and the new cursor.

    Stale means one of:
    - the freshness state Dagster's daemon last recorded for `snapshot_cleanup_runs` is FAIL
      (no run logged within FRESHNESS_LIMIT); a spell is one FAIL state change, so the
      alert is sent once per spell and again after the asset passes and fails anew;
    - the asset was never materialized and this sensor has watched for longer than
      FRESHNESS_LIMIT (the policy calls a never-materialized asset UNKNOWN, not FAIL, so a
      schedule that was never turned on would otherwise go unnoticed).

    The cursor (JSON) keeps when watching began and which spell was last alerted.
    """
    state = json.loads(cursor) if cursor else {}
    watching_since = dt.datetime.fromisoformat(state.get("watching_since", now.isoformat()))
    new_state: dict[str, str | None] = {
        "watching_since": watching_since.isoformat(),
        "alerted_for": None,
    }
    key = CLEANUP_RUNS.key
    hours = f"{FRESHNESS_LIMIT.total_seconds() / 3600:g} hours"
    latest = instance.get_latest_materialization_event(key)
    record = instance.get_freshness_state_records([key]).get(key)
    if latest is None:
        if overdue_by(since=watching_since, now=now) is None:
            return None, json.dumps(new_state)
        spell = "never"
        text = (
            f"{snapshot_cleanup_job.name}: no cleanup run has been logged ({key.to_user_string()} "
            f"was never materialized) in the {hours} since this check was enabled; is the "
            "schedule running and the daemon up?"
        )
    # FreshnessState is a str enum that dagster does not export; compare with its value.
    elif record is not None and record.freshness_state == "FAIL":
        spell = f"fail@{record.updated_at.isoformat()}"
        last = dt.datetime.fromtimestamp(latest.timestamp, dt.UTC)
        text = (
            f"{snapshot_cleanup_job.name}: no cleanup run logged for more than {hours} "
            f"({key.to_user_string()} last materialized {last.isoformat()}, failing its "
            f"freshness policy since {record.updated_at.isoformat()}); is the schedule "
            "running and the daemon up?"
        )
    else:
        return None, json.dumps(new_state)
    new_state["alerted_for"] = spell
    if state.get("alerted_for") == spell:
        return None, json.dumps(new_state)  # already alerted for this spell
    return text, json.dumps(new_state)


def freshness_sensor(notifiers: list[Notifier]) -> SensorDefinition:
    """The sensor that sends the freshness alert through `notifiers`.

    Why a sensor: open-source Dagster evaluates the asset's freshness policy (the daemon's
    freshness loop records PASS/FAIL state changes, shown on the asset's page) but delivers
    no alert for it; freshness alerts are a Dagster+ feature, and dagster-slack and
    dagster-msteams only ship run-failure sensors. This sensor reads the recorded state and
    sends the message; the rule itself (36 hours, on `snapshot_cleanup_runs`) stays on the
    asset.
    """

    @sensor(
        name=FRESHNESS_SENSOR,
        minimum_interval_seconds=30 * 60,
        default_status=DefaultSensorStatus.STOPPED,
        description=(
            "Alerts when snapshot_cleanup_runs fails its freshness policy (no cleanup run "
            "logged for more than 36 hours). Enable it together with the daily schedule."
        ),
    )
    def snapshot_cleanup_freshness(context: SensorEvaluationContext) -> SkipReason:
        """Alert once per stale spell of the cleanup's run log."""
        text, cursor = check_freshness(context.instance, context.cursor, dt.datetime.now(dt.UTC))
        if text is None:
            context.update_cursor(cursor)
            return SkipReason("the cleanup's run log is fresh, or already alerted")
        for notifier in notifiers:
            notifier.send(text)
        context.update_cursor(cursor)  # only once delivered: a refused alert is sent again
        return SkipReason(f"alert sent: {text}")

    return snapshot_cleanup_freshness
