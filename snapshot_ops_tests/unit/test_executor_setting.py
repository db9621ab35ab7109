"""SNAPSHOT_OPS_EXECUTOR picks the cleanup job's executor, in one place (settings.py).

Unset or blank means in_process; in_process, multiprocess, celery and k8s name Dagster's
executors; anything else is refused with a message naming the allowed values. That the job
takes its executor from the variable, and really runs on them, is shown by
test_distributed_executors.py.
"""

from __future__ import annotations

import pytest
from dagster import in_process_executor, multiprocess_executor

from snapshot_ops.defs.executors import EXECUTORS, job_executor
from snapshot_ops.errors import ConfigError


def test_default_is_in_process(monkeypatch):
    monkeypatch.delenv("SNAPSHOT_OPS_EXECUTOR", raising=False)
    assert job_executor() is in_process_executor
    assert job_executor(" ") is in_process_executor


def test_named_executors(monkeypatch):
    monkeypatch.setenv("SNAPSHOT_OPS_EXECUTOR", "multiprocess")
    assert job_executor() is multiprocess_executor
    assert job_executor("celery").name == "celery"


@pytest.mark.parametrize("value", ["celery_k8s", "Multiprocess", "inprocess"])
def test_unknown_value_names_the_allowed_ones(value):
    with pytest.raises(ConfigError) as raised:
        job_executor(value)
    message = str(raised.value)
    assert repr(value) in message
    assert all(name in message for name in EXECUTORS)
