""" "Already missing" is evidence, not success.

A store that is not the place the database describes (an unmounted volume's empty mount
point, a bucket or container that holds nothing under the prefix, a prefix with a typo, a
network mount dropped mid-run) answers "not found" for every object. Taken as "already
deleted", a run would mark every candidate, settle every journal entry, succeed, and leave
the real objects forever. Through the real job (`World.run`, and `dagster job execute` for
a killed run), with the rows, files, journal and run log checked afterwards:

- Before marking, at 1, 6 or 25 candidates (with and without other live rows): the empty
  mount point of a volume that is not mounted (a real bind mount, then unmounted) and an
  empty folder each stop the run with nothing marked; with the volume back, the next run
  deletes them and counts them deleted.
- The application wrote into the bare mount point while the volume was not mounted: the
  newest row's object is there, every older one is not. The run stops untouched (an object
  younger than the retention does not vouch for the store), and with the volume back it
  deletes the expired objects, counted as deleted.
- Objects removed by hand while the store holds other rows' objects older than the
  retention, or most of a sample of younger ones (2 of 10 removed): the run goes on and
  counts them as already missing, never as deleted; with most of the sample gone (7 of
  10), it stops.
- A dry run on an unmounted volume fails with the real run's message after `dry run:`,
  touching nothing; with the volume back it lists the candidates after one lookup.
- A store that really holds none of them: the one-run switch `accept_missing_objects: true`
  goes on (counted missing), the next run without it stops again; `verify_storage: false`
  is refused naming the switch; a healthy run costs one lookup.
- The journal: a run killed after marking, the volume unmounted. The next run stops in its
  first step; with the volume unmounted after that step, its journal sweep stops; entries
  stay pending either way, and with the volume back they are deleted, counted deleted.
- The volume unmounted between two batches: the run stops, every row it marked after that
  stays journaled, the rest stay live, and the next run finishes with nothing missing.
- S3 (moto) and Azure Blob (Azurite): a bucket or container holding nothing under the
  prefix, or a prefix with a typo, stops the run before marking.
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from dagster import DagsterInstance

from snapshot_ops import checkpoints, savings
from snapshot_ops.defs.jobs import DRY_RUN_STOP
from snapshot_ops.defs.resources import SnapshotDatabase, SnapshotStorage
from snapshot_ops.sentinel import STRATA
from snapshot_ops_tests.support.jobs import failure_message, run_cleanup, step_metadata
from snapshot_ops_tests.support.scenarios import DAY, bulk_add, start_job, wait_paused
from snapshot_ops_tests.support.stores import TEST_RETRY, azurite_connection_string
from snapshot_ops_tests.support.waiting import wait_until
from snapshot_ops_tests.support.world import NOW, World

HOUR = dt.timedelta(hours=1)

SWITCH = "accept_missing_objects: true"


class Volume:
    """A folder mounted at a mount point with a bind mount (needs root).

    Files written through the mount point live in `data`; unmounted, the mount point is the
    empty folder it was before, as when a volume is not mounted.
    """

    def __init__(self, base: Path) -> None:
        self.data = base / "volume"
        self.mount_point = base / "mnt"
        self.data.mkdir(parents=True)
        self.mount_point.mkdir(parents=True)
        # Kept here: os.path.ismount cannot see a bind mount from the same file system.
        self.mounted = False

    def mount(self) -> None:
        subprocess.run(
            ["mount", "--bind", str(self.data), str(self.mount_point)],
            check=True,
            capture_output=True,
            text=True,
        )
        self.mounted = True

    def unmount(self) -> None:
        subprocess.run(["umount", str(self.mount_point)], check=True)
        self.mounted = False

    def holds(self, world: World, file_id: str) -> bool:
        """Whether the volume holds the row's object (mounted or not)."""
        return (self.data / world.row(file_id).storageKey).is_file()


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Volume]:
    volume = Volume(tmp_path / "disk")
    try:
        volume.mount()
    except (OSError, subprocess.CalledProcessError) as exc:  # OSError: no mount command
        detail = getattr(exc, "stderr", None) or exc
        pytest.skip(
            f"cannot mount a folder here ({detail}): these cases need root allowed to mount "
            "(CAP_SYS_ADMIN); the same stops are checked on an empty folder by "
            "test_an_empty_folder_stops_the_run_before_marking"
        )
    try:
        yield volume
    finally:
        if volume.mounted:
            volume.unmount()


