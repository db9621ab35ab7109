"""What a run wrote to its Dagster instance: per-step times and output metadata.

The job's phases are read from its event log (each step's STEP_START to STEP_SUCCESS), the
way Dagster's UI shows them, rather than timed from inside the job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

#: The job's phases; a step belongs to each phase its key names.
PHASES = ("identify", "mark", "delete", "record")


def dagster_instance_env(admin_url: str, database: str) -> dict[str, str]:
    """The environment the project's dagster.yaml reads its PostgreSQL storage from."""
    url = sa.engine.make_url(admin_url)
    return {
        "DAGSTER_PG_HOST": url.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(url.port or 5432),
        "DAGSTER_PG_DB": database,
        "DAGSTER_PG_USERNAME": url.username or "postgres",
        "DAGSTER_PG_PASSWORD": url.password or "",
    }


def create_instance_storage(home: Path) -> None:
    """Create the storage of the Dagster instance at `home` (its dagster.yaml), if needed.

    A production instance exists before its runs; doing this outside the measured run keeps
    the first run from paying for creating Dagster's tables.
    """
    from dagster import DagsterInstance

    DagsterInstance.from_config(str(home)).dispose()


def read_run(home: Path) -> dict[str, Any]:
    """Per-step times (seconds) and output metadata of the latest run in the instance at
    `home`, with its status, RUN_START timestamp (epoch seconds) and RUN_START to its end."""
    from dagster import DagsterEventType, DagsterInstance

    instance = DagsterInstance.from_config(str(home))
    try:
        [run] = instance.get_runs(limit=1)
        steps: dict[str, dict[str, Any]] = {}
        run_start = run_end = None
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None:
                continue
            kind = event.event_type
            if kind == DagsterEventType.RUN_START:
                run_start = entry.timestamp
            elif kind in (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE):
                run_end = entry.timestamp
            if event.step_key is None:
                continue
            step = steps.setdefault(event.step_key, {"metadata": {}})
            if kind == DagsterEventType.STEP_START:
                step["start"] = entry.timestamp
            elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
                step["end"] = entry.timestamp
            elif kind == DagsterEventType.STEP_OUTPUT:
                for name, value in event.step_output_data.metadata.items():
                    step["metadata"][name] = _plain(value.value)
        return {
            "status": str(run.status.value),
            "run_start": run_start,
            "run_seconds": (run_end - run_start) if run_start and run_end else None,
            "steps": [
                {
                    "step": key,
                    "phases": [p for p in PHASES if p in key],
                    "start": s.get("start"),
                    "seconds": s["end"] - s["start"] if "start" in s and "end" in s else None,
                    "metadata": s["metadata"],
                }
                for key, s in sorted(steps.items(), key=lambda kv: kv[1].get("start") or 0)
            ],
        }
    finally:
        instance.dispose()


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)
