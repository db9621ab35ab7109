"""The cleanup job run in process, as of a fixed reference time, and reading its result."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dagster import ExecuteInProcessResult

from snapshot_ops.defs.jobs import snapshot_cleanup_job
from snapshot_ops.defs.resources import SnapshotDatabase, SnapshotStorage

#: A fixed reference time, so ages in tests are exact.
NOW = dt.datetime(2026, 11, 20, 3, 0, tzinfo=dt.UTC)


def run_cleanup(
    database: SnapshotDatabase | str,
    storage: SnapshotStorage | str,
    *,
    instance: Any = None,
    raise_on_error: bool = False,
    **config: Any,
) -> ExecuteInProcessResult:
    """Run `snapshot_cleanup_job` in process with these resources and op config.

    `database`, `storage`: the resources, or just their URLs. `config` is the config of
    `identify_expired_candidates`; its `reference_time` defaults to NOW (pass
    `reference_time=None` to leave it out, so the run is as of the clock). `instance`: the
    Dagster instance to run in (default: a new ephemeral one). With `raise_on_error` a
    failing step raises instead of giving a failed result.
    """
    config.setdefault("reference_time", NOW.isoformat())
    if config["reference_time"] is None:
        del config["reference_time"]
    return snapshot_cleanup_job.execute_in_process(
        run_config={"ops": {"identify_expired_candidates": {"config": config}}},
        resources={
            "database": (SnapshotDatabase(url=database) if isinstance(database, str) else database),
            "storage": SnapshotStorage(url=storage) if isinstance(storage, str) else storage,
        },
        instance=instance,
        raise_on_error=raise_on_error,
    )


def failure_message(result: ExecuteInProcessResult) -> str:
    """The error message of the run's one failed step."""
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return failure.step_failure_data.error.message


def step_metadata(result: ExecuteInProcessResult, step: str) -> dict[str, Any]:
    """The metadata of the one output `step` yielded that is not a key range (a dynamic
    output), by key."""
    [output] = [
        e
        for e in result.events_for_node(step)
        if e.event_type_value == "STEP_OUTPUT" and e.step_output_data.mapping_key is None
    ]
    return {k: v.value for k, v in output.step_output_data.metadata.items()}
