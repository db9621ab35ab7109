"""Alerts a team acts on: what they say, where they go, and when the cleanup is overdue.

No Dagster here: the sensors in sensors.py decide *when* to alert and call into this module.
A notifier is pluggable: the log by default, or a webhook (Slack-style JSON with a `text`
field) when SNAPSHOT_OPS_ALERT_WEBHOOK_URL is set.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

from snapshot_ops.errors import SnapshotOpsError

log = logging.getLogger(__name__)

#: No successful cleanup for longer than this is an alert (the job runs daily).
FRESHNESS_LIMIT = dt.timedelta(hours=36)
#: How many error messages an alert carries; the count always covers all of them.
MAX_ALERT_ERRORS = 20


class AlertError(SnapshotOpsError):
    """An alert could not be delivered."""


@dataclass(frozen=True)
class Alert:
    """One alert: a short title, the run it is about, and the errors behind it."""

    kind: str  # "run_failure" or "stale"
    title: str
    job: str
    run_id: str | None = None
    errors: list[str] = field(default_factory=list)
    error_count: int = 0

    def text(self) -> str:
        """The alert as one readable message (what a chat channel shows)."""
        lines = [self.title]
        if self.run_id:
            lines.append(f"run: {self.run_id}")
        if self.errors:
            lines.append(f"errors ({self.error_count}):")
            lines += [f"- {e}" for e in self.errors]
            if self.error_count > len(self.errors):
                lines.append(f"- and {self.error_count - len(self.errors)} more")
        return "\n".join(lines)

    def payload(self) -> dict[str, object]:
        """JSON body for a webhook: `text` for chat tools, the fields for machines."""
        return {"text": self.text(), **asdict(self)}


def failure_alert(job: str, run_id: str, errors: list[str]) -> Alert:
    """The alert for a failed cleanup run, its errors summarised."""
    unique = list(dict.fromkeys(e for e in errors if e))
    return Alert(
        kind="run_failure",
        title=f"{job} failed",
        job=job,
        run_id=run_id,
        errors=unique[:MAX_ALERT_ERRORS],
        error_count=len(unique),
    )


class Notifier(ABC):
    """Where alerts go."""

    @abstractmethod
    def send(self, alert: Alert) -> None:
        """Deliver one alert, or raise AlertError."""


class LogNotifier(Notifier):
    """Writes alerts to the `snapshot_ops.alerts` logger at ERROR level (the default)."""

    def send(self, alert: Alert) -> None:
        log.error("ALERT %s", alert.text())


class WebhookNotifier(Notifier):
    """POSTs each alert as JSON to a URL (e.g. a Slack or Teams incoming webhook)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise AlertError("the alert webhook URL must start with http:// or https://")
        self.url = url
        self.timeout = timeout

    def send(self, alert: Alert) -> None:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(alert.payload()).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            # The URL may hold a secret token: name the failure, never the URL.
            raise AlertError(f"alert webhook did not accept the alert: {exc}") from exc


def notifier_for(webhook_url: str | None) -> Notifier:
    """The webhook notifier when a URL is configured, else the log."""
    return WebhookNotifier(webhook_url) if webhook_url else LogNotifier()


def overdue_by(
    *,
    last_success: dt.datetime | None,
    watching_since: dt.datetime,
    now: dt.datetime,
    limit: dt.timedelta = FRESHNESS_LIMIT,
) -> dt.timedelta | None:
    """How far past `limit` the cleanup is, or None while it is fresh.

    The clock starts at the last successful run, or when watching began if there was none,
    so enabling the check on a new deployment does not alert at once.
    """
    since = last_success if last_success is not None else watching_since
    age = now - since
    return age - limit if age > limit else None
