"""`--help` of the two commands an operator types, `python -m snapshot_ops.reconcile` and
`python -m snapshot_ops.journal`: it says what the command does and which environment it
reads, exits 0, and touches nothing (it does not even connect: the database named in the
environment is never created)."""

from __future__ import annotations

import os

import pytest

from snapshot_ops_tests.support.commands import python_module, run_command


@pytest.mark.parametrize(
    ("module", "says"),
    [
        (
            "snapshot_ops.reconcile",
            [
                "usage: python -m snapshot_ops.reconcile",
                "Nothing is deleted or updated",
                "exit status 0",
                "3",
                "SNAPSHOT_OPS_DATABASE_URL",
                "SNAPSHOT_OPS_STORAGE_URL",
                "SNAPSHOT_OPS_S3_",
            ],
        ),
        (
            "snapshot_ops.journal",
            [
                "usage: python -m snapshot_ops.journal",
                "release",
                "SNAPSHOT_OPS_DATABASE_URL",
                "no storage",
            ],
        ),
    ],
)
def test_help_says_what_the_command_does_and_reads_and_runs_nothing(tmp_path, module, says):
    database = tmp_path / "app.sqlite"
    env = {
        **os.environ,
        "SNAPSHOT_OPS_DATABASE_URL": f"sqlite:///{database}",
        "SNAPSHOT_OPS_STORAGE_URL": (tmp_path / "snapshots").as_uri(),
    }

    done = run_command(python_module(module, "--help"), env=env)

    for part in says:
        assert part in done.stdout, (part, done.stdout)
    assert done.stdout.startswith("usage:")  # the help alone: no report, no listing
    assert '"drift"' not in done.stdout and '"released"' not in done.stdout
    assert not database.exists()
