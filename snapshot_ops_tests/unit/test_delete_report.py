"""Adding two `DeleteReport`s (one per batch, or a batch and the rows it kept or released)
adds every count and joins every list, in order: a run's report is the sum of its batches'
reports, and the refused rows of every batch are released by `release_refused`."""

from __future__ import annotations

import dataclasses

from snapshot_ops.cleanup import DeleteReport


def test_adding_reports_adds_every_count_and_joins_every_list():
    first = DeleteReport(
        removed=1, missing=2, bytes_reclaimed=300, errors=["e1"], kept_shared=["s1"],
        refused=["r1"], released=["l1"],
    )  # fmt: skip
    second = DeleteReport(
        removed=10, missing=20, bytes_reclaimed=3000, errors=["e2"], kept_shared=["s2"],
        refused=["r2"], released=["l2"],
    )  # fmt: skip

    total = first + second

    assert dataclasses.asdict(total) == {
        "removed": 11, "missing": 22, "bytes_reclaimed": 3300, "errors": ["e1", "e2"],
        "kept_shared": ["s1", "s2"], "refused": ["r1", "r2"], "released": ["l1", "l2"],
    }  # fmt: skip
    assert total.deleted_count == 33
    assert DeleteReport() + first == first