@pytest.fixture
def volume_world(db_url: str, volume: Volume) -> Iterator[World]:
    """A World whose storage URL is the volume's mount point."""
    world = World(db_url, volume.mount_point)
    yield world
    world.engine.dispose()


def arrange(world: World, expired: int, *, others: bool) -> tuple[list[str], list[str]]:
    """`expired` candidates (oldest last) and, with `others`, 4 rows that must stay (2
    young, 2 linked to an order), all with their files; return (candidates, kept)."""
    candidates = bulk_add(world, expired, label="expired") if expired else []
    kept = []
    if others:
        kept = bulk_add(world, 2, age=DAY, label="young")
        kept += bulk_add(world, 2, linked=True, label="linked")
    return candidates, kept


def assert_untouched(world: World, rows: list[str]) -> None:
    assert world.live_rows() == len(rows)
    assert world.pending() == []
    [log] = world.run_log()
    assert (log.status, log.marked_count, log.deleted_count, log.missing_count) == (
        "failed",
        0,
        0,
        0,
    )


# -- before marking ----------------------------------------------------------------------------


@pytest.mark.parametrize("others", [False, True], ids=["only-candidates", "with-others"])
@pytest.mark.parametrize("count", [1, 6, 25])
def test_an_unmounted_volume_stops_the_run_before_marking(volume_world, volume, count, others):
    world = volume_world
    candidates, kept = arrange(world, count, others=others)
    volume.unmount()

    stopped = world.run()

    assert not stopped.success
    message = failure_message(stopped)
    where = f"file://{volume.mount_point.resolve()}"
    assert f"looked in {where} for {min(count, 20)} expired candidates' objects" in message
    # The other rows: the linked ones are older than the retention, the young ones sampled.
    assert ("2 files orders link, older than the retention" in message) is others
    assert ("of 1 objects of younger live rows" in message) is others
    assert ("no younger live row names an object" in message) is not others
    assert "Nothing was marked or deleted" in message
    assert "If a volume is not mounted there, mount it" in message and SWITCH in message
    assert_untouched(world, candidates + kept)
    assert all(volume.holds(world, i) for i in candidates + kept)

    volume.mount()  # the volume is back: everything it held is deleted and counted so
    assert world.run().success
    assert all(world.is_deleted(i) and not volume.holds(world, i) for i in candidates)
    assert all(not world.is_deleted(i) and volume.holds(world, i) for i in kept)
    last = world.run_log()[-1]
    assert (last.deleted_count, last.missing_count, last.bytes_reclaimed) == (
        count,
        0,
        100 * count,
    )


