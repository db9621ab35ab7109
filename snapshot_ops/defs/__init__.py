"""The Dagster side of snapshot_ops: the cleanup job and its ops, the storage assets and
their checks, schedules, sensors, alerts, the pruning of Dagster's run history, and the
resources that open the database and the storage.

Everything here is wiring: what to delete and how is decided by the Dagster-free modules
beside this package (`snapshot_ops.rules`, `snapshot_ops.cleanup`, `snapshot_ops.db`,
`snapshot_ops.storage`, ...), which never import Dagster or this package (checked by
`lint-imports`, see [tool.importlinter] in pyproject.toml). `snapshot_ops.definitions`
assembles these into the code location's one `Definitions` object.
"""
