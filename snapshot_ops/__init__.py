"""snapshot_ops: deletes expired parse-session snapshots, never an order's file.

The Definitions are importable from the package itself, so
`dagster job execute -m snapshot_ops -j snapshot_cleanup_job` finds them.
"""

from snapshot_ops.definitions import defs

__all__ = ["defs"]