def test_objects_written_into_the_bare_mount_point_do_not_vouch_for_the_store(volume_world, volume):
    # The volume goes away; the application goes on writing new snapshots into the bare
    # mount point. The newest live row's object is there, every older one is not.
    world = volume_world
    expired = bulk_add(world, 3, label="expired")
    linked = bulk_add(world, 1, linked=True, label="linked")
    newer = bulk_add(world, 2, age=DAY, label="newer")
    volume.unmount()
    written = world.add(age=HOUR, key="2026/12/n3.pdf")  # into the mount point itself
    assert (volume.mount_point / "2026/12/n3.pdf").is_file()

    stopped = world.run()

    assert not stopped.success
    message = failure_message(stopped)
    assert f"looked in file://{volume.mount_point.resolve()} for 3 expired candidates'" in message
    assert "1 files orders link, older than the retention" in message
    # One row of each span of the retention: a newer one, and the one written meanwhile.
    assert "of 2 objects of younger live rows, sampled across the retention" in message
    assert "1 exists, where at least 3, and two thirds of those sampled, must" in message
    assert "Nothing was marked or deleted" in message and SWITCH in message
    assert_untouched(world, expired + linked + newer + [written])
    assert all(volume.holds(world, i) for i in expired + linked + newer)

    volume.mount()  # back: the expired objects are deleted and counted as deleted
    assert world.run().success
    assert all(world.is_deleted(i) and not volume.holds(world, i) for i in expired)
    assert all(not world.is_deleted(i) and volume.holds(world, i) for i in linked + newer)
    last = world.run_log()[-1]
    assert (last.deleted_count, last.missing_count) == (3, 0)


def test_a_dry_run_stops_where_the_real_run_would(volume_world, volume):
    world = volume_world
    candidates, kept = arrange(world, 2, others=True)
    volume.unmount()

    dry = world.run(dry_run=True)
    real = world.run()

    # The dry run looks the objects up as the real run does, and fails with its message.
    assert not dry.success and not real.success
    stop = failure_message(real).split("Failure: ", 1)[1]
    assert f"Failure: {DRY_RUN_STOP}{stop}" in failure_message(dry)
    assert "the storage holds none of the objects" in stop
    assert world.live_rows() == 6 and world.pending() == []
    assert [(log.status, bool(log.dry_run), log.marked_count) for log in world.run_log()] == [
        ("failed", True, 0),
        ("failed", False, 0),
    ]
    assert all(volume.holds(world, i) for i in candidates + kept)

    volume.mount()
    dry = world.run(dry_run=True)
    assert dry.success
    figures = step_metadata(dry, "identify_expired_candidates")
    assert figures["storageLookups"] == 1
    assert sorted(r.data["fileId"] for r in figures["wouldDelete"].records) == sorted(candidates)
    assert all(volume.holds(world, i) for i in candidates + kept)


@pytest.mark.parametrize("count", [1, 6, 25])
def test_an_empty_folder_stops_the_run_before_marking(world, tmp_path, count):
    candidates, kept = arrange(world, count, others=True)
    real_root = world.root
    world.root = tmp_path / "empty"
    world.root.mkdir()

    stopped = world.run()

    assert not stopped.success
    assert f"looked in file://{world.root.resolve()} for " in failure_message(stopped)
    world.root = real_root
    assert_untouched(world, candidates + kept)
    assert all(world.has_file(i) for i in candidates + kept)

    assert world.run().success  # pointed at the right folder
    assert all(world.is_deleted(i) and not world.has_file(i) for i in candidates)
    assert world.run_log()[-1].deleted_count == count


@pytest.mark.parametrize("present", [0, 3])
def test_objects_removed_by_hand_are_counted_missing_not_deleted(world, present):
    # The oldest candidates' objects were removed by hand; the store still holds the other
    # live rows' objects (and maybe some candidates'), so it is the right place.
    removed = bulk_add(world, 6, age=20 * DAY, label="removed")
    others = bulk_add(world, present, label="present") if present else []
    _, kept = arrange(world, 0, others=True)
    for file_id in removed:
        (world.root / world.row(file_id).storageKey).unlink()

    result = world.run()

    assert result.success
    assert all(world.is_deleted(i) for i in removed + others)
    assert not any(world.has_file(i) for i in others)
    assert all(not world.is_deleted(i) and world.has_file(i) for i in kept)
    [log] = world.run_log()
    assert (log.status, log.deleted_count, log.missing_count, log.bytes_reclaimed) == (
        "succeeded",
        present,
        6,
        100 * present,
    )
    summary = step_metadata(result, "record_cleanup_run")
    assert (summary["deletedCount"], summary["alreadyMissing"]) == (present, 6)
    [figures] = [
        {k: v.value for k, v in e.step_output_data.metadata.items()}
        for e in result.events_for_node("mark_and_delete_expired")
        if e.event_type_value == "STEP_OUTPUT"
    ]
    assert (figures["deleted"], figures["alreadyMissing"]) == (present, 6)
    # The storage figures count the files the run removed: the day's, and the 30-day
    # view's (compute_savings) over a window holding that day.
    catalog = SnapshotDatabase(url=world.db_url).open_catalog()
    try:
        day = savings.day_figures(catalog, NOW.date(), "UTC")
        view = savings.compute_savings(catalog, NOW.date(), "UTC")
    finally:
        catalog.engine.dispose()
    assert (day.deleted_count, day.missing_count) == (present, 6)
    assert (view.total_files, view.total_bytes) == (present, 100 * present)


