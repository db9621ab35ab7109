"""The crash checkpoints are inert in production: without SNAPSHOT_OPS_CRASH_AT, or with it
naming another checkpoint or a later arrival, `reached` returns and the process lives on.
(That they do kill the process when asked is what test_crash_recovery.py relies on.)"""

from __future__ import annotations

from snapshot_ops import checkpoints


def test_unset_does_nothing(monkeypatch):
    monkeypatch.delenv(checkpoints.CRASH_AT, raising=False)
    checkpoints.reset()
    for name in checkpoints.NAMES:
        assert checkpoints.reached(name) is None


def test_other_checkpoint_or_later_arrival_does_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv(checkpoints.CRASH_AT, "after_settle:3")
    monkeypatch.setenv(checkpoints.CRASH_ACTION, "kill")
    checkpoints.reset()
    checkpoints.reached("before_delete")
    checkpoints.reached("after_settle")
    checkpoints.reached("after_settle")  # the third arrival would kill: not reached here
    checkpoints.reset()


def test_pause_waits_for_the_flag_to_go(monkeypatch, tmp_path):
    monkeypatch.setenv(checkpoints.CRASH_AT, "before_record")
    monkeypatch.setenv(checkpoints.CRASH_ACTION, f"pause:{tmp_path}")
    monkeypatch.setattr(checkpoints, "PAUSE_LIMIT_SECONDS", 0.2)
    checkpoints.reset()
    checkpoints.reached("before_record")  # nobody removes the flag: returns at the limit
    assert (tmp_path / "paused").exists()
    checkpoints.reset()
