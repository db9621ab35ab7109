"""The Dagster UI, for real: dagster-webserver and dagster-daemon on the production
instance configuration (PostgreSQL), the code location from workspace.yaml.

Through GraphQL: the location loads with the job, the 03:00 schedule in its timezone, the
sensors and the resources. Dagster's own GraphQL client launches runs that the daemon
dequeues one at a time and that delete the expired files. In headless Chromium: the run page
and the schedule page show them; screenshots are saved under test-artifacts/.

To cover more definitions (assets, their lineage, plots), add names to EXPECTED and a page
to PAGES below: the checks iterate over them.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from snapshot_ops.jobs import CONCURRENCY_TAG
from snapshot_ops_tests.conftest import NOW
from snapshot_ops_tests.ops_fixtures import ARTIFACTS

pytestmark = pytest.mark.e2e

DAY = dt.timedelta(days=1)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCATION = "snapshot_ops"
REPOSITORY = "__repository__"

#: What the code location must show; add kinds (e.g. "assets") as they are defined.
EXPECTED = {
    "jobs": {"snapshot_cleanup_job", "prune_dagster_history_job"},
    "schedules": {"daily_snapshot_cleanup", "weekly_prune_dagster_history"},
    "sensors": {"snapshot_cleanup_failure_alert", "snapshot_cleanup_freshness"},
    "resources": {"database", "storage", "alerts"},
}

REPOSITORY_QUERY = """
query ($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) {
    __typename
    ... on Repository {
      jobs { name }
      schedules { name cronSchedule executionTimezone }
      sensors { name }
      allTopLevelResourceDetails { name }
      assetNodes { assetKey { path } }
    }
    ... on PythonError { message }
  }
}
"""


def _names(repo: dict, kind: str) -> set[str]:
    if kind == "assets":
        return {"/".join(node["assetKey"]["path"]) for node in repo["assetNodes"]}
    field = {"resources": "allTopLevelResourceDetails"}.get(kind, kind)
    return {item["name"] for item in repo[field]}


@pytest.fixture(scope="module")
def repository(dagster_ui) -> dict:
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
    repo = dagster_ui.graphql(REPOSITORY_QUERY, {"selector": selector})["repositoryOrError"]
    assert repo["__typename"] == "Repository", repo
    return repo


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_code_location_shows(repository, kind):
    assert EXPECTED[kind] <= _names(repository, kind)


def test_schedule_is_daily_at_three_in_its_timezone(repository):
    [schedule] = [s for s in repository["schedules"] if s["name"] == "daily_snapshot_cleanup"]
    assert schedule["cronSchedule"] == "0 3 * * *"
    assert schedule["executionTimezone"] == "Europe/London"  # SNAPSHOT_OPS_TIMEZONE


DAEMON_HEALTH = """
{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }
"""


def test_daemon_runs_the_scheduler_sensors_and_run_queue(dagster_ui):
    deadline = time.monotonic() + 60
    while True:
        statuses = dagster_ui.graphql(DAEMON_HEALTH)["instance"]["daemonHealth"]
        healthy = {d["daemonType"] for d in statuses["allDaemonStatuses"] if d["healthy"]}
        if {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR", "MONITORING"} <= healthy:
            return
        assert time.monotonic() < deadline, statuses
        time.sleep(2)


SCHEDULE_STATE = """
query ($selector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $selector) {
    ... on Schedule { scheduleState { id status } futureTicks(limit: 1) { results { timestamp } } }
  }
}
"""
START_SCHEDULE = """
mutation ($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) {
    __typename ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
  }
}
"""
STOP_SCHEDULE = """
mutation ($id: String!) {
  stopRunningSchedule(id: $id) {
    __typename ... on ScheduleStateResult { scheduleState { status } }
  }
}
"""


def test_schedule_can_be_enabled_and_ticks_at_three_london_time(dagster_ui):
    """What the README's 'enable the schedule' does, through the same API the UI calls."""
    selector = {
        "repositoryLocationName": LOCATION,
        "repositoryName": REPOSITORY,
        "scheduleName": "daily_snapshot_cleanup",
    }
    before = dagster_ui.graphql(SCHEDULE_STATE, {"selector": selector})["scheduleOrError"]
    assert before["scheduleState"]["status"] == "STOPPED"  # off until someone enables it
    started = dagster_ui.graphql(START_SCHEDULE, {"selector": selector})["startSchedule"]
    assert started["scheduleState"]["status"] == "RUNNING", started
    try:
        state = dagster_ui.graphql(SCHEDULE_STATE, {"selector": selector})["scheduleOrError"]
        assert state["scheduleState"]["status"] == "RUNNING"
        [tick] = state["futureTicks"]["results"]
        when = dt.datetime.fromtimestamp(tick["timestamp"], ZoneInfo("Europe/London"))
        assert (when.hour, when.minute) == (3, 0)
    finally:
        stopped = dagster_ui.graphql(STOP_SCHEDULE, {"id": before["scheduleState"]["id"]})
        assert stopped["stopRunningSchedule"]["scheduleState"]["status"] == "STOPPED"


