"""Settings read from the environment that more than one module needs, checked in one place.

- SNAPSHOT_OPS_TIMEZONE: the IANA timezone of the daily schedule, and so of the "day" that
  the storage figures are counted in (default UTC).
- SNAPSHOT_OPS_EXECUTOR: where the cleanup job's steps run (default in_process); see
  `job_executor`. With `celery`, also SNAPSHOT_OPS_CELERY_BROKER (required),
  SNAPSHOT_OPS_CELERY_BACKEND (default rpc://) and SNAPSHOT_OPS_CELERY_QUEUE (default dagster).
- SNAPSHOT_OPS_SLACK_TOKEN + SNAPSHOT_OPS_SLACK_CHANNEL, SNAPSHOT_OPS_TEAMS_WEBHOOK_URL,
  SNAPSHOT_OPS_WEBSERVER_URL: where alerts go; see `alert_settings`.
- SNAPSHOT_OPS_RANGES: how many key ranges a cleanup run splits its candidates into, each
  marked and deleted by its own step (default 1); see `cleanup_ranges`.
- SNAPSHOT_OPS_S3_<FIELD> (e.g. SNAPSHOT_OPS_S3_ENDPOINT_URL): fields of dagster-aws's
  S3Resource for an s3:// storage URL; see `storage_s3_resource`.

Every process of a deployment (webserver, daemon, run workers, Celery workers) must see the
same values: the executor is fixed when the job's module is imported.
"""

import datetime as dt
import os
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass

from dagster import (
    ConfigurableResource,
    EnvVar,
    ExecutorDefinition,
    in_process_executor,
    multiprocess_executor,
)

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


#: The values SNAPSHOT_OPS_EXECUTOR accepts.
EXECUTORS = ("in_process", "multiprocess", "celery", "k8s")
#: The Celery queue steps are sent to when SNAPSHOT_OPS_CELERY_QUEUE is unset (dagster-celery's).
DEFAULT_CELERY_QUEUE = "dagster"


def job_executor(value: str | None = None) -> ExecutorDefinition:
    """The Dagster executor of the cleanup job, named by SNAPSHOT_OPS_EXECUTOR (or `value`).

    - `in_process` (default): every step in the run's own process; a step costs milliseconds.
    - `multiprocess`: each step in its own child process of the run (about a second each).
    - `celery`: each step is a task on a Celery broker, run by `dagster-celery worker start`
      workers. Its broker and result backend come from SNAPSHOT_OPS_CELERY_BROKER and
      SNAPSHOT_OPS_CELERY_BACKEND, read when a run starts (so a password in the URL never shows
      in the run's config); steps go to the queue SNAPSHOT_OPS_CELERY_QUEUE, which the workers
      must listen on (`-q`). Needs the `celery` extra (dagster-celery).
    - `k8s`: each step in its own Kubernetes Job (dagster-k8s's `k8s_job_executor`, configured
      by the run launcher and the run's `execution` config). Needs the `k8s` extra.

    Every executor but `in_process` passes op outputs between processes through the job's IO
    manager, by default pickles under the instance's storage folder ($DAGSTER_HOME/storage).

    Raises ConfigError naming the allowed values for any other value, or naming the extra to
    install when its package is missing.
    """
    name = value if value is not None else os.environ.get("SNAPSHOT_OPS_EXECUTOR", "")
    name = name.strip() or "in_process"
    if name == "in_process":
        return in_process_executor
    if name == "multiprocess":
        return multiprocess_executor
    if name == "celery":
        try:
            from dagster_celery import celery_executor
        except ImportError as exc:
            raise _missing_extra(name, "celery", "dagster-celery") from exc
        queue = os.environ.get("SNAPSHOT_OPS_CELERY_QUEUE", "").strip() or DEFAULT_CELERY_QUEUE
        backend = os.environ.get("SNAPSHOT_OPS_CELERY_BACKEND", "").strip()
        return celery_executor.configured(
            {
                "broker": {"env": "SNAPSHOT_OPS_CELERY_BROKER"},
                "backend": {"env": "SNAPSHOT_OPS_CELERY_BACKEND"} if backend else "rpc://",
                "config_source": {"task_default_queue": queue},
            },
            name="celery",
        )
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:
            raise _missing_extra(name, "k8s", "dagster-k8s") from exc
        return k8s_job_executor
    raise ConfigError(
        f"SNAPSHOT_OPS_EXECUTOR={name!r} is not one of {', '.join(EXECUTORS)} "
        "(unset means in_process)"
    )


def _missing_extra(name: str, extra: str, package: str) -> ConfigError:
    return ConfigError(
        f"SNAPSHOT_OPS_EXECUTOR={name} needs the {package} package: install snapshot_ops "
        f"with its [{extra}] extra, e.g. pip install -c constraints.txt -e '.[{extra}]'"
    )


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


#: The fields of dagster-aws's S3Resource a deployment sets through SNAPSHOT_OPS_S3_<FIELD>.
S3_RESOURCE_FIELDS = (
    "region_name",
    "endpoint_url",
    "profile_name",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
)


def storage_s3_resource(environ: Mapping[str, str] | None = None) -> ConfigurableResource | None:
    """dagster-aws's S3Resource for the storage, when SNAPSHOT_OPS_STORAGE_URL is s3://;
    else None.

    Each field of S3_RESOURCE_FIELDS whose SNAPSHOT_OPS_S3_<FIELD> variable is set (e.g.
    SNAPSHOT_OPS_S3_ENDPOINT_URL, SNAPSHOT_OPS_S3_AWS_ACCESS_KEY_ID) is given as an EnvVar:
    read when a run starts and shown by its name only, never its value. Fields left unset
    fall back to boto3's standard chain (AWS_* variables, profile, role). Other stores get
    None, so loading their definitions does not import dagster-aws and boto3.
    """
    env = os.environ if environ is None else environ
    if not env.get("SNAPSHOT_OPS_STORAGE_URL", "").strip().startswith("s3://"):
        return None
    from dagster_aws.s3 import S3Resource

    names = {field: f"SNAPSHOT_OPS_S3_{field.upper()}" for field in S3_RESOURCE_FIELDS}
    return S3Resource(**{field: EnvVar(name) for field, name in names.items() if env.get(name)})
