"""How keys are matched to objects, on real file systems and real databases.

The folder backend's probe answers "ignores case, not normalization" on a real NTFS volume
(support/ntfs.py), "exact" on the test machine's own file system, and, where it cannot
create its probe file (a read-only volume), assumes the loosest; it leaves no probe file
behind. Every pair of names the NTFS volume takes for one file is folded to one key by
KeyMatching.fold and by PostgreSQL's fold (ICU), and PostgreSQL's fold agrees with every
case and canonical spelling of every code point. The shared-key check folds Unicode
normalization on PostgreSQL and SQLite (no file system here normalizes names: this is
where normalization is tested). A key in a case-insensitive folder below an exact root is
refused at delete time too. On PostgreSQL the index advice for a folding store names an
expression index that the planner then uses.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import unicodedata

import pytest
import sqlalchemy as sa

from snapshot_ops.db import Catalog, make_engine
from snapshot_ops.db.engine import key_fold
from snapshot_ops.rules import PERMANENT_TYPE
from snapshot_ops.storage import EXACT, KeyMatching, Outcome
from snapshot_ops.storage.filesystem import ASSUMED, FilesystemBackend
from snapshot_ops.storage.ratelimit import RateLimitedBackend, range_rate
from snapshot_ops_tests.support.ntfs import mount_ntfs, unmount
from snapshot_ops_tests.support.world import World

CASE = KeyMatching(ignores_case=True)
NORMALIZATION = KeyMatching(ignores_normalization=True)
BOTH = KeyMatching(ignores_case=True, ignores_normalization=True)
DAY = dt.timedelta(days=1)
#: Characters Windows does not take in a file name.
NOT_IN_NTFS_NAMES = set('/\\:*?"<>|')


def test_the_probe_finds_a_case_insensitive_volume(ntfs_folder):
    backend = FilesystemBackend(str(ntfs_folder))
    try:
        assert backend.key_matching == CASE
        assert backend.key_matching_source == "probed"
        # A run with a delete rate compares keys through the limiting wrapper: it passes on
        # its store's answer.
        assert RateLimitedBackend(backend, range_rate(10, 1)).key_matching == CASE
    finally:
        backend.close()
    assert os.listdir(ntfs_folder) == []  # the probe file is gone


def test_the_probe_finds_an_exact_folder(tmp_path):
    backend = FilesystemBackend(str(tmp_path))
    try:
        assert backend.key_matching == EXACT
        assert backend.key_matching_source == "probed"
    finally:
        backend.close()
    assert os.listdir(tmp_path) == []


def test_a_folder_that_cannot_be_probed_is_taken_to_ignore_case_and_normalization(
    read_only_ntfs_folder,
):
    backend = FilesystemBackend(str(read_only_ntfs_folder))
    try:
        assert backend.key_matching == ASSUMED == BOTH
        assert backend.key_matching_source.startswith(
            "assumed: cannot create a probe file in the root: [Errno 30] Read-only file system"
        )
    finally:
        backend.close()


def ntfs_pairs(folder) -> list[tuple[str, str]]:
    """Every pair (first name, other name) the volume takes for one file, among one-letter
    names of every code point of the Basic Multilingual Plane that has another case."""
    cased = [
        chr(c)
        for c in range(0x20, 0x10000)
        if not 0xD800 <= c <= 0xDFFF
        and chr(c) not in NOT_IN_NTFS_NAMES
        and len({chr(c), chr(c).upper(), chr(c).lower(), chr(c).casefold()}) > 1
    ]
    first: dict[int, str] = {}
    pairs = []
    for c in cased:
        name = f"x{c}"
        try:
            os.close(os.open(folder / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            first[os.stat(folder / name).st_ino] = name
        except FileExistsError:
            pairs.append((first[os.stat(folder / name).st_ino], name))
    return pairs


def test_every_pair_of_names_ntfs_takes_for_one_file_folds_to_one_key(ntfs_folder, postgres_url):
    pairs = ntfs_pairs(ntfs_folder)
    assert len(pairs) > 900  # ASCII, Latin, Greek, Cyrillic, Armenian, Georgian, ...
    assert [p for p in pairs if CASE.fold(p[0]) != CASE.fold(p[1])] == []
    engine = make_engine(postgres_url)
    try:
        assert unfolded_by_postgres(engine, pairs, CASE) == []
    finally:
        engine.dispose()


def unfolded_by_postgres(engine, pairs, matching) -> list[tuple[str, str]]:
    """The pairs PostgreSQL's fold (engine.key_fold) does not make equal."""
    one, other = sa.column("one", sa.Text), sa.column("other", sa.Text)
    rows = sa.values(one, other, name="pairs").data(pairs)
    query = sa.select(rows.c.one, rows.c.other).where(
        key_fold(rows.c.one, matching, sqlite=False)
        != key_fold(rows.c.other, matching, sqlite=False)
    )
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