def _client(dagster_ui) -> DagsterGraphQLClient:
    return DagsterGraphQLClient(dagster_ui.host, port_number=dagster_ui.port, timeout=60)


def _launch(client: DagsterGraphQLClient) -> str:
    return client.submit_job_execution(
        "snapshot_cleanup_job",
        repository_location_name=LOCATION,
        repository_name=REPOSITORY,
        run_config={
            "ops": {"identify_expired_candidates": {"config": {"reference_time": NOW.isoformat()}}}
        },
    )


def _wait(client: DagsterGraphQLClient, run_id: str, timeout: float = 240) -> DagsterRunStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id)
        if status in (
            DagsterRunStatus.SUCCESS,
            DagsterRunStatus.FAILURE,
            DagsterRunStatus.CANCELED,
        ):
            return status
        time.sleep(1)
    raise AssertionError(f"run {run_id} still {status} after {timeout}s")


RUN_TIMES = """
query ($runId: ID!) {
  runOrError(runId: $runId) { ... on Run { startTime endTime tags { key value } } }
}
"""


def _wait_status(client, run_id: str, wanted: set[DagsterRunStatus], timeout: float = 120):
    deadline = time.monotonic() + timeout
    while (status := client.get_run_status(run_id)) not in wanted:
        assert time.monotonic() < deadline, f"run {run_id} still {status}"
        time.sleep(0.5)
    return status


def test_graphql_client_launches_runs_that_delete_one_at_a_time(dagster_ui):
    """A second cleanup waits in the queue while one runs (tag concurrency 1); both then
    succeed, one after the other, and delete exactly the expired, unlinked files.

    The first run is held mid-way by a lock the test takes on the application's table, so
    the two would certainly overlap if the limit were missing.
    """
    world = dagster_ui.world
    expired = [world.add(age=8 * DAY) for _ in range(3)]
    linked = world.add(age=30 * DAY, linked=True)
    fresh = world.add(age=2 * DAY)
    client = _client(dagster_ui)

    with world.engine.connect() as blocker:
        blocker.exec_driver_sql('LOCK TABLE "SnapshotFiles" IN ACCESS EXCLUSIVE MODE')
        first = _launch(client)
        _wait_status(client, first, {DagsterRunStatus.STARTED})
        second = _launch(client)
        # The daemon dequeues every few seconds: give it ample time to (wrongly) start it.
        for _ in range(20):
            assert client.get_run_status(second) == DagsterRunStatus.QUEUED
            time.sleep(0.5)
        blocker.rollback()  # release the lock: the first run goes on, then the second

    assert _wait(client, first) == DagsterRunStatus.SUCCESS
    assert _wait(client, second) == DagsterRunStatus.SUCCESS
    for file_id in expired:
        assert world.is_deleted(file_id) and not world.has_file(file_id)
    for file_id in (linked, fresh):
        assert not world.is_deleted(file_id) and world.has_file(file_id)
    runs = [dagster_ui.graphql(RUN_TIMES, {"runId": r})["runOrError"] for r in (first, second)]
    for run in runs:
        assert {"key": CONCURRENCY_TAG, "value": "true"} in run["tags"]
    assert runs[0]["endTime"] <= runs[1]["startTime"], "two cleanup runs overlapped"


