"""The Dagster UI, for real: dagster-webserver and dagster-daemon on the production
instance configuration (PostgreSQL), the code location from workspace.yaml.

Through GraphQL: the location loads with the job, the 03:00 schedule in its timezone, the
sensors, the resources, the assets with their lineage as assets.py declares it, and the asset
checks. Dagster's own GraphQL client launches runs that the daemon dequeues one at a time and
that delete the expired files; three runs on consecutive days (each deleting different bytes)
materialize one partition each of snapshot_storage_reclaimed, and a backfill of those days,
launched through the UI's API, rebuilds the same figures and deletes nothing. In headless
Chromium: the run, the schedule, the job, the automation page, the reclaimed-storage plot,
the 30-day view with its chart, the asset lineage graph, the passing checks and the backfill
show them; screenshots are saved under test-artifacts/.

To cover more definitions, add names to EXPECTED and a page to PAGES below: the checks
iterate over them.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from snapshot_ops.defs.jobs import CONCURRENCY_TAG
from snapshot_ops_tests.support.operations import ARTIFACTS
from snapshot_ops_tests.support.waiting import wait_until
from snapshot_ops_tests.support.world import NOW

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
    # The fixture sets SNAPSHOT_OPS_TEAMS_WEBHOOK_URL: dagster-msteams' failure sensor.
    "sensors": {"snapshot_cleanup_failure_teams", "snapshot_cleanup_freshness"},
    "resources": {"database", "storage"},
    "assets": {
        "SnapshotFiles",
        "OrderAttachments",
        "snapshot_cleanup_runs",
        "snapshot_storage_reclaimed",
        "snapshot_storage_savings_30d",
    },
    "asset_checks": {
        "snapshot_storage_savings_30d:savings_total_matches_run_log",
        "SnapshotFiles:no_overdue_parse_session_snapshots",
    },
}

#: Each asset's upstream assets: the application's tables -> the run log -> the day's
#: figures -> the 30-day view.
LINEAGE = {
    "SnapshotFiles": set(),
    "OrderAttachments": set(),
    "snapshot_cleanup_runs": {"SnapshotFiles", "OrderAttachments"},
    "snapshot_storage_reclaimed": {"snapshot_cleanup_runs"},
    "snapshot_storage_savings_30d": {"snapshot_storage_reclaimed"},
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
      assetNodes {
        assetKey { path }
        dependencyKeys { path }
        assetChecksOrError { ... on AssetChecks { checks { name } } }
      }
    }
    ... on PythonError { message }
  }
}
"""


def _key(asset_key: dict) -> str:
    return "/".join(asset_key["path"])


def _names(repo: dict, kind: str) -> set[str]:
    if kind == "assets":
        return {_key(node["assetKey"]) for node in repo["assetNodes"]}
    if kind == "asset_checks":
        return {
            f"{_key(node['assetKey'])}:{check['name']}"
            for node in repo["assetNodes"]
            for check in node["assetChecksOrError"]["checks"]
        }
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


def test_asset_lineage_is_what_assets_py_declares(repository):
    """The UI's lineage equals LINEAGE, and so does the lineage of the definitions themselves
    (so neither a UI-only nor a definitions-only change passes)."""
    from snapshot_ops.definitions import defs

    shown = {
        _key(node["assetKey"]): {_key(dep) for dep in node["dependencyKeys"]}
        for node in repository["assetNodes"]
    }
    declared = {
        spec.key.to_user_string(): {dep.asset_key.to_user_string() for dep in spec.deps}
        for spec in defs.resolve_all_asset_specs()
    }
    assert shown == LINEAGE
    assert declared == LINEAGE


def test_schedule_is_daily_at_three_in_its_timezone(repository):
    [schedule] = [s for s in repository["schedules"] if s["name"] == "daily_snapshot_cleanup"]
    assert schedule["cronSchedule"] == "0 3 * * *"
    assert schedule["executionTimezone"] == "Europe/London"  # SNAPSHOT_OPS_TIMEZONE


DAEMON_HEALTH = """
{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }
"""