@pytest.mark.parametrize(("witnesses_removed", "goes_on"), [(0, True), (2, True), (7, False)])
def test_with_the_candidates_objects_gone_the_younger_rows_objects_must_mostly_be_there(
    world, witnesses_removed, goes_on
):
    # No object older than the retention is left (no order links a file): the store is
    # judged by one young row per span of the retention. A few of those removed by hand
    # leave it vouched for; most of them missing is a store that is not there.
    removed = bulk_add(world, 6, age=20 * DAY, label="removed")
    young = [world.add(age=(STRATA - n - 0.5) * (7 * DAY / STRATA)) for n in range(STRATA)]
    for file_id in removed + young[:witnesses_removed]:
        (world.root / world.row(file_id).storageKey).unlink()

    result = world.run()

    assert result.success is goes_on
    assert all(not world.is_deleted(i) for i in young)
    if goes_on:
        assert all(world.is_deleted(i) for i in removed) and world.pending() == []
        [log] = world.run_log()
        assert (log.deleted_count, log.missing_count) == (0, 6)
        figures = step_metadata(result, "identify_expired_candidates")
        assert figures["storageLookups"] == 6 + STRATA
        present = STRATA - witnesses_removed
        assert figures["storageEvidence"].startswith(f"{present} of {STRATA} objects of younger")
    else:
        message = failure_message(result)
        assert "does not hold the objects the database says it should" in message
        assert f"of {STRATA} objects of younger live rows" in message and "3 exist" in message
        assert_untouched(world, removed + young)


# -- the operator's switch, and what a healthy run costs ---------------------------------------


def test_a_store_holding_none_of_them_goes_on_only_with_the_switch_for_one_run(world):
    # The field report's world: 6 expired rows whose objects someone really removed.
    removed = bulk_add(world, 6, label="removed")
    for file_id in removed:
        (world.root / world.row(file_id).storageKey).unlink()

    stopped = world.run()
    assert not stopped.success and SWITCH in failure_message(stopped)
    assert world.live_rows() == 6

    accepted = world.run(accept_missing_objects=True)

    assert accepted.success
    assert step_metadata(accepted, "identify_expired_candidates")["acceptedMissingObjects"]
    assert all(world.is_deleted(i) for i in removed) and world.pending() == []
    last = world.run_log()[-1]
    assert (last.deleted_count, last.missing_count) == (0, 6)
    assert step_metadata(accepted, "record_cleanup_run")["deletedCount"] == 0

    # The switch was for that run: the next one, without it, checks again and stops.
    later = bulk_add(world, 2, label="later")
    for file_id in later:
        (world.root / world.row(file_id).storageKey).unlink()
    assert not world.run().success
    assert world.live_rows() == 2


def test_the_switch_changes_nothing_while_the_store_holds_objects(world):
    expired, kept = arrange(world, 4, others=True)
    result = world.run(accept_missing_objects=True)
    assert result.success
    assert not step_metadata(result, "identify_expired_candidates")["acceptedMissingObjects"]
    assert all(world.is_deleted(i) and not world.has_file(i) for i in expired)
    assert all(world.has_file(i) for i in kept)


