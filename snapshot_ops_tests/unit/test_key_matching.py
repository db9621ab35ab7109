"""How a store's way of resolving names is written down and folded (storage/base.py).

`KeyMatching.fold` must give one string for every spelling a case-insensitive or
normalization-insensitive file system may take for one name, whichever of the Unicode case
rules it follows: checked here for every code point against uppercase, lowercase, titlecase,
swapped case and full case folding (and NFC/NFD when normalization is ignored), and for the
classic traps by name. It must not fold what the store keeps apart: case on a store that
only ignores normalization, normalization on one that only ignores case, nothing at all on
an exact store. `delete_in_batches` sends the spellings of one object once. The same fold is
checked against a real NTFS volume and PostgreSQL's ICU in
integration/test_key_matching.py.
"""

from __future__ import annotations

import sys
import unicodedata
from concurrent.futures import ThreadPoolExecutor

import pytest

from snapshot_ops.storage import EXACT, KeyMatching, Outcome, check_key
from snapshot_ops.storage.base import delete_in_batches
from snapshot_ops.storage.filesystem import FilesystemBackend

CASE = KeyMatching(ignores_case=True)
NORMALIZATION = KeyMatching(ignores_normalization=True)
BOTH = KeyMatching(ignores_case=True, ignores_normalization=True)


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def code_points() -> list[str]:
    return [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]


def case_spellings(c: str) -> set[str]:
    return {c.upper(), c.lower(), c.title(), c.swapcase(), c.casefold()}


def test_the_case_fold_gives_one_string_for_every_case_spelling_of_every_code_point():
    for matching in (CASE, BOTH):
        unequal = [
            (hex(ord(c)), other)
            for c in code_points()
            for other in case_spellings(c)
            if matching.fold(other) != matching.fold(c)
        ]
        assert unequal == [], matching


def test_the_normalization_fold_gives_one_string_for_every_canonical_spelling():
    for matching in (NORMALIZATION, BOTH):
        spellings = ("NFC", "NFD")
        unequal = [
            (hex(ord(c)), form)
            for c in code_points()
            for form in spellings
            if matching.fold(unicodedata.normalize(form, c)) != matching.fold(c)
        ]
        assert unequal == [], matching
    # Decomposing before the case mappings: they would otherwise split these (U+1FB7 & co).
    for c in ("\u1fb7", "\u1fc7", "\u1ff7", "\u0390"):
        assert all(BOTH.fold(nfd(other)) == BOTH.fold(c) for other in case_spellings(c))


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("2026/11/Invoice-42.pdf", "2026/11/invoice-42.pdf"),
        ("Stra\u00dfe", "STRASSE"),  # full uppercase: ß -> SS
        ("\u1e9e", "ss"),  # capital sharp s, as full case folding takes it
        ("\u212a", "k"),  # Kelvin sign
        ("\u0131", "i"),  # dotless i: uppercase I
        ("\u01c5", "\u01c4"),  # title-case digraph
        ("\u13a0", "\uab70"),  # Cherokee: case folding goes to uppercase
        ("\u03c2", "\u03a3"),  # final sigma
    ],
)
def test_the_case_fold_takes_the_classic_traps_for_one_name(one, other):
    assert CASE.fold(one) == CASE.fold(other)
    assert BOTH.fold(one) == BOTH.fold(other)
    assert one != other and EXACT.fold(one) != EXACT.fold(other)


def test_each_way_folds_only_what_it_ignores():
    assert EXACT.fold("Caf\u00e9") == "Caf\u00e9"
    # Case only: an "é" precomposed and decomposed stay two names (NTFS keeps both).
    assert CASE.fold("caf\u00e9") != CASE.fold("cafe\u0301")
    assert CASE.fold("caf\u00e9") == CASE.fold("CAF\u00c9")
    # Normalization only: case stays (a case-sensitive APFS volume).
    assert NORMALIZATION.fold("caf\u00e9") == NORMALIZATION.fold("cafe\u0301") == "caf\u00e9"
    assert NORMALIZATION.fold("Caf\u00e9") != NORMALIZATION.fold("caf\u00e9")
    assert NORMALIZATION.fold("\u212b") == "\u00c5"  # the Angstrom sign is a canonical "Å"
    # Both: any case, any canonical spelling; the result is composed (NFC).
    assert BOTH.fold("cafe\u0301") == BOTH.fold("CAF\u00c9") == "CAF\u00c9"
    # Distinct names stay distinct.
    for matching in (EXACT, CASE, NORMALIZATION, BOTH):
        assert matching.fold("a.pdf") != matching.fold("b.pdf")


def test_names_words_and_coverage_of_each_way():
    assert [m.exact for m in (EXACT, CASE, NORMALIZATION, BOTH)] == [True, False, False, False]
    assert [m.name for m in (EXACT, CASE, NORMALIZATION, BOTH)] == [
        "exact",
        "case",
        "normalization",
        "case+normalization",
    ]
    assert EXACT.describe() == "exactly, case and Unicode normalization included"
    assert CASE.describe() == "ignoring case"
    assert NORMALIZATION.describe() == "ignoring Unicode normalization"
    assert BOTH.describe() == "ignoring case and Unicode normalization"
    ways = (EXACT, CASE, NORMALIZATION, BOTH)
    covered = {(a.name, b.name) for a in ways for b in ways if a.covers(b)}
    assert covered == {
        ("exact", "exact"),
        ("case", "exact"),
        ("case", "case"),
        ("normalization", "exact"),
        ("normalization", "normalization"),
        ("case+normalization", "exact"),
        ("case+normalization", "case"),
        ("case+normalization", "normalization"),
        ("case+normalization", "case+normalization"),
    }


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "p").mkdir()
    for name in ("1.pdf", "2.pdf", "keep.pdf"):
        (tmp_path / "p" / name).write_bytes(b"data")
    backend = FilesystemBackend(str(tmp_path))
    yield tmp_path, backend
    backend.close()


def delete(backend, keys, matching):
    """`delete_in_batches` over the backend's real files, recording the names sent."""
    sent: list[str] = []

    def delete_batch(names):
        sent.extend(names)
        return {r.key: r for r in backend.delete_many(names)}

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = delete_in_batches(
            keys,
            name_of=lambda key: f"p/{check_key(key)}",
            batch_size=10,
            pool=pool,
            delete_batch=delete_batch,
            delete_one=lambda name: backend.delete_many([name])[0],
            key_matching=matching,
        )
    return results, sent


def test_spellings_of_one_object_are_sent_once_and_each_gets_its_result(folder):
    root, backend = folder
    keys = ["1.pdf", "1.PDF", "2.pdf", "1.pdf"]
    results, sent = delete(backend, keys, CASE)
    assert sorted(sent) == ["p/1.pdf", "p/2.pdf"]  # the first spelling of each object
    assert [(r.key, r.outcome) for r in results] == [
        ("1.pdf", Outcome.DELETED),
        ("1.PDF", Outcome.DELETED),
        ("2.pdf", Outcome.DELETED),
        ("1.pdf", Outcome.DELETED),
    ]
    assert [p.name for p in (root / "p").iterdir()] == ["keep.pdf"]


def test_on_an_exact_store_each_spelling_is_its_own_object(folder):
    root, backend = folder
    results, sent = delete(backend, ["1.pdf", "1.PDF"], EXACT)
    assert sorted(sent) == ["p/1.PDF", "p/1.pdf"]
    assert [r.outcome for r in results] == [Outcome.DELETED, Outcome.MISSING]
