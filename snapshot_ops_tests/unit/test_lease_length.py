"""A batch's lease is LEASE_SAFETY_FACTOR x attempts x (connect + read timeout + backoff),
never less than MIN_LEASE (cleanup.lease_length): longer than the store can take to answer,
so no live run loses the entries it is deleting."""

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
