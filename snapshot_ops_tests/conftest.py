"""The tests' shared fixtures (see support/), the tier of each test, and the local time zone
the suite runs in.

A test's tier is the folder it is in (unit/, integration/, e2e/) unless it carries a tier
marker of its own: `pytest -m unit` (or `integration`, `e2e`) selects it by that marker.
"""

from __future__ import annotations

import os
import time

import pytest

# In this order: each imports the ones before it (so pytest can rewrite their asserts).
pytest_plugins = [
    "snapshot_ops_tests.support.stores",
    "snapshot_ops_tests.support.databases",
    "snapshot_ops_tests.support.operations",
    "snapshot_ops_tests.support.ntfs",
]

TIERS = ("unit", "integration", "e2e")

#: The suite runs as a worker whose local time zone is neither UTC nor a whole number of
#: hours from it, so a naive local clock where the job means UTC (`datetime.now()` without
#: a zone) moves leases, backoffs and run times by 5 h 30 min and fails the tests that
#: check them. The processes the tests start inherit it.
WORKER_TIME_ZONE = "Asia/Kolkata"
#: The suite's application (support/world.py) writes UTC wall time where it writes naive
#: times (SQLAlchemy's DateTime on SQLite), and states it as a deployment does. Without it
#: the job would refuse those rows: SQLite keeps no zone, so there `auto` refuses any naive
#: value (snapshot_ops.naivezone). The tests of that refusal and of the other settings
#: (test_naive_time_zones.py) set or remove it themselves.
NAIVE_TIME_ZONE = "UTC"


def pytest_configure(config: pytest.Config) -> None:
    os.environ["TZ"] = WORKER_TIME_ZONE
    time.tzset()
    os.environ["SNAPSHOT_OPS_NAIVE_TIME_ZONE"] = NAIVE_TIME_ZONE


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test without a tier marker with the tier of its folder."""
    for item in items:
        if any(item.get_closest_marker(tier) for tier in TIERS):
            continue
        folder = item.path.parent.name
        if folder in TIERS:
            item.add_marker(folder)