def test_verify_storage_false_is_refused_naming_the_switch(world):
    candidates, kept = arrange(world, 3, others=True)
    result = world.run(verify_storage=False)
    assert not result.success
    message = failure_message(result)
    assert "bad configuration: verify_storage: false is no longer accepted" in message
    assert SWITCH in message
    assert world.live_rows() == len(candidates + kept)
    assert all(world.has_file(i) for i in candidates + kept)


def test_a_healthy_run_looks_up_one_object(world):
    arrange(world, 30, others=True)
    result = world.run()
    assert result.success
    assert step_metadata(result, "identify_expired_candidates")["storageLookups"] == 1


# -- the journal, and a volume that goes away during a run ---------------------------------------


def run_paused_at(world: World, gate: Path, monkeypatch, checkpoint: str, meanwhile, **config):
    """Run the job in process, paused at `checkpoint` while `meanwhile()` runs; return the
    run's result."""
    gate.mkdir()
    monkeypatch.setenv(checkpoints.CRASH_AT, checkpoint)
    monkeypatch.setenv(checkpoints.CRASH_ACTION, f"pause:{gate}")
    checkpoints.reset()
    outcome: list = []
    run = threading.Thread(target=lambda: outcome.append(world.run(**config)))
    run.start()
    try:
        wait_paused(gate)
        meanwhile()
    finally:
        (gate / "paused").unlink(missing_ok=True)
        run.join(timeout=120)
        monkeypatch.delenv(checkpoints.CRASH_AT)
        checkpoints.reset()
    [result] = outcome
    return result


def test_journal_entries_are_not_settled_while_the_volume_is_unmounted(
    volume_world, volume, tmp_path, monkeypatch
):
    world = volume_world
    candidates, kept = arrange(world, 12, others=True)
    home = tmp_path / "home"
    killed = start_job(world, home, batch_size=100, SNAPSHOT_OPS_CRASH_AT="before_delete")
    output = killed.communicate(timeout=300)[0]
    assert killed.returncode == -signal.SIGKILL, output[-3000:]
    assert {p.file_id for p in world.pending()} == set(candidates)  # marked, not deleted
    volume.unmount()

    with DagsterInstance.from_config(str(home)) as instance:
        [killed_run] = instance.get_runs()
        instance.report_run_failed(killed_run)  # as run monitoring does for a dead worker

        # The next run stops in its first step: no live row's object is there.
        first = world.run(instance=instance)
        assert not first.success
        assert "holds none of the objects" in failure_message(first)
        assert len(world.pending()) == 12

        # The volume is back for that run's first step and gone for its journal sweep.
        volume.mount()
        sweep = run_paused_at(
            world,
            tmp_path / "gate",
            monkeypatch,
            "after_select",
            volume.unmount,
            instance=instance,
        )
        assert not sweep.success
        message = failure_message(sweep)
        assert f"12 objects came back already missing from file://{volume.mount_point}" in (message)
        assert "no longer holds" in message and SWITCH in message
        entries = world.pending()
        assert {p.file_id for p in entries} == set(candidates)
        assert all(p.last_error.startswith("not found, not settled") for p in entries)
        assert all(world.is_deleted(i) and volume.holds(world, i) for i in candidates)

        volume.mount()
        assert world.run(instance=instance).success

    assert world.pending() == []
    assert not any(volume.holds(world, i) for i in candidates)
    assert all(not world.is_deleted(i) and volume.holds(world, i) for i in kept)
    logs = world.run_log()
    assert sum(log.deleted_count for log in logs) == 12
    assert sum(log.missing_count for log in logs) == 0


