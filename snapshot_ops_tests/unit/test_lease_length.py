"""A batch's lease is LEASE_SAFETY_FACTOR x attempts x (connect + read timeout + backoff),
never less than MIN_LEASE (cleanup.lease_length): longer than the store can take to answer,
so no live run loses the entries it is deleting. And the progress line a long loop logs
says what is left only when it can tell."""

from __future__ import annotations

import datetime as dt

import pytest

from snapshot_ops.cleanup import LEASE_SAFETY_FACTOR, MIN_LEASE, lease_length


@pytest.mark.parametrize(
    ("attempts", "connect", "read", "backoff", "seconds"),
    [
        (5, 10.0, 60.0, 2.0, 3 * 5 * 72.0),  # every term counts
        (10, 10.0, 20.0, 0.0, 3 * 10 * 30.0),
        (1, 1.0, 1.0, 1.0, MIN_LEASE.total_seconds()),  # the floor
    ],
)
def test_the_lease_outlasts_every_attempt_of_a_batch(attempts, connect, read, backoff, seconds):
    assert LEASE_SAFETY_FACTOR == 3
    lease = lease_length(
        max_attempts=attempts,
        connect_timeout_seconds=connect,
        read_timeout_seconds=read,
        retry_backoff_seconds=backoff,
    )
    assert lease == dt.timedelta(seconds=seconds)


def test_without_a_backoff_only_the_timeouts_count():
    lease = lease_length(max_attempts=10, connect_timeout_seconds=10.0, read_timeout_seconds=20.0)
    assert lease == dt.timedelta(minutes=15)


def test_progress_says_how_long_is_left_only_when_it_can_tell():
    from snapshot_ops.cleanup import Progress

    assert Progress(marked=1_500, deleted=1_000, total=6_000, elapsed_seconds=3).describe() == (
        "1,500 rows marked, 1,000 objects deleted of 6,000 in 3 s (500 rows/s, about 9 s left)"
    )
    # No total (or no rate yet): nothing about what is left.
    assert Progress(marked=0, deleted=20, total=None, elapsed_seconds=4).describe() == (
        "0 rows marked, 20 objects deleted in 4 s (5 rows/s)"
    )
    assert Progress(marked=0, deleted=0, total=10, elapsed_seconds=0).describe() == (
        "0 rows marked, 0 objects deleted of 10 in 0 s (0 rows/s)"
    )
