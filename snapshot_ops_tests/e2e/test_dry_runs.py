"""A dry run is a faithful preview: it checks what the real run checks, stops where the real
run would stop (failing, with "dry run:" and the real run's reason), and lists exactly the
rows the real run would take, with the keys it would refuse listed apart.

Through the real job on PostgreSQL and SQLite with files on disk, each dry run next to the
real run with the same config, and rows, files and the journal checked to be untouched.
(A store that holds none of the objects: test_missing_objects.py.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from snapshot_ops.defs.jobs import DRY_RUN_STOP
from snapshot_ops_tests.support.jobs import failure_message, step_metadata
from snapshot_ops_tests.support.scenarios import DAY, state
from snapshot_ops_tests.support.world import World


def stop_reason(result: Any) -> str:
    """The description of the run's one failed step's Failure."""
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return failure.step_failure_data.user_failure_data.description


def failure_metadata(result: Any) -> dict[str, Any]:
    """The metadata of the run's one failed step's Failure, by key."""
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    metadata = failure.step_failure_data.user_failure_data.metadata
    return {k: v.value for k, v in metadata.items()}


def listed(result: Any, table: str = "wouldDelete") -> list[str]:
    """The fileIds of a dry run's listing, in its order."""
    return [
        r.data["fileId"]
        for r in step_metadata(result, "identify_expired_candidates")[table].records
    ]


def untouched(world: World, before: dict[str, tuple[bool, bool]]) -> bool:
    return state(world) == before and world.pending() == []


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"max_deletions": 1}, "4 snapshots are expired, more than max_deletions=1; nothing"),
        (
            {"max_deletions": 1, "work_down_backlog": True, "retention_days": 5},
            "work_down_backlog: true does not apply: retention_days=5 is shorter than",
        ),
    ],
    ids=["over-the-cap", "backlog-guard"],
)
def test_a_dry_run_over_the_cap_fails_as_the_real_run_stops(world, config, reason):
    expired = [world.add(age=(10 + n) * DAY) for n in range(4)]
    kept = world.add(age=DAY)
    before = state(world)

    dry = world.run(dry_run=True, **config)

    assert not dry.success
    message = stop_reason(dry)
    assert message.startswith(DRY_RUN_STOP) and reason in message
    figures = failure_metadata(dry)
    assert figures["realRunWouldStop"] == message and figures["candidates"] == 4
    assert "wouldDelete" not in figures  # the real run would delete none of them
    assert untouched(world, before)
    [log] = world.run_log()
    assert (log.status, bool(log.dry_run), log.marked_count) == ("failed", True, 0)
    assert json.loads(log.errors) == [message]

    real = world.run(**config)

    assert not real.success and message == DRY_RUN_STOP + stop_reason(real)
    assert untouched(world, before) and len(expired) == 4 and kept in before


def test_a_dry_run_under_the_cap_lists_and_counts_the_same_rows(world):
    expired = [world.add(age=(10 + n) * DAY) for n in range(4)]
    world.add(age=DAY)
    before = state(world)

    dry = world.run(dry_run=True, max_deletions=4)

    assert dry.success and untouched(world, before)
    assert listed(dry) == expired[::-1]  # oldest first, the order the run marks them
    assert dry.output_for_node("record_cleanup_run")["wouldDelete"] == 4
    figures = step_metadata(dry, "identify_expired_candidates")
    assert figures["storageLookups"] == 1 and listed(dry, "wouldRefuse") == []


def test_a_dry_run_working_a_backlog_down_lists_exactly_the_rows_the_run_takes(world):
    rows = [world.add(age=(10 + n) * DAY) for n in range(6)]  # newest first
    before = state(world)

    dry = world.run(dry_run=True, max_deletions=4, work_down_backlog=True)

    assert dry.success and untouched(world, before)
    assert listed(dry) == rows[:1:-1]  # the 4 oldest, oldest first
    assert dry.output_for_node("record_cleanup_run")["wouldDelete"] == 4
    assert step_metadata(dry, "identify_expired_candidates")["backlogLeft"] == 2

    real = world.run(max_deletions=4, work_down_backlog=True)

    assert real.success
    assert {i for i, (marked, _) in state(world).items() if marked} == set(listed(dry))


def test_a_dry_run_lists_a_key_the_real_run_refuses_apart(world, tmp_path: Path):
    expired = [world.add(age=(10 + n) * DAY) for n in range(3)]
    outside = tmp_path / "outside.pdf"
    outside.write_bytes(b"keep")
    (world.root / "links").mkdir()
    (world.root / "links" / "l.pdf").symlink_to(outside)
    link = world.add(age=30 * DAY, key="links/l.pdf", with_file=False)
    before = state(world)

    dry = world.run(dry_run=True)

    # The listing leaves the symlink out and names it apart with the run's reason; the dry
    # run ends as the real run does, failed naming it, with everything as it was.
    assert listed(dry) == expired[::-1]
    [refused] = step_metadata(dry, "identify_expired_candidates")["wouldRefuse"].records
    assert (refused.data["fileId"], refused.data["storageKey"]) == (link, "links/l.pdf")
    assert "symlink" in refused.data["reason"]
    assert not dry.success
    message = stop_reason(dry)
    assert message.startswith("dry run: a real run would finish with 1 error(s)")
    assert f"refused {link}" in message
    assert untouched(world, before) and outside.read_bytes() == b"keep"

    real = world.run()

    assert not real.success and f"refused {link}" in failure_message(real)
    assert {i for i, (marked, _) in state(world).items() if marked} == set(expired)
    assert state(world)[link] == (False, True) and outside.read_bytes() == b"keep"  # live, kept