def spellings(c: str, matching: KeyMatching) -> set[str]:
    found = set()
    if matching.ignores_case:
        found |= {c.upper(), c.lower(), c.title(), c.swapcase(), c.casefold()}
    if matching.ignores_normalization:
        forms = {unicodedata.normalize(f, s) for f in ("NFC", "NFD") for s in found | {c}}
        found |= forms
    return found - {c}


@pytest.mark.parametrize("matching", [CASE, NORMALIZATION, BOTH], ids=lambda m: m.name)
def test_postgres_folds_every_spelling_of_every_code_point_to_one_key(postgres_url, matching):
    pairs = [
        (chr(c), other)
        for c in range(1, sys.maxunicode + 1)
        if not 0xD800 <= c <= 0xDFFF
        for other in spellings(chr(c), matching)
    ]
    assert len(pairs) > 2000
    engine = make_engine(postgres_url)
    try:
        assert unfolded_by_postgres(engine, pairs, matching) == []
    finally:
        engine.dispose()


@pytest.fixture
def catalog(world):
    return Catalog(world.engine)


def test_the_shared_key_check_folds_normalization_where_the_store_does(world, catalog):
    decomposed = "2026/11/Cafe\u0301-42.pdf"  # as an application on macOS may write it
    world.add(age=DAY, key=decomposed, snapshot_type=PERMANENT_TYPE, with_file=False)
    composed = "2026/11/Caf\u00e9-42.pdf"
    upper = "2026/11/CAF\u00c9-42.PDF"
    keys = [composed, upper]
    assert catalog.shared_keys(keys, EXACT) == set()
    assert catalog.shared_keys(keys, CASE) == set()  # NTFS: two names
    assert catalog.shared_keys(keys, NORMALIZATION) == {composed}
    assert catalog.shared_keys(keys, BOTH) == {composed, upper}  # APFS: one name


def test_the_shared_key_check_folds_case_and_only_for_live_rows(world, catalog):
    live = world.add(age=DAY, key="a/Invoice.pdf", with_file=False)
    world.add(age=DAY, key="b/Invoice.pdf", with_file=False, deleted=True)
    keys = ["a/INVOICE.pdf", "b/invoice.pdf", "c/invoice.pdf", "a/Invoice.pdf"]
    assert catalog.shared_keys(keys, CASE) == {"a/INVOICE.pdf", "a/Invoice.pdf"}
    assert catalog.shared_keys(keys, EXACT) == {"a/Invoice.pdf"}
    assert not world.is_deleted(live)


def test_a_key_in_a_case_insensitive_folder_is_refused_at_delete_time_too(tmp_path):
    root = tmp_path / "root"
    share = root / "share"
    root.mkdir()
    mount_ntfs(tmp_path / "share.img", share)
    try:
        (share / "2026").mkdir()
        (share / "2026" / "Invoice.pdf").write_bytes(b"x")
        (root / "Local.pdf").write_bytes(b"x")
        backend = FilesystemBackend(str(root))
        try:
            assert backend.key_matching == EXACT
            results = backend.delete_many(["share/2026/Invoice.pdf", "Local.pdf"])
        finally:
            backend.close()
        assert [r.outcome for r in results] == [Outcome.REFUSED, Outcome.DELETED]
        assert "'share/2026' that ignores case in names" in results[0].error
        assert (share / "2026" / "invoice.pdf").exists()
    finally:
        unmount(share)


def test_the_index_advice_for_a_folding_store_names_an_index_the_planner_uses(pg_world):
    catalog = Catalog(pg_world.engine)
    advice = catalog.missing_indexes(CASE)
    [statement] = [s for s in advice if "storageKey" in s]
    assert statement == (
        'CREATE INDEX CONCURRENTLY IF NOT EXISTS "SnapshotFiles_storageKey_case_idx" ON '
        '"SnapshotFiles" ((upper(lower("storageKey" COLLATE "und-x-icu")))) '
        'WHERE "deletedAt" IS NULL;'
    )
    with pg_world.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(statement)
    catalog = Catalog(pg_world.engine)
    assert [s for s in catalog.missing_indexes(CASE) if "storageKey" in s] == []
    # An exact store's lookup wants the plain index, which is still missing.
    assert any('("storageKey") WHERE' in s for s in catalog.missing_indexes(EXACT))


def test_sqlite_gets_no_advice_it_cannot_follow(tmp_path):
    world = World(f"sqlite:///{tmp_path / 'app.sqlite'}", tmp_path)
    try:
        catalog = Catalog(world.engine)
        assert [s for s in catalog.missing_indexes(CASE) if "storageKey" in s] == []
    finally:
        world.engine.dispose()
