"""Alerts a team acts on: what they say, and where the freshness alert goes.

The failure alert is delivered by Dagster's own integrations (dagster-slack's and
dagster-msteams' run-failure sensors, built in sensors.py); this module writes its message.
The freshness alert has no such factory in open-source Dagster, so sensors.py sends it
through the notifiers here, which post with the same clients: slack_sdk's WebClient and
dagster-msteams' TeamsClient. With neither configured, alerts go to the log.
"""

from __future__ import annotations

import datetime as dt
import logging
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from snapshot_ops.settings import AlertSettings

if TYPE_CHECKING:
    # The clients (slack_sdk, and requests under dagster-msteams: some 150 modules) are
    # imported where a configured destination needs them, not when the code location loads:
    # every process that loads it (each run, the webserver, the daemon) would pay for them,
    # at start and again at exit.
    from dagster_msteams.client import TeamsClient
    from slack_sdk import WebClient

# The name operators configure and read (docs/operations.md), kept when the module moved.
log = logging.getLogger("snapshot_ops.alerts")

#: No cleanup run logged for longer than this is an alert (the job runs daily, so this
#: allows one missed or late run before alerting). The asset's freshness policy uses it.
FRESHNESS_LIMIT = dt.timedelta(hours=36)
#: How many error messages an alert lists; the count always covers all of them.
MAX_ALERT_ERRORS = 20
#: How much of one error message an alert shows, in characters.
MAX_ERROR_CHARS = 500
#: The longest message, in characters: Slack refuses a section block's text over 3,000
#: characters (Block Kit reference, "Section block"), and the failure message is one.
MAX_MESSAGE_CHARS = 3000


def failure_text(job: str, run_id: str, errors: list[str], known: str = "") -> str:
    """The failure alert's message: the job, the run and its errors, one per line, repeats
    dropped, each cut at MAX_ERROR_CHARS; at most MAX_ALERT_ERRORS of them and never over
    MAX_MESSAGE_CHARS in all, the rest counted as "and N more".

    `errors` are the run's own failures, what is new. `known` (when not empty) says what
    is already known and not listed: failed deletes of earlier runs waiting out their
    backoff, which this run did not retry (see `known_text`); it comes before the errors,
    cut at MAX_ERROR_CHARS."""
    unique = list(dict.fromkeys(e.strip() for e in errors if e and e.strip()))
    head = [f"{job} failed", f"run: {run_id}"]
    if known:
        head.append(known if len(known) <= MAX_ERROR_CHARS else known[: MAX_ERROR_CHARS - 1] + "…")
    if not unique:
        return "\n".join(head)
    head.append(f"errors ({len(unique)}):")
    lines: list[str] = []
    for error in unique[:MAX_ALERT_ERRORS]:
        shown = error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 1] + "…"
        candidate = [*head, *lines, f"- {shown}", f"- and {len(unique)} more"]
        if len("\n".join(candidate)) > MAX_MESSAGE_CHARS:
            break
        lines.append(f"- {shown}")
    if len(lines) < len(unique):
        lines.append(f"- and {len(unique) - len(lines)} more")
    return "\n".join([*head, *lines])


def known_text(backing_off: int, oldest: str) -> str:
    """The alert's line on known failures (`failure_text`'s `known`): `backing_off` failed
    deletes waiting out their backoff, `oldest` the one waiting longest; "" when none."""
    if backing_off <= 0:
        return ""
    return (
        f"known, not listed: {backing_off} failed delete(s) of earlier runs wait out their "
        f"backoff (not retried by this run; asset check no_pending_deletes_backing_off); "
        f"oldest: {oldest}"
    )


class Notifier(ABC):
    """Where the freshness alert goes."""

    @abstractmethod
    def send(self, text: str) -> None:
        """Deliver one message; raises the client's error if it is refused."""


class LogNotifier(Notifier):
    """Writes alerts to the `snapshot_ops.alerts` logger at ERROR level (the default)."""

    def send(self, text: str) -> None:
        log.error("ALERT %s", text)


class SlackNotifier(Notifier):
    """Posts to a Slack channel with chat.postMessage (raises slack_sdk's SlackApiError)."""

    def __init__(self, client: WebClient, channel: str) -> None:
        self.client = client
        self.channel = channel

    def send(self, text: str) -> None:
        self.client.chat_postMessage(channel=self.channel, text=text)


class TeamsNotifier(Notifier):
    """Posts a card to a Microsoft Teams webhook, the card dagster-msteams' failure sensor
    sends (raises requests' RequestException when refused)."""

    def __init__(self, client: TeamsClient) -> None:
        self.client = client

    def send(self, text: str) -> None:
        from dagster_msteams import Card
        from dagster_msteams.adaptive_card import AdaptiveCard

        card = Card() if self.client.is_legacy_webhook() else AdaptiveCard()
        card.add_attachment(text)
        self.client.post_message(card.payload)


def notifiers(settings: AlertSettings) -> list[Notifier]:
    """One notifier per configured destination, or the log when none is."""
    found: list[Notifier] = []
    if settings.slack:
        from slack_sdk import WebClient

        found.append(SlackNotifier(WebClient(token=settings.slack_token), settings.slack_channel))
    if settings.teams:
        from dagster_msteams.client import TeamsClient

        found.append(TeamsNotifier(TeamsClient(hook_url=settings.teams_webhook_url, timeout=30)))
    return found or [LogNotifier()]


def overdue_by(
    *,
    since: dt.datetime,
    now: dt.datetime,
    limit: dt.timedelta = FRESHNESS_LIMIT,
) -> dt.timedelta | None:
    """How far past `limit` a clock started at `since` is at `now`, or None within it."""
    age = now - since
    return age - limit if age > limit else None