def test_daemon_runs_the_scheduler_sensors_and_run_queue(dagster_ui):
    statuses: list[object] = [None]

    def healthy() -> bool:
        statuses[0] = dagster_ui.graphql(DAEMON_HEALTH)["instance"]["daemonHealth"]
        up = {d["daemonType"] for d in statuses[0]["allDaemonStatuses"] if d["healthy"]}
        return {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR", "MONITORING"} <= up

    wait_until(
        healthy, timeout=60, interval=2, what=lambda: f"the daemons to be healthy: {statuses[0]}"
    )


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
    """What 'Enable the schedule' in docs/operations.md does, through the same API the UI calls."""
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


def _launch(client: DagsterGraphQLClient, reference_time: dt.datetime = NOW) -> str:
    config = {"reference_time": reference_time.isoformat()}
    return client.submit_job_execution(
        "snapshot_cleanup_job",
        repository_location_name=LOCATION,
        repository_name=REPOSITORY,
        run_config={"ops": {"identify_expired_candidates": {"config": config}}},
    )


def _wait(client: DagsterGraphQLClient, run_id: str, timeout: float = 240) -> DagsterRunStatus:
    return _wait_status(
        client,
        run_id,
        {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED},
        timeout=timeout,
        interval=1,
    )


RUN_TIMES = """
query ($runId: ID!) {
  runOrError(runId: $runId) { ... on Run { startTime endTime tags { key value } } }
}
"""


def _wait_status(
    client, run_id: str, wanted: set[DagsterRunStatus], timeout: float = 120, interval=0.5
) -> DagsterRunStatus:
    """Wait until the run's status is one of `wanted`; return it."""
    seen: list[DagsterRunStatus | None] = [None]

    def reached() -> DagsterRunStatus | None:
        seen[0] = client.get_run_status(run_id)
        return seen[0] if seen[0] in wanted else None

    return wait_until(
        reached,
        timeout=timeout,
        interval=interval,
        what=lambda: f"run {run_id} to reach {sorted(s.value for s in wanted)}: still {seen[0]}",
    )


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


# -- the storage assets over a few days ------------------------------------------------

#: Simulated daily runs: day -> (expired files the application leaves that day, their size).
#: Different bytes per day, so a day's figures cannot be mistaken for another's.
DAILY_FILES = {
    dt.date(2026, 11, 17): (2, 3_000),
    dt.date(2026, 11, 18): (3, 7_000),
    dt.date(2026, 11, 19): (1, 12_000),
}
RECLAIMED = "snapshot_storage_reclaimed"


@dataclass(frozen=True)
class DailyRuns:
    run_ids: dict[str, str]  # partition (day) -> the cleanup run that materialized it
    deleted: dict[str, list[str]]  # partition -> fileIds its run deleted


def _at_three(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(3), ZoneInfo("Europe/London"))


@pytest.fixture(scope="module")
def daily_runs(dagster_ui) -> DailyRuns:
    """One cleanup run per day of DAILY_FILES, each as of that day's 03:00 (as its schedule
    tick would), after the application left that day's expired files."""
    world = dagster_ui.world
    client = _client(dagster_ui)
    run_ids, deleted = {}, {}
    for day, (count, size) in DAILY_FILES.items():
        reference = _at_three(day)
        # Expired as of this day's run, not yet as of the day before's (8 days > 7 > 7).
        files = [world.add(age=8 * DAY, size=size, now=reference) for _ in range(count)]
        run_id = _launch(client, reference)
        assert _wait(client, run_id) == DagsterRunStatus.SUCCESS
        run_ids[day.isoformat()], deleted[day.isoformat()] = run_id, files
    return DailyRuns(run_ids, deleted)


MATERIALIZATIONS = """
query ($key: AssetKeyInput!, $partitions: [String!]) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      assetMaterializations(partitions: $partitions) {
        runId partition
        metadataEntries {
          label __typename
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
          ... on TextMetadataEntry { text }
          ... on TimestampMetadataEntry { timestamp }
        }
      }
    }
  }
}
"""


def _materializations(dagster_ui, asset: str, partitions: list[str]) -> list[dict]:
    """Every materialization of those partitions: runId, partition and metadata as a dict."""
    data = dagster_ui.graphql(
        MATERIALIZATIONS, {"key": {"path": [asset]}, "partitions": partitions}
    )
    found = []
    for event in data["assetNodeOrError"]["assetMaterializations"]:
        metadata = {
            entry["label"]: next(
                (entry[f] for f in ("intValue", "floatValue", "text", "timestamp") if f in entry),
                None,
            )
            for entry in event["metadataEntries"]
        }
        found.append({"runId": event["runId"], "partition": event["partition"], **metadata})
    return found


def test_each_daily_run_materializes_its_days_figures(dagster_ui, daily_runs):
    """Each run deletes its day's files and reports exactly their bytes on its own day."""
    world = dagster_ui.world
    by_run = {
        m["runId"]: m for m in _materializations(dagster_ui, RECLAIMED, list(daily_runs.run_ids))
    }
    for day, (count, size) in DAILY_FILES.items():
        partition = day.isoformat()
        for file_id in daily_runs.deleted[partition]:
            assert world.is_deleted(file_id) and not world.has_file(file_id)
        figures = by_run[daily_runs.run_ids[partition]]
        assert figures["partition"] == partition
        assert (figures["bytesReclaimed"], figures["deletedCount"]) == (count * size, count)
        assert (figures["runs"], figures["errors"]) == (1, 0)


LAUNCH_BACKFILL = """
mutation ($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""
BACKFILL_STATUS = """
query ($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status runs(limit: 10) { runId status } }
  }
}
"""
BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


@dataclass(frozen=True)
class Backfill:
    id: str
    status: str
    runs: list[dict]
    before: tuple  # (live rows, files on disk, run-log rows) just before it was launched


def _application_state(world) -> tuple:
    files = {str(path.relative_to(world.root)) for path in world.root.rglob("*") if path.is_file()}
    return world.live_rows(), files, len(world.run_log())


@pytest.fixture(scope="module")
def backfill(dagster_ui, daily_runs) -> Backfill:
    """A backfill of the simulated days, launched as the UI's Materialize button does and
    run by the daemon; returned once it and its runs are done.

    Just before it, the application leaves a file that a cleanup as of any of those days
    would delete, so a backfill that cleaned (rather than only counted) would show.
    """
    dagster_ui.world.add(age=8 * DAY, size=500, now=_at_three(min(DAILY_FILES)))
    before = _application_state(dagster_ui.world)
    params = {
        "assetSelection": [{"path": [RECLAIMED]}],
        "partitionNames": sorted(daily_runs.run_ids),
        "title": "rebuild the simulated days",
    }
    launched = dagster_ui.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    seen: list[dict] = [{}]

    def done() -> bool:
        found = dagster_ui.graphql(BACKFILL_STATUS, {"id": launched["backfillId"]})
        seen[0] = found["partitionBackfillOrError"]
        return seen[0]["status"] in BACKFILL_DONE and all(
            r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in seen[0]["runs"]
        )

    wait_until(done, timeout=240, interval=1, what=lambda: f"the backfill to end: {seen[0]}")
    state = seen[0]
    return Backfill(launched["backfillId"], state["status"], state["runs"], before)


def test_backfill_reproduces_the_days_and_deletes_nothing(dagster_ui, daily_runs, backfill):
    """Backfilling the days the cleanup ran gives each day the very figures its run gave
    (same bytes, files, runAt: rebuilt from the run log), in one run, and deletes nothing:
    the application's rows (one of them expired), the files on disk and the run log are
    unchanged."""
    assert backfill.status in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    [run] = backfill.runs  # single-run backfill policy: the whole range in one run
    assert run["status"] == "SUCCESS"

    partitions = sorted(daily_runs.run_ids)
    events = _materializations(dagster_ui, RECLAIMED, partitions)
    rebuilt = {m["partition"]: m for m in events if m["runId"] == run["runId"]}
    assert sorted(rebuilt) == partitions
    for partition, run_id in daily_runs.run_ids.items():
        [original] = [m for m in events if m["runId"] == run_id]
        assert {**rebuilt[partition], "runId": run_id} == original

    assert _application_state(dagster_ui.world) == backfill.before


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


@dataclass(frozen=True)
class Page:
    """A page of the UI and what it must show before its screenshot is taken."""

    path: str  # may hold {backfill}: the id of the test's backfill
    texts: list[str]
    click: str | None = None  # a tab or button to press first (its exact label)
    visible: str | None = None  # CSS selector of a drawing that must be on screen
    image: bool = False  # `visible` is an <img> that must have loaded (not a broken image)


def _screenshot(browser, url: str, name: str, spec: Page) -> str:
    """Open `url` (not spec.path), wait until it shows what `spec` expects, save a
    screenshot, return the page's text."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(url, wait_until="domcontentloaded", timeout=60_000)
        if spec.click:
            page.get_by_text(spec.click, exact=True).first.click(timeout=60_000)
        for text in spec.texts:
            # Dagster also renders some labels twice, once hidden (to measure truncation).
            page.get_by_text(text, exact=False).filter(visible=True).first.wait_for(timeout=60_000)
        if spec.visible:
            drawing = page.locator(spec.visible).first
            drawing.wait_for(state="visible", timeout=60_000)
            drawing.scroll_into_view_if_needed()
            if spec.image:
                loaded = drawing.evaluate("img => img.complete && img.naturalWidth > 0")
                assert loaded, f"{name}: {spec.visible} did not render"
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

    texts = ["snapshot_cleanup_job", "record_cleanup_run", "RUN_SUCCESS"]
    body = _screenshot(browser, f"{dagster_ui.url}/runs/{run_id}", "run", Page("", texts))
    assert run_id[:8] in body
    assert "cleanup summary" in body  # the job's own summary log line in the run's logs


