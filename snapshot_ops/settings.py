"""Settings read from the environment that more than one module needs, checked in one place.

- SNAPSHOT_OPS_TIMEZONE: the IANA timezone of the daily schedule, and so of the "day" that
  the storage figures are counted in (default UTC).
"""

import datetime as dt
import os
import zoneinfo

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
