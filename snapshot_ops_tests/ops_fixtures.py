"""Fixtures for operating the project the Dagster way: a production instance home on a fresh
PostgreSQL database, a local HTTP server that receives alerts (a Microsoft Teams webhook, or
the Slack Web API's chat.postMessage), and the real
dagster-webserver + dagster-daemon on loopback (session-scoped, stopped by process id).

Loaded from conftest.py through `pytest_plugins`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
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

from snapshot_ops_tests.conftest import World

REPO = Path(__file__).resolve().parent.parent
#: Screenshots and server logs land here (gitignored), so CI can keep them as artifacts.
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="session")
def make_pg_database(pg_admin_url: str) -> Iterator[Callable[[str], str]]:
    """Factory: create a fresh PostgreSQL database, return its URL; all dropped at the end."""
    admin = sa.create_engine(
        pg_admin_url.replace("postgresql://", "postgresql+psycopg2://", 1),
        isolation_level="AUTOCOMMIT",
    )
    created: list[str] = []

    def make(purpose: str) -> str:
        name = f"snapshot_ops_{purpose}_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        created.append(name)
        url = sa.engine.make_url(pg_admin_url).set(database=name)
        return url.render_as_string(hide_password=False)

    yield make
    with admin.connect() as conn:
        for name in created:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
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
    deadline = time.monotonic() + 180
    last: object = None
    while time.monotonic() < deadline:
        for server in servers:
            assert server.poll() is None, f"a Dagster server exited early: {server.args}"
        try:
            entries = ui.graphql(query)["workspaceOrError"]["locationEntries"]
            last = entries
            if entries and entries[0]["locationOrLoadError"]:
                loaded = entries[0]["locationOrLoadError"]
                assert loaded["__typename"] == "RepositoryLocation", loaded
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"the code location did not load in time: {last}")


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
        _stop(servers)
        stack.close()