#: Pages of the UI to open (after the simulated days and their backfill), each with what it
#: must show; the screenshot is saved as test-artifacts/<name>.png. Add a page here for each
#: new view.
PAGES = {
    "schedule": Page(
        f"/locations/{LOCATION}/schedules/daily_snapshot_cleanup",
        ["daily_snapshot_cleanup", "Europe/London", "03:00", "0 3 * * *", "snapshot_cleanup_job"],
    ),
    "job": Page(
        f"/locations/{LOCATION}/jobs/snapshot_cleanup_job",
        [
            "identify_expired_candidates",
            "finish_pending_deletes",
            "mark_and_delete_expired",
            "record_cleanup_run",
            "refresh_storage_assets",
        ],
    ),
    "automation": Page(
        "/automation",
        ["daily_snapshot_cleanup", "snapshot_cleanup_failure_teams", "snapshot_cleanup_freshness"],
    ),
    # The numeric metadata of the day partitions, plotted per partition (Metadata -> Plots).
    "reclaimed_plot": Page(
        f"/assets/{RECLAIMED}",
        [RECLAIMED, "bytesReclaimed", "deletedCount", "errors", "failedRuns", "Partition"],
        click="Plots",
        visible="canvas",
    ),
    # The 30-day view: its chart (markdown metadata) opens in a dialog, the SVG chart over
    # the summary.
    "savings_30d": Page(
        "/assets/snapshot_storage_savings_30d",
        ["snapshot_storage_savings_30d", "reclaimed from", "Per day: the"],
        click="[Show Markdown]",
        visible='img[alt="Storage reclaimed per day, last 30 days"]',
        image=True,
    ),
    # Its `days` table metadata, shown as a table on the asset's page: the days of the
    # simulated runs with their own bytes.
    "savings_30d_days": Page(
        "/assets/snapshot_storage_savings_30d",
        ["bytes_reclaimed", "files_reclaimed", "5.9 KiB", "20.5 KiB", "11.7 KiB"],
        visible="table",
    ),
    "lineage": Page(
        "/assets/snapshot_storage_savings_30d?view=lineage&lineageScope=upstream&lineageDepth=3",
        ["application", "snapshot_cleanup", *LINEAGE],
    ),
    "checks_savings_30d": Page(
        "/assets/snapshot_storage_savings_30d?view=checks",
        ["savings_total_matches_run_log", "Succeeded", "Passed", "run log"],
    ),
    "checks_snapshot_files": Page(
        "/assets/SnapshotFiles?view=checks",
        ["no_overdue_parse_session_snapshots", "Succeeded", "Passed", "0 live, unlinked"],
    ),
    "backfill": Page(
        "/runs/b/{backfill}",
        [RECLAIMED, "2026-11-17", "2026-11-19", "Succeeded", "100% completed"],
    ),
}


