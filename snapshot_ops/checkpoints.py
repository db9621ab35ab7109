"""Named points in a run where a crash test can stop the process; inert unless asked to.

Crash tests must kill a real process at an exact step (between marking and deleting, after
the store deleted a batch but before the journal heard of it, ...). Random-time kills reach
those instants only by luck, so the run calls `reached("name")` at each such point, and a
test sets two environment variables on the process it starts:

- `SNAPSHOT_OPS_CRASH_AT=name` or `name:n`: act the n-th time (default 1st) `name` is reached.
- `SNAPSHOT_OPS_CRASH_ACTION`: `kill` (default) sends SIGKILL to the process itself, as a
  power cut or an OOM kill would; `pause:<folder>` creates `<folder>/paused` and waits until
  the test deletes it (so a test can, e.g., drop the database connection at that instant).

With `SNAPSHOT_OPS_CRASH_AT` unset (production), `reached` only reads the environment.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import Counter
from pathlib import Path

log = logging.getLogger(__name__)

CRASH_AT = "SNAPSHOT_OPS_CRASH_AT"
CRASH_ACTION = "SNAPSHOT_OPS_CRASH_ACTION"
#: Every checkpoint a run passes, in order; tests iterate over these.
NAMES = (
    "after_select",  # candidates counted and the run logged; nothing marked yet
    "after_mark_batch",  # a batch of rows is marked and journaled (committed)
    "before_delete",  # a batch is marked and committed; its objects not yet deleted
    "after_store_delete",  # the store deleted a batch; its journal entries are not settled
    "after_settle",  # a batch's journal entries are settled (committed)
    "before_record",  # all deletes done; the run log not yet written
)
PAUSE_LIMIT_SECONDS = 120.0

_arrivals: Counter[str] = Counter()


def reached(name: str) -> None:
    """Note that the run is at checkpoint `name`; crash or pause here if a test asked to."""
    wanted = os.environ.get(CRASH_AT)
    if not wanted:
        return
    target, _, nth = wanted.partition(":")
    if target != name:
        return
    _arrivals[name] += 1
    if _arrivals[name] != (int(nth) if nth else 1):
        return
    action = os.environ.get(CRASH_ACTION, "kill")
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("pause:"):
        flag = Path(action.removeprefix("pause:")) / "paused"
        flag.touch()
        log.warning("paused at checkpoint %s until %s is removed", name, flag)
        deadline = time.monotonic() + PAUSE_LIMIT_SECONDS
        while flag.exists() and time.monotonic() < deadline:
            time.sleep(0.02)


def reset() -> None:
    """Forget arrivals (for in-process tests that run the job more than once)."""
    _arrivals.clear()
