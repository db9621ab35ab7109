"""A pytest plugin for mutation runs: each mutant's tests run quickest files first.

mutmut hands pytest the tests that reach a mutated function in no set order and stops at
the first failure (`-x`), so a mutant the tests catch costs the time of every test run
before the first that fails. Most mutants fail the first test that reaches them, so
running quick tests first makes those cheap; a survivor runs every test either way.

The order comes from mutmut's record of the unmutated run (`mutmut-stats.json` in the
folder pytest runs in, `duration_by_test`: seconds per test id). Files stay whole, so a
module's fixtures are set up once, and go by the mean duration of their tests; within a
file the tests go by their own duration. A test the record lacks counts as the slowest.
Without the record (mutmut's first run, which makes it) the order is left as collected.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

import pytest

STATS = Path("mutmut-stats.json")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not STATS.exists():
        return
    seconds: dict[str, float] = json.loads(STATS.read_text())["duration_by_test"]
    slowest = max(seconds.values(), default=0.0)
    duration = {item.nodeid: seconds.get(item.nodeid, slowest) for item in items}
    by_file: defaultdict[Path, list[float]] = defaultdict(list)
    for item in items:
        by_file[item.path].append(duration[item.nodeid])
    mean = {path: statistics.fmean(durations) for path, durations in by_file.items()}
    items.sort(key=lambda item: (mean[item.path], str(item.path), duration[item.nodeid]))