@pytest.mark.parametrize("name", sorted(PAGES))
def test_browser_shows_page(dagster_ui, browser, backfill, name):
    spec = PAGES[name]
    url = dagster_ui.url + spec.path.format(backfill=backfill.id)
    body = _screenshot(browser, url, name, spec)
    missing = [t for t in spec.texts if t not in body]
    assert not missing, f"{name} page lacks {missing}"


def test_failed_run_alerts_through_the_daemon_to_the_webhook(dagster_ui):
    """In the deployment: a failed cleanup run is picked up by dagster-msteams' failure
    sensor in the daemon, which posts a card with the run's errors to
    SNAPSHOT_OPS_TEAMS_WEBHOOK_URL; a run failed by a step is not retried automatically."""
    client = _client(dagster_ui)
    run_id = client.submit_job_execution(
        "snapshot_cleanup_job",
        repository_location_name=LOCATION,
        repository_name=REPOSITORY,
        run_config={"ops": {"identify_expired_candidates": {"config": {"batch_size": 0}}}},
    )
    assert _wait(client, run_id) == DagsterRunStatus.FAILURE

    def cards() -> list[str]:
        texts = [
            b["attachments"][0]["content"]["body"][0]["text"] for b in dagster_ui.alerts.bodies
        ]
        return [t for t in texts if f"run: {run_id}" in t]

    wait_until(  # the sensor is evaluated every 30 s
        cards,
        timeout=150,
        interval=1,
        what=lambda: f"an alert for {run_id}: {dagster_ui.alerts.bodies}",
    )
    [text] = cards()
    assert text.startswith("snapshot_cleanup_job failed\n")
    assert "errors (1):" in text and "batch_size must be at least 1" in text
    # A failed step needs a person: the instance's retry policy only retries crashed runs.
    retries = """
    query ($runId: String!) {
      runsOrError(filter: {tags: [{key: "dagster/parent_run_id", value: $runId}]}) {
        ... on Runs { results { runId } }
      }
    }
    """
    assert dagster_ui.graphql(retries, {"runId": run_id})["runsOrError"]["results"] == []
