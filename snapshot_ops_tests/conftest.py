"""The tests' shared fixtures (see support/) and the tier of each test.

A test's tier is the folder it is in (unit/, integration/, e2e/) unless it carries a tier
marker of its own: `pytest -m unit` (or `integration`, `e2e`) selects it by that marker.
"""

from __future__ import annotations

import pytest

# In this order: each imports the ones before it (so pytest can rewrite their asserts).
pytest_plugins = [
    "snapshot_ops_tests.support.stores",
    "snapshot_ops_tests.support.databases",
    "snapshot_ops_tests.support.operations",
]

TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test without a tier marker with the tier of its folder."""
    for item in items:
        if any(item.get_closest_marker(tier) for tier in TIERS):
            continue
        folder = item.path.parent.name
        if folder in TIERS:
            item.add_marker(folder)