# -- the browser -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "Debian's chromium is missing: `make test` installs it"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _screenshot(browser, url: str, name: str, expect_text: list[str]) -> str:
    """Open `url`, wait until every expected text shows, save a screenshot, return the text."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(url, wait_until="domcontentloaded", timeout=60_000)
        for text in expect_text:
            page.get_by_text(text, exact=False).first.wait_for(timeout=60_000)
        page.wait_for_timeout(500)  # let late panels finish painting for the picture
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        body = page.inner_text("body")
        # dagster.yaml turns the onboarding pop-up off; it would cover the page.
        assert "Join the Dagster community" not in body
        return body
    finally:
        page.close()


def test_browser_shows_the_jobs_run(dagster_ui, browser):
    world = dagster_ui.world
    expired = world.add(age=9 * DAY)
    client = _client(dagster_ui)
    run_id = _launch(client)
    assert _wait(client, run_id) == DagsterRunStatus.SUCCESS
    assert world.is_deleted(expired)

    body = _screenshot(
        browser,
        f"{dagster_ui.url}/runs/{run_id}",
        "run",
        ["snapshot_cleanup_job", "record_cleanup_run", "RUN_SUCCESS"],
    )
    assert run_id[:8] in body
    assert "cleanup summary" in body  # the job's own summary log line in the run's logs


#: Pages of the UI to open, each with the texts it must show; the screenshot is saved as
#: test-artifacts/<name>.png. Add a page here for each new view (asset lineage, plots).
PAGES = {
    "schedule": (
        f"/locations/{LOCATION}/schedules/daily_snapshot_cleanup",
        ["daily_snapshot_cleanup", "Europe/London", "03:00", "0 3 * * *", "snapshot_cleanup_job"],
    ),
    "job": (
        f"/locations/{LOCATION}/jobs/snapshot_cleanup_job",
        [
            "identify_expired_candidates",
            "finish_pending_deletes",
            "mark_and_delete_expired",
            "record_cleanup_run",
            "refresh_storage_assets",
        ],
    ),
    "automation": (
        "/automation",
        ["daily_snapshot_cleanup", "snapshot_cleanup_failure_alert", "snapshot_cleanup_freshness"],
    ),
}


@pytest.mark.parametrize("name", sorted(PAGES))
def test_browser_shows_page(dagster_ui, browser, name):
    path, texts = PAGES[name]
    body = _screenshot(browser, f"{dagster_ui.url}{path}", name, texts)
    missing = [t for t in texts if t not in body]
    assert not missing, f"{name} page lacks {missing}"


def test_failed_run_alerts_through_the_daemon_to_the_webhook(dagster_ui):
    """In the deployment: a failed cleanup run is picked up by the failure sensor in the
    daemon, which posts the run's errors to SNAPSHOT_OPS_ALERT_WEBHOOK_URL; a run failed by
    a step is not retried automatically."""
    client = _client(dagster_ui)
    run_id = client.submit_job_execution(
        "snapshot_cleanup_job",
        repository_location_name=LOCATION,
        repository_name=REPOSITORY,
        run_config={"ops": {"identify_expired_candidates": {"config": {"batch_size": 0}}}},
    )
    assert _wait(client, run_id) == DagsterRunStatus.FAILURE
    deadline = time.monotonic() + 150  # the sensor is evaluated every 30 s
    while not [b for b in dagster_ui.alerts.bodies if b.get("run_id") == run_id]:
        assert time.monotonic() < deadline, f"no alert for {run_id}: {dagster_ui.alerts.bodies}"
        time.sleep(1)
    [alert] = [b for b in dagster_ui.alerts.bodies if b["run_id"] == run_id]
    assert alert["kind"] == "run_failure" and alert["job"] == "snapshot_cleanup_job"
    assert any("batch_size must be at least 1" in e for e in alert["errors"])
    # A failed step needs a person: the instance's retry policy only retries crashed runs.
    retries = """
    query ($runId: String!) {
      runsOrError(filter: {tags: [{key: "dagster/parent_run_id", value: $runId}]}) {
        ... on Runs { results { runId } }
      }
    }
    """
    assert dagster_ui.graphql(retries, {"runId": run_id})["runsOrError"]["results"] == []
