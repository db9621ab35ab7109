"""Every message leads to the fix, and nothing is kept without being reported.

- Each value an error message suggests (a reference_time, a max_deletions, a storage or
  database URL, a timezone, a resource setting) is fed back and must be accepted.
- When the storage check stops a run, the message names the reconciliation report, and that
  report, with the same URLs, shows every live row's object missing in a wrong place and
  none in the right one (the switch it names is fed back in test_missing_objects.py).
- A row with a NULL "createdAt" is kept, and counted in the run's metadata, a warning and
  the backlog check.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import sys

import pytest
import sqlalchemy as sa
from dagster import AssetCheckEvaluation, DagsterInstance

from snapshot_ops import reconcile
from snapshot_ops.db import database_url
from snapshot_ops.defs.assets import OVERDUE_CHECK
from snapshot_ops.defs.resources import SnapshotDatabase
from snapshot_ops.demo import app_tables
from snapshot_ops.errors import ConfigError
from snapshot_ops.rules import TEMPORARY_TYPE, make_policy, parse_reference_time
from snapshot_ops.settings import schedule_timezone
from snapshot_ops.storage import open_storage
from snapshot_ops_tests.support.jobs import failure_message, run_cleanup, step_metadata
from snapshot_ops_tests.support.scenarios import DAY, bulk_add, state
from snapshot_ops_tests.support.world import NOW

#: An instant with its offset, as the messages write them.
INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?[+-]\d{2}:\d{2}")
#: An instant a message suggests: "e.g. X" or "write X" (not the refused value, not "now is").
SUGGESTED_INSTANT = re.compile(rf"(?:e\.g\.|write) ({INSTANT.pattern})")
#: What a message suggests writing instead: "write X" or "did you mean X".
SUGGESTED = re.compile(r"(?:write|did you mean) (\S+)")


# -- reference_time --------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    "value",
    [
        "2026-11-25",  # a date alone
        "2026-11-25T03:00",
        "2026-11-25 03:00:00",
        "20261125T030000",
        "2026-12-25",  # no offset, and in the future even as UTC
        "2026-12-25T03:00:00+00:00",  # in the future
        "2026-11-29T03:05:01+00:00",  # one second past the tolerance
        "yesterday",
        "25/11/2026 03:00",
    ],
)
def test_every_reference_time_a_message_suggests_is_accepted(value):
    now = dt.datetime(2026, 11, 29, 3, 0, tzinfo=dt.UTC)
    with pytest.raises(ConfigError) as refused:
        parse_reference_time(value, now)
    suggestions = SUGGESTED_INSTANT.findall(str(refused.value))
    assert suggestions, str(refused.value)
    for suggestion in suggestions:
        parse_reference_time(suggestion, now)  # accepted
    assert "leave it unset" in str(refused.value) or "write" in str(refused.value)


@pytest.mark.unit
def test_a_date_alone_is_suggested_as_that_midnight_in_utc():
    now = dt.datetime(2026, 11, 29, 3, 0, tzinfo=dt.UTC)
    with pytest.raises(ConfigError) as refused:
        parse_reference_time("2026-11-25", now)
    assert "write 2026-11-25T00:00:00+00:00" in str(refused.value)
    assert parse_reference_time("2026-11-25T00:00:00+00:00", now) == dt.datetime(
        2026, 11, 25, tzinfo=dt.UTC
    )


def test_the_job_refuses_a_date_alone_and_runs_with_the_time_it_suggests(world):
    old = world.add(age=10 * DAY, now=dt.datetime(2026, 11, 25, tzinfo=dt.UTC))
    refused = world.run(reference_time="2026-11-25")
    assert not refused.success and state(world)[old] == (False, True)
    [suggestion] = SUGGESTED_INSTANT.findall(failure_message(refused))
    assert suggestion == "2026-11-25T00:00:00+00:00"
    assert world.run(reference_time=suggestion).success
    assert state(world)[old] == (True, False)


@pytest.mark.unit
def test_the_defaults_a_bound_message_names_are_accepted():
    with pytest.raises(ConfigError, match=r"the default is 7\)"):
        make_policy(reference_time=None, retention_days=0, max_deletions=0, now=NOW)
    make_policy(reference_time=None, retention_days=7, max_deletions=0, now=NOW)


# -- the cap ---------------------------------------------------------------------------------


def test_the_cap_message_suggests_a_max_deletions_and_a_dry_run_that_both_run(world):
    ids = bulk_add(world, 5)
    refused = world.run(max_deletions=3)
    assert not refused.success
    message = failure_message(refused)
    [cap] = re.findall(r"max_deletions: (\d+)", message)
    assert "dry_run: true" in message
    assert world.run(dry_run=True).success
    assert all(state(world)[i] == (False, True) for i in ids)
    assert world.run(max_deletions=int(cap)).success
    assert all(state(world)[i] == (True, False) for i in ids)


def test_batch_size_zero_names_the_default_which_runs(world):
    ids = bulk_add(world, 3)
    refused = world.run(batch_size=0)
    [default] = re.findall(r"the default is (\d+)", failure_message(refused))
    assert world.run(batch_size=int(default)).success
    assert all(state(world)[i] == (True, False) for i in ids)


# -- the storage check -----------------------------------------------------------------------


def test_a_storage_stop_names_the_report_that_tells_a_wrong_place(world, tmp_path, monkeypatch):
    expired = bulk_add(world, 3, age=10 * DAY, label="expired")
    young = bulk_add(world, 30, age=DAY, label="young")
    wrong = tmp_path / "empty-mount-point"
    wrong.mkdir()

    stopped = run_cleanup(world.db_url, wrong.as_uri())

    assert not stopped.success
    message = failure_message(stopped)
    assert "If a volume is not mounted there, mount it" in message
    assert "python -m snapshot_ops.reconcile" in message
    assert "accept_missing_objects: true" in message  # fed back in test_missing_objects.py
    assert all(state(world)[i] == (False, True) for i in expired + young)

    # The report the message points to, with the same URLs: every live row's object is
    # missing there (a wrong place); with the right URL, none is.
    def report(storage_url: str) -> dict:
        monkeypatch.setenv("SNAPSHOT_OPS_DATABASE_URL", world.db_url)
        monkeypatch.setenv("SNAPSHOT_OPS_STORAGE_URL", storage_url)
        monkeypatch.setattr(sys, "stdout", io.StringIO())
        code = reconcile.main([])
        return {"exit": code, **json.loads(sys.stdout.getvalue())}

    wrong_place = report(wrong.as_uri())
    assert (wrong_place["exit"], wrong_place["objects"]) == (3, 0)
    assert wrong_place["missing_objects"]["count"] == 33
    right_place = report(world.root.as_uri())
    assert (right_place["exit"], right_place["objects"]) == (0, 33)
    assert right_place["missing_objects"]["count"] == 0


# -- URLs, timezone, table names -------------------------------------------------------------


@pytest.fixture
def cloud_env(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;"
        "EndpointSuffix=core.windows.net",
    )


@pytest.mark.unit
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3:///bucket/prefix", "s3://bucket/prefix"),
        ("s3://bucket/a//b", "s3://bucket/a/b"),
        ("az://container/./x", "az://container/x"),
        ("s3://bucket/prefix?versionId=1", "s3://bucket/prefix"),
        ("az://container/prefix#top", "az://container/prefix"),
    ],
)
def test_every_object_store_url_a_message_suggests_is_accepted(cloud_env, url, expected):
    with pytest.raises(ConfigError) as refused:
        open_storage(url)
    [suggestion] = SUGGESTED.findall(str(refused.value))
    assert suggestion == expected
    open_storage(suggestion).close()


@pytest.mark.unit
@pytest.mark.parametrize("url", ["s3://bucket/../elsewhere", "s3:///../elsewhere"])
def test_a_parent_segment_gets_no_suggestion(cloud_env, url):
    with pytest.raises(ConfigError) as refused:
        open_storage(url)
    assert SUGGESTED.findall(str(refused.value)) == []


@pytest.mark.unit
@pytest.mark.parametrize("form", ["two slashes", "bare path"])
def test_every_folder_url_a_message_suggests_is_accepted(tmp_path, form):
    root = tmp_path / "snapshots"
    root.mkdir()
    url = f"file://{str(root).lstrip('/')}" if form == "two slashes" else str(root)
    with pytest.raises(ConfigError) as refused:
        open_storage(url)
    [suggestion] = SUGGESTED.findall(str(refused.value))
    assert suggestion == root.as_uri()
    open_storage(suggestion).close()


@pytest.mark.unit
def test_the_database_urls_and_timezone_a_message_suggests_are_accepted():
    with pytest.raises(ConfigError) as refused:
        database_url("not a database url")
    examples = re.findall(r"(?:postgresql|sqlite)://\S+", str(refused.value))
    assert len(examples) == 2
    for example in examples:
        database_url(example)
    with pytest.raises(ConfigError) as refused:
        schedule_timezone("Europe/Londn")
    [zone] = re.findall(r"such as (\S+)", str(refused.value))
    assert schedule_timezone(zone) == zone


def test_a_table_called_otherwise_is_found_with_the_setting_the_message_names(db_url, storage_root):
    files, attachments = app_tables(sa.MetaData())
    tables = sa.MetaData()
    renamed = files.to_metadata(tables, name="snapshot_files")
    attachments.to_metadata(tables)
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    tables.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(renamed).values(
                fileId="f1",
                snapshotType=TEMPORARY_TYPE,
                storageKey="f1.pdf",
                sizeBytes=3,
                createdAt=NOW - 10 * DAY,
            )
        )
    engine.dispose()
    (storage_root / "f1.pdf").write_bytes(b"abc")

    def run(**database):
        return run_cleanup(SnapshotDatabase(url=db_url, **database), storage_root.as_uri())

    refused = run()
    [setting] = re.findall(r"set (\w+) \(and app_schema", failure_message(refused))
    assert setting == "snapshot_files_table"
    assert run(**{setting: "snapshot_files"}).success
    assert not (storage_root / "f1.pdf").exists()


# -- a NULL "createdAt" ----------------------------------------------------------------------


def test_a_row_without_created_at_is_kept_and_reported(nullable_world):
    world = nullable_world
    expired = world.add(age=10 * DAY)
    undated = world.add(age=10 * DAY)
    linked_undated = world.add(age=10 * DAY, linked=True)  # kept for its order anyway
    with world.engine.begin() as conn:
        conn.execute(
            sa.update(world.files)
            .where(world.files.c.fileId.in_([undated, linked_undated]))
            .values(createdAt=None)
        )

    with DagsterInstance.ephemeral() as instance:
        result = world.run(raise_on_error=True, instance=instance)
        warnings = [
            entry.user_message
            for entry in instance.all_logs(result.run_id)
            if entry.level == logging.WARNING
        ]

    assert result.success
    assert state(world)[expired] == (True, False)
    assert state(world)[undated] == (False, True)
    assert step_metadata(result, "identify_expired_candidates")["keptWithoutCreatedAt"] == 1
    assert any(
        '1 live, unlinked ParseSessionSnapshot rows have no "createdAt"' in w for w in warnings
    )
    [check] = [
        e.event_specific_data
        for e in result.all_events
        if isinstance(e.event_specific_data, AssetCheckEvaluation)
        and e.event_specific_data.check_name == OVERDUE_CHECK
    ]
    assert not check.passed
    assert check.metadata["undated"].value == 1
    assert check.metadata["overdue"].value == 0
