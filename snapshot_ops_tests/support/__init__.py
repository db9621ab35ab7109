"""What the tests share, one module per subject.

- world.py: `World`, the application's side (rows, files, attachments) and `NOW`;
- jobs.py: `run_cleanup`, the cleanup job in process with given resources and config;
- databases.py: fixtures for a fresh PostgreSQL database or SQLite file and worlds on them;
- stores.py: the folder, S3 (moto) and Azure Blob (Azurite) stores and their fixtures;
- faultproxy.py: the fault-injecting HTTP proxy in front of moto and Azurite;
- ntfs.py: a real case-insensitive folder, an NTFS volume mounted through FUSE;
- operations.py: a production Dagster instance home, an alert webhook receiver, and the
  real dagster-webserver and dagster-daemon;
- commands.py: `run_command`, a command line run to completion (`python -m ...`, `dagster ...`);
- scenarios.py: bulk data, the job as a real process, the checkpoint pause handshake;
- time_representations.py: the ways applications store "createdAt" and "deletedAt";
- waiting.py: `wait_until` (the one polling loop), `free_port`, `wait_for_port`.

The fixture modules are registered by the top conftest.py (`pytest_plugins`); tests import
the rest by name, e.g. `from snapshot_ops_tests.support.world import NOW, World`.
"""

from pathlib import Path

#: The repository's root folder (dagster.yaml, workspace.yaml, node_modules are there).
REPO = Path(__file__).resolve().parents[2]
