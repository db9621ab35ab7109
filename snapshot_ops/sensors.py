"""Alerting sensors: a failed cleanup run, and a cleanup that has not succeeded for too long.

Both report through the `alerts` resource (AlertNotifier): the log by default, a webhook when
SNAPSHOT_OPS_ALERT_WEBHOOK_URL is set (see definitions.py).
"""

import datetime as dt
import json

from dagster import (
    ConfigurableResource,
    DagsterEvent,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    JsonMetadataValue,
    RunFailureSensorContext,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    sensor,
)
from pydantic import Field

from snapshot_ops.alerts import (
    FRESHNESS_LIMIT,
    Alert,
    Notifier,
    failure_alert,
    notifier_for,
    overdue_by,
)
from snapshot_ops.jobs import snapshot_cleanup_job


class AlertNotifier(ConfigurableResource):
    """Where alerts go: the `snapshot_ops.alerts` log, or a webhook when a URL is set."""

    webhook_url: str | None = Field(
        default=None,
        description=(
            "Incoming-webhook URL that receives each alert as JSON with a `text` field "
            "(Slack-compatible). Set it through SNAPSHOT_OPS_ALERT_WEBHOOK_URL; unset: the log."
        ),
    )

    def notifier(self) -> Notifier:
        """The notifier this configuration names."""
        return notifier_for(self.webhook_url)


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


@run_failure_sensor(
    name="snapshot_cleanup_failure_alert",
    monitored_jobs=[snapshot_cleanup_job],
    default_status=DefaultSensorStatus.RUNNING,
    description="Sends an alert with the errors summary when a cleanup run fails.",
)
def snapshot_cleanup_failure_alert(context: RunFailureSensorContext, alerts: AlertNotifier) -> None:
    """Report a failed cleanup run and its errors through the configured notifier."""
    errors = failure_errors(list(context.get_step_failure_events()))
    if not errors and context.failure_event.message:
        errors = [context.failure_event.message]
    alert = failure_alert(context.dagster_run.job_name, context.dagster_run.run_id, errors)
    alerts.notifier().send(alert)
    context.log.info(f"alert sent: {alert.title} ({alert.error_count} errors)")


def last_successful_cleanup(instance: DagsterInstance) -> tuple[str, dt.datetime] | None:
    """Run id and end time of the latest successful cleanup run, if any."""
    records = instance.get_run_records(
        RunsFilter(job_name=snapshot_cleanup_job.name, statuses=[DagsterRunStatus.SUCCESS]),
        limit=1,
        order_by="update_timestamp",
        ascending=False,
    )
    if not records or records[0].end_time is None:
        return None
    return records[0].dagster_run.run_id, dt.datetime.fromtimestamp(records[0].end_time, dt.UTC)


def check_freshness(
    instance: DagsterInstance, cursor: str | None, now: dt.datetime
) -> tuple[Alert | None, str]:
    """The freshness decision: an alert if the cleanup is overdue (once per overdue spell),
    and the new cursor. The cursor keeps when watching began and what was last alerted."""
    state = json.loads(cursor) if cursor else {}
    watching_since = dt.datetime.fromisoformat(state.get("watching_since", now.isoformat()))
    last = last_successful_cleanup(instance)
    late = overdue_by(
        last_success=last[1] if last else None, watching_since=watching_since, now=now
    )
    spell = last[0] if last else "none"
    new_state = {"watching_since": watching_since.isoformat(), "alerted_for": None}
    if late is None:
        return None, json.dumps(new_state)
    new_state["alerted_for"] = spell
    if state.get("alerted_for") == spell:
        return None, json.dumps(new_state)  # already alerted for this overdue spell
    since = f"since {last[1].isoformat()}" if last else "since this check was enabled"
    hours = FRESHNESS_LIMIT.total_seconds() / 3600
    alert = Alert(
        kind="stale",
        title=(
            f"{snapshot_cleanup_job.name}: no successful cleanup for more than {hours:g} hours "
            f"({since}); is the schedule running and the daemon up?"
        ),
        job=snapshot_cleanup_job.name,
        run_id=last[0] if last else None,
    )
    return alert, json.dumps(new_state)


@sensor(
    name="snapshot_cleanup_freshness",
    minimum_interval_seconds=30 * 60,
    default_status=DefaultSensorStatus.STOPPED,
    description=(
        "Alerts when no cleanup run has succeeded for more than 36 hours. Enable it together "
        "with the daily schedule."
    ),
)
def snapshot_cleanup_freshness(
    context: SensorEvaluationContext, alerts: AlertNotifier
) -> SkipReason:
    """Check the age of the latest successful cleanup; alert once when it is overdue."""
    alert, cursor = check_freshness(context.instance, context.cursor, dt.datetime.now(dt.UTC))
    context.update_cursor(cursor)
    if alert is None:
        return SkipReason("the last successful cleanup is recent enough, or already alerted")
    alerts.notifier().send(alert)
    return SkipReason(f"alert sent: {alert.title}")
