"""snapshot_ops: deletes expired parse-session snapshots, never an order's file.

Layout: `defs/` holds the Dagster definitions (job, ops, assets, schedules, sensors,
resources) and `definitions.py` assembles them into the code location's `Definitions`;
everything else (`rules`, `cleanup`, `db/`, `storage/`, ...) is the Dagster-free core they
call, which imports neither Dagster nor `defs` (see [tool.importlinter] in pyproject.toml).

The Definitions are importable from the package itself, so
`dagster job execute -m snapshot_ops -j snapshot_cleanup_job` finds them. They are bound to
`code_location`, not `defs`, because `snapshot_ops.defs` is the package of definitions.
"""

from snapshot_ops.definitions import defs as code_location

__all__ = ["code_location"]
