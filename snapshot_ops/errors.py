"""The one exception family for failures this package expects and explains."""


class SnapshotOpsError(Exception):
    """Base class for expected failures of snapshot_ops."""


class ConfigError(SnapshotOpsError):
    """Configuration that cannot be used; the message says what to fix."""


class SchemaError(SnapshotOpsError):
    """The application database lacks a table or column the job needs."""


class RowSecurityError(SnapshotOpsError):
    """Row-level security applies to the job's role on an application table, so PostgreSQL
    would show the job only some of its rows; the message names the table and the fix."""
