"""Fixtures for operating the project the Dagster way: a production instance home on a fresh
PostgreSQL database, a local HTTP server that receives alerts (a Microsoft Teams webhook, or
the Slack Web API's chat.postMessage), and the real
dagster-webserver + dagster-daemon on loopback (session-scoped, stopped by process id); and
`execute`, the cleanup job run by `dagster job execute` on an `Engine` (the environment of a
persistent instance and the executor its steps go to).

Registered by the top conftest.py through `pytest_plugins`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from snapshot_ops.demo import job_command
from snapshot_ops_tests.support import REPO
from snapshot_ops_tests.support.commands import run_command
from snapshot_ops_tests.support.waiting import free_port, still_running, wait_until
from snapshot_ops_tests.support.world import NOW, World

#: Screenshots and server logs land here (gitignored), so CI can keep them as artifacts.
ARTIFACTS = REPO / "test-artifacts"


def production_home(home: Path, dagster_db_url: str) -> dict[str, str]:
    """Copy the repository's dagster.yaml into `home`; return the environment it reads."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    url = sa.engine.make_url(dagster_db_url)
    return {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": url.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(url.port or 5432),
        "DAGSTER_PG_DB": url.database or "",
        "DAGSTER_PG_USERNAME": url.username or "postgres",
        "DAGSTER_PG_PASSWORD": url.password or "",
    }


def production_instance(env: dict[str, str]) -> Any:
    """A DagsterInstance from a home made by production_home (the caller disposes it)."""
    from dagster import DagsterInstance

    saved = dict(os.environ)
    os.environ.update(env)  # the instance reads its connection from the environment
    try:
        return DagsterInstance.from_config(env["DAGSTER_HOME"])
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass
class WebhookReceiver:
    """A real HTTP server on loopback that records what is POSTed to it: each JSON body, the
    path it went to and its Authorization header. It answers `{"ok": true}`, what Slack's Web
    API answers an accepted call (a Teams webhook only needs the 200)."""

    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)


@contextlib.contextmanager
def webhook_server() -> Iterator[WebhookReceiver]:
    """Serve a WebhookReceiver on a free loopback port until the block ends."""
    receiver = WebhookReceiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            receiver.paths.append(self.path)
            receiver.authorizations.append(self.headers.get("Authorization"))
            receiver.bodies.append(body)
            answer = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_port}/hook"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with webhook_server() as receiver:
        yield receiver


def stop_servers(processes: list[subprocess.Popen[bytes]]) -> None:
    """Stop servers and everything they spawned (each its own process group, led by its
    pid): ask all at once, then force any that do not exit in time."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        os.killpg(process.pid, signal.SIGTERM)
    for process in running:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@dataclass
class DagsterUI:
    """A running dagster-webserver (and daemon) on the production instance configuration."""

    host: str
    port: int
    env: dict[str, str]
    world: World  # the application database and snapshot folder the code location uses
    alerts: WebhookReceiver  # SNAPSHOT_OPS_TEAMS_WEBHOOK_URL of the code location

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST a GraphQL query; return `data`, failing the test on GraphQL errors."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = json.loads(response.read())
        assert not payload.get("errors"), payload["errors"]
        return payload["data"]


def _wait_for_location(ui: DagsterUI, servers: list[subprocess.Popen[bytes]]) -> None:
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name "
    query += "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
    last: list[object] = [None]

    def loaded() -> bool:
        for server in servers:
            still_running(server, f"the Dagster server {server.args}")
        try:
            entries = ui.graphql(query)["workspaceOrError"]["locationEntries"]
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last[0] = exc
            return False
        last[0] = entries
        if not (entries and entries[0]["locationOrLoadError"]):
            return False
        location = entries[0]["locationOrLoadError"]
        assert location["__typename"] == "RepositoryLocation", location
        return True

    wait_until(
        loaded, timeout=180, interval=1, what=lambda: f"the code location to load: {last[0]}"
    )


@pytest.fixture(scope="session")
def dagster_ui(
    make_pg_database: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DagsterUI]:
    """dagster-webserver and dagster-daemon on a free loopback port, on the repository's
    dagster.yaml (Dagster's storage on a fresh PostgreSQL database) and workspace.yaml.

    Each server runs in its own process group and is stopped by its pid when the session
    ends, whether the tests passed or not.
    """
    base = tmp_path_factory.mktemp("dagster_ui")
    world = World(make_pg_database("ui_app"), base / "snapshots")
    world.root.mkdir()
    env = dict(os.environ)
    env.update(production_home(base / "dagster_home", make_pg_database("ui_dagster")))
    env.update(
        SNAPSHOT_OPS_DATABASE_URL=world.db_url,
        SNAPSHOT_OPS_STORAGE_URL=world.root.as_uri(),
        SNAPSHOT_OPS_TIMEZONE="Europe/London",
    )
    stack = contextlib.ExitStack()
    alerts = stack.enter_context(webhook_server())  # receives the failure sensor's alerts
    stack.callback(world.engine.dispose)
    env["SNAPSHOT_OPS_TEAMS_WEBHOOK_URL"] = alerts.url
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    bin_dir = Path(sys.executable).parent
    commands = {
        "webserver": [
            str(bin_dir / "dagster-webserver"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            str(REPO / "workspace.yaml"),
        ],
        "daemon": [str(bin_dir / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
    }
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for name, command in commands.items():
            log = stack.enter_context(open(ARTIFACTS / f"dagster-{name}.log", "wb"))
            servers.append(
                subprocess.Popen(
                    command,
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, so we stop all of it
                )
            )
        ui = DagsterUI(host="127.0.0.1", port=port, env=env, world=world, alerts=alerts)
        _wait_for_location(ui, servers)
        yield ui
    finally:
        stop_servers(servers)
        stack.close()


# -- the job run by `dagster job execute` ----------------------------------------------------------


@dataclass
class Engine:
    """Where a run's steps go: the run's environment and the process groups of its workers
    (none: the run's own child processes)."""

    name: str
    env: dict[str, str]
    worker_pids: list[int]
    execution: dict[str, Any]  # the run config's `execution` section


def execute(
    world: World,
    engine: Engine,
    tmp_path: Path,
    storage: dict[str, Any] | None = None,
    **config: Any,
) -> tuple[str, str]:
    """Run the cleanup job with `dagster job execute` on `world`; return (run id, output).

    `storage`: more config of the storage resource; `config`: the run's cleanup config."""
    env = engine.env
    config.setdefault("reference_time", NOW.isoformat())
    url = world.store.url if world.store is not None else world.root.as_uri()
    run_config = {
        "ops": {"identify_expired_candidates": {"config": config}},
        # The application database and storage of this test (a deployment sets them through
        # SNAPSHOT_OPS_DATABASE_URL and SNAPSHOT_OPS_STORAGE_URL in every process instead).
        "resources": {
            "database": {"config": {"url": world.db_url}},
            "storage": {"config": {"url": url, **(storage or {})}},
        },
    }
    if engine.execution:
        run_config["execution"] = engine.execution
    path = tmp_path / f"run-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(run_config))
    done = run_command(job_command("-c", str(path)), env=env, returncode=None)
    output = done.stdout[-4000:] + done.stderr[-4000:]
    instance = production_instance(env)
    try:
        runs = [r for r in instance.get_runs() if r.run_config == run_config]
        assert len(runs) == 1, output
        return runs[0].run_id, output
    finally:
        instance.dispose()
