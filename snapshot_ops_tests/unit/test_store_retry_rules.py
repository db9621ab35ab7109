"""Which failures a batch answer gives one key are passing, and how long such a key waits.

S3 (`s3.key_retry`): botocore's standard retry mode judges each `<Error>` code of a
DeleteObjects answer as it judges a whole request with that code and the status the S3
error-code list gives it: `InternalError`, `ServiceUnavailable`, `SlowDown` and
`RequestTimeout` are passing, `AccessDenied` and `NotImplemented` (501) are not; the wait is
its full-jitter backoff (1 s base for throttling, 50 ms otherwise), and the last attempt
gets none. Azure (`azure_blob.key_retry`): a sub-response is passing when the SDK would
retry that status (408, 5xx but 501 and 505), and waits the SDK's exponential backoff built
from the storage settings. Both stop at max_attempts tries. No service is needed: the S3
client is built offline from botocore's bundled service model.
"""

from __future__ import annotations

import boto3
import pytest

from snapshot_ops.storage.azure_blob import key_retry as azure_key_retry
from snapshot_ops.storage.azure_blob import retry_policy
from snapshot_ops.storage.base import KeyFailure
from snapshot_ops.storage.s3 import key_retry as s3_key_retry

#: Draws enough waits to see their whole range in practice; each is checked against it.
DRAWS = 50


@pytest.fixture(scope="module")
def s3_rule():
    client = boto3.session.Session().client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="unit-test",
        aws_secret_access_key="unit-test",
    )
    return s3_key_retry(client, max_attempts=4)


@pytest.mark.parametrize(
    ("code", "scale"),
    [("SlowDown", 1.0), ("InternalError", 0.05), ("ServiceUnavailable", 0.05)],
)
def test_s3_passing_codes_wait_botocores_backoff(s3_rule, code, scale):
    assert s3_rule.attempts == 4
    for attempt, bound in ((1, scale), (2, 2 * scale), (3, 4 * scale)):
        waits = [s3_rule.after(KeyFailure(code), attempt) for _ in range(DRAWS)]
        assert all(wait is not None and 0 <= wait <= bound for wait in waits), (code, waits)
        assert max(waits) > bound / 4  # random, but not stuck at 0


def test_s3_a_transient_code_without_a_status_is_passing(s3_rule):
    assert s3_rule.after(KeyFailure("RequestTimeout"), 1) is not None


@pytest.mark.parametrize("code", ["AccessDenied", "NotImplemented", "NoSuchBucket", "", "Odd"])
def test_s3_other_codes_are_not_passing(s3_rule, code):
    assert s3_rule.after(KeyFailure(code), 1) is None


def test_s3_the_last_attempt_gets_no_wait(s3_rule):
    assert s3_rule.after(KeyFailure("SlowDown"), 3) is not None
    assert s3_rule.after(KeyFailure("SlowDown"), 4) is None


def test_azure_passing_statuses_wait_the_sdks_backoff():
    backoff = 0.2
    rule = azure_key_retry(retry_policy(max_attempts=4, retry_backoff_seconds=backoff))
    jitter = backoff / 2
    assert rule.attempts == 4
    for status in (408, 500, 502, 503, 504):
        for attempt in (1, 2, 3):
            expected = backoff + backoff**attempt
            waits = [rule.after(KeyFailure("ServerBusy", status), attempt) for _ in range(DRAWS)]
            assert all(
                wait is not None and expected - jitter <= wait <= expected + jitter
                for wait in waits
            ), (status, attempt, waits)


@pytest.mark.parametrize("status", [None, 200, 404, 409, 412, 501, 505])
def test_azure_other_statuses_are_not_passing(status):
    rule = azure_key_retry(retry_policy(max_attempts=4, retry_backoff_seconds=0.2))
    assert rule.after(KeyFailure("Any", status), 1) is None
