"""Settings read from the environment that more than one module needs, checked in one place.

- SNAPSHOT_OPS_TIMEZONE: the IANA timezone of the daily schedule, and so of the "day" that
  the storage figures are counted in (default UTC).
- SNAPSHOT_OPS_SLACK_TOKEN + SNAPSHOT_OPS_SLACK_CHANNEL, SNAPSHOT_OPS_TEAMS_WEBHOOK_URL,
  SNAPSHOT_OPS_WEBSERVER_URL: where alerts go; see `alert_settings`.
- SNAPSHOT_OPS_RANGES: how many key ranges a cleanup run splits its candidates into, each
  marked and deleted by its own step (default 1); see `cleanup_ranges`.
- SNAPSHOT_OPS_NAIVE_TIME_ZONE: the zone whose wall time naive "createdAt"/"deletedAt"
  values hold (default auto); see `naive_time_zone`.
- SNAPSHOT_OPS_UNUSED_COLUMN_DEFAULTS: the time columns whose default the application never
  uses (default none); see `unused_column_defaults`.

The settings that build Dagster objects live with them: SNAPSHOT_OPS_EXECUTOR in
`snapshot_ops.defs.executors`, SNAPSHOT_OPS_S3_<FIELD> in `snapshot_ops.defs.resources`.
Every process of a deployment (webserver, daemon, run workers, Celery workers) must see the
same values.
"""

import datetime as dt
import os
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from snapshot_ops.errors import ConfigError

#: The first day the daily storage figures can be materialized for (a backfill cannot go back
#: further); the job keeps no run log before it was installed, so earlier days are empty.
FIRST_REPORTED_DAY = dt.date(2024, 1, 1)


def schedule_timezone(value: str | None = None) -> str:
    """The IANA timezone the schedule runs in, checked so a typo fails at load time."""
    name = value if value is not None else os.environ.get("SNAPSHOT_OPS_TIMEZONE", "") or "UTC"
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"SNAPSHOT_OPS_TIMEZONE={name!r} is not an IANA timezone such as Europe/London"
        ) from exc
    return name


@dataclass(frozen=True)
class AlertSettings:
    """Where alerts go, from the environment (see `alert_settings`). Both destinations may be
    set; with neither, alerts go to the `snapshot_ops.alerts` log."""

    slack_token: str | None = None
    slack_channel: str | None = None
    teams_webhook_url: str | None = None
    webserver_url: str | None = None

    @property
    def slack(self) -> bool:
        return bool(self.slack_token and self.slack_channel)

    @property
    def teams(self) -> bool:
        return bool(self.teams_webhook_url)


def alert_settings(environ: Mapping[str, str] | None = None) -> AlertSettings:
    """Alert destinations from `environ` (default os.environ):

    - SNAPSHOT_OPS_SLACK_TOKEN and SNAPSHOT_OPS_SLACK_CHANNEL: a Slack bot token (xoxb-...)
      with the chat:write scope, and the channel it posts to (e.g. #ops-alerts).
    - SNAPSHOT_OPS_TEAMS_WEBHOOK_URL: a Microsoft Teams incoming-webhook (or Workflows) URL.
    - SNAPSHOT_OPS_WEBSERVER_URL: optional base URL of the Dagster UI, for a link to the run.

    Raises ConfigError when only one of the two Slack settings is set, when the Teams URL is
    not http(s) (the URL itself is never repeated: it holds a secret), or when the replaced
    SNAPSHOT_OPS_ALERT_WEBHOOK_URL is still set (so alerts are not silently lost).
    """
    env = os.environ if environ is None else environ

    def read(name: str) -> str | None:
        return env.get(name, "").strip() or None

    if read("SNAPSHOT_OPS_ALERT_WEBHOOK_URL"):
        raise ConfigError(
            "SNAPSHOT_OPS_ALERT_WEBHOOK_URL is no longer read: set SNAPSHOT_OPS_TEAMS_WEBHOOK_URL "
            "for Microsoft Teams, or SNAPSHOT_OPS_SLACK_TOKEN and SNAPSHOT_OPS_SLACK_CHANNEL for "
            "Slack, and unset it"
        )
    settings = AlertSettings(
        slack_token=read("SNAPSHOT_OPS_SLACK_TOKEN"),
        slack_channel=read("SNAPSHOT_OPS_SLACK_CHANNEL"),
        teams_webhook_url=read("SNAPSHOT_OPS_TEAMS_WEBHOOK_URL"),
        webserver_url=(read("SNAPSHOT_OPS_WEBSERVER_URL") or "").rstrip("/") or None,
    )
    if bool(settings.slack_token) != bool(settings.slack_channel):
        raise ConfigError(
            "Slack alerts need both SNAPSHOT_OPS_SLACK_TOKEN and SNAPSHOT_OPS_SLACK_CHANNEL"
        )
    if settings.teams_webhook_url and not settings.teams_webhook_url.startswith(
        ("https://", "http://")
    ):
        raise ConfigError("SNAPSHOT_OPS_TEAMS_WEBHOOK_URL must start with https:// or http://")
    return settings


#: Most ranges a run may be split into: each is a step, and steps are not free.
MAX_RANGES = 64


def cleanup_ranges(value: int | str | None = None) -> int:
    """How many key ranges a cleanup run splits its candidates into: `value` (the run
    config's `ranges`) if given, else SNAPSHOT_OPS_RANGES, else 1.

    Each range is a step (`mark_and_delete_expired[range_N]`) that another worker can run
    at the same time; one range is the whole key space in one step, as a run on one
    machine wants. A run with fewer candidates than ranges uses fewer. Raises ConfigError
    for anything but a whole number from 1 to MAX_RANGES.
    """
    raw = value if value is not None else os.environ.get("SNAPSHOT_OPS_RANGES", "")
    text = str(raw).strip() or "1"
    try:
        ranges = int(text)
    except ValueError:
        ranges = 0
    if not 1 <= ranges <= MAX_RANGES:
        source = "ranges" if value is not None else "SNAPSHOT_OPS_RANGES"
        raise ConfigError(
            f"{source}={raw!r} is not a whole number from 1 to {MAX_RANGES} (unset means 1)"
        )
    return ranges


def naive_time_zone(value: str | None = None) -> str:
    """The zone naive times are read and written in (snapshot_ops.naivezone): `value` (the
    database resource's `naive_time_zone`) if given, else SNAPSHOT_OPS_NAIVE_TIME_ZONE, else
    auto. Checked where it is used (naivezone.check_naive_time_zone)."""
    if value is not None:
        return value
    return os.environ.get("SNAPSHOT_OPS_NAIVE_TIME_ZONE", "").strip() or "auto"


def unused_column_defaults(value: Sequence[str] | None = None) -> tuple[str, ...]:
    """The time columns whose default the application never uses, so that their defaults
    are not taken as evidence of the zone of naive times (snapshot_ops.naivezone): `value`
    (the database resource's `unused_column_defaults`) if given, else the comma-separated
    names in SNAPSHOT_OPS_UNUSED_COLUMN_DEFAULTS (e.g. `createdAt`), else none. Checked
    where it is used (naivezone.check_unused_column_defaults)."""
    if value is not None:
        return tuple(value)
    raw = os.environ.get("SNAPSHOT_OPS_UNUSED_COLUMN_DEFAULTS", "")
    return tuple(name.strip() for name in raw.split(",") if name.strip())