def test_a_volume_unmounted_between_two_batches_stops_the_run(
    volume_world, volume, tmp_path, monkeypatch
):
    world = volume_world
    candidates, kept = arrange(world, 30, others=True)
    oldest_batch = candidates[20:]  # bulk_add makes the last ones the oldest

    def unmount_after_the_first_batch() -> None:
        # The first batch is deleted and settled behind the marking, which waits here.
        wait_until(lambda: world.pending() == [], timeout=60, what="the first batch settled")
        volume.unmount()

    stopped = run_paused_at(
        world,
        tmp_path / "gate",
        monkeypatch,
        "after_mark_batch:1",
        unmount_after_the_first_batch,
        batch_size=10,
    )

    assert not stopped.success
    message = failure_message(stopped)
    assert f"came back already missing from file://{volume.mount_point}" in message
    assert "no longer holds" in message
    [log] = world.run_log()
    assert (log.status, log.deleted_count, log.missing_count) == ("failed", 10, 0)
    assert all(world.is_deleted(i) and not volume.holds(world, i) for i in oldest_batch)
    marked_later = {i for i in candidates[:20] if world.is_deleted(i)}
    assert marked_later  # the batch marked after the unmount, at least
    assert {p.file_id for p in world.pending()} == marked_later
    assert all(volume.holds(world, i) for i in candidates[:20] + kept)

    volume.mount()
    assert world.run().success
    assert all(world.is_deleted(i) and not volume.holds(world, i) for i in candidates)
    assert all(not world.is_deleted(i) and volume.holds(world, i) for i in kept)
    logs = world.run_log()
    assert sum(log.deleted_count for log in logs) == 30
    assert sum(log.missing_count for log in logs) == 0


# -- object stores ---------------------------------------------------------------------------


@pytest.fixture
def empty_place(request):
    """Factory: the URL of a bucket (s3) or container (azure) that exists and holds
    nothing, with the test's store's prefix; removed after the test."""
    made: list = []

    def make(kind: str) -> str:
        store = request.getfixturevalue(f"{kind}_store")
        name = f"empty-{uuid.uuid4().hex[:12]}"
        if kind == "s3":
            store.client.create_bucket(Bucket=name)
            made.append(lambda: store.client.delete_bucket(Bucket=name))
            return f"s3://{name}/{store.prefix}"
        port = request.getfixturevalue("azurite_server")[1]
        service = BlobServiceClient.from_connection_string(azurite_connection_string(port))
        service.create_container(name)
        made.append(lambda: service.delete_container(name))
        return f"az://{name}/{store.prefix}"

    yield make
    for remove in made:
        remove()


@pytest.mark.parametrize("place", ["empty-bucket", "prefix-typo"])
@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_an_object_store_place_holding_nothing_stops_the_run(
    request, postgres_url, storage_root, empty_place, kind, place
):
    store = request.getfixturevalue(f"{kind}_store")
    world = World(postgres_url, storage_root, store)
    try:
        candidates = [world.add(age=(10 + n) * DAY) for n in range(6)]
        kept = [world.add(age=DAY), world.add(age=30 * DAY, linked=True)]
        # 'snapshot' for 'snapshots': the same bucket, a prefix under which nothing is.
        url = empty_place(kind) if place == "empty-bucket" else store.url[:-1]

        stopped = run_cleanup(
            SnapshotDatabase(url=postgres_url), SnapshotStorage(url=url, **TEST_RETRY)
        )

        assert not stopped.success
        message = failure_message(stopped)
        assert f"looked in {url.rstrip('/')} for 6 expired candidates' objects" in message
        assert "1 files orders link, older than the retention" in message and SWITCH in message
        assert world.live_rows() == 8 and world.pending() == []
        assert all(world.has_file(i) for i in candidates + kept)

        assert world.run().success  # the right place
        assert all(world.is_deleted(i) and not world.has_file(i) for i in candidates)
        assert all(world.has_file(i) for i in kept)
        assert world.run_log()[-1].deleted_count == 6
    finally:
        world.engine.dispose()
