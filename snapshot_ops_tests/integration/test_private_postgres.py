"""With no PostgreSQL listening at the configured URL, the tests start a private cluster.

The test runs one PostgreSQL test of this suite in a separate pytest session whose
SNAPSHOT_OPS_TEST_PG_URL names a port nothing listens on. That session can only pass on a
cluster it started itself from the installed server binaries, and it must stop it at its end.
"""

from __future__ import annotations

import os
import re

import pytest

from snapshot_ops_tests.support.commands import python_module, run_command
from snapshot_ops_tests.support.databases import installed_pg_ctl, pg_listening
from snapshot_ops_tests.support.scenarios import REPO
from snapshot_ops_tests.support.stores import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() == 0, reason="PostgreSQL refuses to run as root"),
    pytest.mark.skipif(
        installed_pg_ctl() is None, reason="no PostgreSQL server binaries are installed"
    ),
]


def test_without_a_server_the_session_uses_a_private_cluster(tmp_path):
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    assert not pg_listening(closed)
    env = {**os.environ, "SNAPSHOT_OPS_TEST_PG_URL": closed, "PYTHONPATH": str(REPO)}
    session = run_command(
        python_module(
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / 'session'}",
            "snapshot_ops_tests/integration/test_migrations.py::test_head_makes_the_tables_the_catalog_queries",
            "-k",
            "postgres",
        ),
        env=env,
    )
    output = session.stdout + session.stderr
    assert "1 passed" in output
    [private] = re.findall(r"using a private cluster at (\S+)", output)
    assert not pg_listening(private)  # stopped with the session
