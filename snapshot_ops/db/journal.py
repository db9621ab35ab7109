"""The journal (`pending_deletes`): rows marked deleted whose object may still exist.

No transaction on the application's database is open while the store works: a run takes
journal entries as a committed *lease* (`claim_pending`: `claimed_by` = its run id,
`lease_until`), deletes their objects with no transaction open, then settles them in a new
short transaction that only touches entries it still holds (`settle_pending`). That
transaction also adds what it settled to the settling run's `cleanup_runs` row, so an
object is counted once, by the run that settled it, even when that run is later killed.
Entries are written by the marking transaction (snapshot_ops.db.candidates).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection

from snapshot_ops.db.engine import ICU_ROOT, key_fold
from snapshot_ops.db.schema import Tables
from snapshot_ops.errors import SnapshotOpsError
from snapshot_ops.storage.base import EXACT, KeyMatching

log = logging.getLogger(__name__)

#: A journal entry whose delete failed once is tried again by the next run (a passing
#: outage). One that failed n >= 2 times is not tried again before
#: min(BACKOFF_BASE * 2**(n-2), BACKOFF_CAP) has passed (1 h, 2 h, 4 h, ... 7 days); until
#: then every run reports it as an error by name without sending it to the store.
BACKOFF_BASE = dt.timedelta(hours=1)
BACKOFF_CAP = dt.timedelta(days=7)
#: A failed delete's error is kept in the entry's `last_error` up to this many characters
#: (a store's message can carry a whole response body).
MAX_ERROR_CHARS = 2000


def backoff(attempts: int) -> dt.timedelta:
    """How long an entry whose delete has failed `attempts` times waits to be retried:
    nothing after one failure, then 1 h doubling with each failure, at most BACKOFF_CAP."""
    if attempts < 2:
        return dt.timedelta(0)
    return min(BACKOFF_BASE * 2 ** min(attempts - 2, 30), BACKOFF_CAP)


@dataclass(frozen=True)
class PendingDelete:
    file_id: str
    storage_key: str
    size_bytes: int | None
    attempts: int


@dataclass(frozen=True)
class BackedOff:
    """A journal entry waiting out its backoff: reported by every run, not yet retried."""

    file_id: str
    attempts: int
    next_attempt_at: dt.datetime
    last_error: str | None
    marked_at: dt.datetime | None = None  # when its row was marked deleted


@dataclass(frozen=True)
class Settled:
    """What one settle transaction changed: only entries the run still held count."""

    deleted: int = 0
    missing: int = 0
    bytes_reclaimed: int = 0
    file_ids: frozenset[str] = frozenset()


class KeyMatchingError(SnapshotOpsError):
    """The database cannot compare storage keys the way the store resolves them."""


#: Pairs of keys that name one object on a store that ignores case, or normalization: a
#: database whose fold does not make each pair equal cannot be trusted with that store.
#: Full case mappings ("ẞ"/"ss", Kelvin sign/"k"), the dotless i, a title-case digraph.
CASE_PAIRS = (
    ("2026/11/Invoice-42.pdf", "2026/11/invoice-42.PDF"),
    ("Stra\u00dfe.pdf", "STRASSE.pdf"),
    ("\u1e9e.pdf", "ss.pdf"),
    ("\u212a.pdf", "k.pdf"),
    ("\u0131.pdf", "I.pdf"),
    ("\u01c5.pdf", "\u01c6.pdf"),
)
#: An "é" precomposed and decomposed, an "Å" as the Angstrom sign and as a letter.
NORMALIZATION_PAIRS = (("caf\u00e9.pdf", "cafe\u0301.pdf"), ("\u212b.pdf", "\u00c5.pdf"))


class Journal(Tables):
    """The journal statements of a `Catalog`."""

    def verify_key_matching(self, matching: KeyMatching, *, store: str = "") -> None:
        """Raise KeyMatchingError unless this database folds storage keys as `matching`
        needs (see engine.key_fold); nothing to check for an exact store.

        Run before anything is touched, and before the first comparison of a catalog with
        a folding store: the database folds CASE_PAIRS and/or NORMALIZATION_PAIRS and each
        pair must come out equal. It cannot when PostgreSQL lacks ICU (the collation
        "und-x-icu") or the database is not UTF8 (normalize() needs it). `store` names the
        store in the message. Checked once per catalog and way of matching.
        """
        if matching.exact or matching in self._verified_matchings:
            return
        pairs = (CASE_PAIRS if matching.ignores_case else ()) + (
            NORMALIZATION_PAIRS if matching.ignores_normalization else ()
        )

        def fold(text: str) -> sa.ColumnElement[str]:
            return key_fold(sa.literal(text, sa.Text), matching, sqlite=self.is_sqlite)

        checks = [fold(a) == fold(b) for a, b in pairs]
        why = None
        try:
            with self.reading() as conn:
                answers = conn.execute(sa.select(*checks)).one()
        except sa.exc.DBAPIError as exc:
            why = f"folding keys failed: {str(exc.orig).strip().splitlines()[0]}"
        except UnicodeEncodeError as exc:  # the client encoding cannot carry the keys
            why = f"its encoding cannot carry such keys: {exc}"
        else:
            unequal = [pair for pair, same in zip(pairs, answers, strict=True) if not same]
            if unequal:
                why = f"it does not fold {unequal[0][0]!r} and {unequal[0][1]!r} to one key"
        if why is not None:
            raise KeyMatchingError(
                f"the storage{' ' + store if store else ''} resolves names "
                f"{matching.describe()}, so keys that "
                'differ only that way name one object, and the database must compare "storageKey" '
                f"that way too, but it cannot: {why}. No object is deleted until it can (the "
                "run checks this before it marks or deletes anything). PostgreSQL needs "
                f'ICU (the collation "{ICU_ROOT}"; Debian\'s and the official packages have it) '
                "and a UTF8 database; or point the storage URL at a folder on a file system "
                "that resolves names exactly (see docs/storage.md, How keys name objects)"
            )
        self._verified_matchings.add(matching)

    def keys_in_use(
        self, conn: Connection, keys: Sequence[str], matching: KeyMatching = EXACT
    ) -> set[str]:
        """Those of `keys` that a live row (`deletedAt` null) still names, by the store's
        way of matching keys to objects (`matching`, the backend's `key_matching`).

        Two rows may share one object, e.g. an order's snapshot reusing the object of an
        expired parse-session one: the object must stay while any row that must stay
        points at it, whatever happens to the other row. On a store that ignores case (or
        normalization) a row's key names the object of every spelling that folds alike, so
        "2026/11/invoice-42.pdf" on a live row keeps "2026/11/Invoice-42.pdf": both sides
        are folded in SQL (engine.key_fold; verified first, `verify_key_matching`). The fold
        may take more spellings for one object than the store does, never fewer: what it
        adds only keeps files. On an exact store the keys are compared as they are.
        """
        if not keys:
            return set()
        f = self.files.c
        unique = list(dict.fromkeys(keys))
        if matching.exact:
            return set(
                conn.execute(
                    sa.select(f.storageKey)
                    .where(self._in(f.storageKey, unique), f.deletedAt.is_(None))
                    .distinct()
                ).scalars()
            )
        self.verify_key_matching(matching)
        live = f.deletedAt.is_(None)
        if self.is_sqlite:
            # The database's fold is KeyMatching.fold itself (engine._register_key_fold).
            wanted: dict[str, list[str]] = {}
            for key in unique:
                wanted.setdefault(matching.fold(key), []).append(key)
            column = key_fold(f.storageKey, matching, sqlite=True)
            found = conn.execute(
                sa.select(column).where(live, column.in_(list(wanted))).distinct()
            ).scalars()
            return {key for value in found for key in wanted.get(value, ())}
        # PostgreSQL folds both sides itself (ICU's case mappings may be of a newer Unicode
        # version than Python's), and answers with the batch's own keys. With an index on
        # the folded column (see Tables.missing_indexes) this is one index probe per key.
        batch = (
            sa.func.unnest(
                sa.cast(sa.bindparam("batch_keys", unique, type_=ARRAY(sa.Text)), ARRAY(sa.Text))
            )
            .table_valued("key")
            .render_derived(name="batch")
        )
        named = sa.exists().where(
            live,
            key_fold(f.storageKey, matching, sqlite=False)
            == key_fold(batch.c.key, matching, sqlite=False),
        )
        return set(conn.execute(sa.select(batch.c.key).where(named)).scalars())

    def shared_keys(self, keys: Sequence[str], matching: KeyMatching = EXACT) -> set[str]:
        """`keys_in_use` in a read-only connection of its own: asked right before a batch
        the run leased at marking is deleted (as `claim_pending` asks for the entries it
        leases), so the window in which a new live row could take such a key stays as
        short as it was."""
        with self.reading() as conn:
            return self.keys_in_use(conn, keys, matching)

    def release_leases(self, run_id: str) -> None:
        """Give back every journal entry `run_id` still holds (a run that failed)."""
        p = self.pending.c
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(self.pending)
                .where(p.claimed_by == run_id)
                .values(claimed_by=None, lease_until=None)
            )

    def _unheld(self, now: dt.datetime) -> sa.ColumnElement[bool]:
        """Entries no run holds at `now`: never leased, or leased until `now` or earlier
        (a lease holds until `lease_until`, not at it)."""
        p = self.pending.c
        return sa.or_(p.claimed_by.is_(None), p.lease_until <= now)

    def claim_pending(
        self,
        *,
        run_id: str,
        now: dt.datetime,
        lease: dt.timedelta,
        after: str | None = None,
        limit: int | None = None,
        key_matching: KeyMatching = EXACT,
    ) -> tuple[list[PendingDelete], list[str]]:
        """Lease journal entries to `run_id` until `now + lease`, in one short transaction.

        Takes entries no run holds (or whose lease has run out) and that are not waiting out
        a backoff: the next `limit` after `after` in file_id order. The lease is committed
        before the caller talks to the store, so no transaction stays open during the
        delete, and another run skips these entries until the lease ends.

        Entries whose object a live row still names (see `keys_in_use`, by the store's
        `key_matching`) are not this row's alone to delete: they are dropped from the
        journal here, object kept.
        Returns (leased entries to delete, in file_id order; file_ids dropped as shared).
        """
        p = self.pending.c
        free = self._unheld(now)
        due = sa.or_(p.next_attempt_at.is_(None), p.next_attempt_at <= now)
        pick = sa.select(p.file_id).where(free, due)
        if after is not None:
            pick = pick.where(p.file_id > after)
        pick = pick.order_by(p.file_id).limit(limit)
        if not self.is_sqlite:  # a competing claim's rows are skipped, not waited for
            pick = pick.with_for_update(skip_locked=True)
        claim = (
            sa.update(self.pending)
            # `free` again: under READ COMMITTED a row another claim leased meanwhile is
            # re-checked here and left alone.
            .where(p.file_id.in_(pick), free)
            .values(claimed_by=run_id, lease_until=now + lease)
            .returning(p.file_id, p.storage_key, p.size_bytes, p.attempts)
        )
        with self.engine.begin() as conn:
            entries = sorted(
                (PendingDelete(*row) for row in conn.execute(claim)), key=lambda e: e.file_id
            )
            in_use = self.keys_in_use(conn, [e.storage_key for e in entries], key_matching)
            shared = [e.file_id for e in entries if e.storage_key in in_use]
            if shared:
                conn.execute(sa.delete(self.pending).where(self._in(p.file_id, shared)))
        return [e for e in entries if e.storage_key not in in_use], shared

    def settle_pending(
        self,
        *,
        run_id: str,
        now: dt.datetime,
        deleted: dict[str, int],
        missing: Sequence[str],
        failed: dict[str, tuple[int, str]],
        shared: Sequence[str] = (),
    ) -> Settled:
        """Settle what the store answered for entries `run_id` leased, in one transaction.

        `deleted` maps file_id -> bytes freed, `missing` lists objects that were already
        gone, `failed` maps file_id -> (attempts before this one, error). Only entries still
        leased by `run_id` change: gone ones leave the journal and are counted (deleted ones
        in `deleted_count`, missing ones in `missing_count` only), failed ones
        are released with one more attempt and a backoff (`backoff`). What was counted is
        added to `run_id`'s cleanup_runs row in the same transaction, so a run killed right
        after still has it in its row, and no other run counts it again. `shared` lists
        entries whose object a live row still names: they leave the journal, object kept,
        uncounted (their ids are in the result's `file_ids` when they were still held).

        The store's answer is known only to this call, so a settle whose connection the
        server dropped (a restart, a failover, a terminated backend) is made once more on a
        new connection rather than left for a later run to find the objects gone and count
        them as missing. Trying again is safe: the settle changes only entries `run_id`
        still holds, so one after a first try that did commit finds none and counts
        nothing twice. Raises the database's error when the second try fails too, or at
        once for any error other than a dropped connection.
        """
        settle = functools.partial(
            self._settle,
            run_id=run_id,
            now=now,
            deleted=deleted,
            missing=missing,
            failed=failed,
            shared=shared,
        )
        try:
            return settle()
        except sa.exc.DBAPIError as error:
            if not error.connection_invalidated:
                raise
            log.warning(
                "the database dropped the connection while run %s settled %d journal "
                "entries; settling them again on a new connection: %s",
                run_id,
                len(deleted) + len(missing) + len(failed) + len(shared),
                error.orig,
            )
            return settle()

    def _settle(
        self,
        *,
        run_id: str,
        now: dt.datetime,
        deleted: dict[str, int],
        missing: Sequence[str],
        failed: dict[str, tuple[int, str]],
        shared: Sequence[str],
    ) -> Settled:
        p, r = self.pending.c, self.runs.c
        mine = p.claimed_by == run_id
        gone = list(deleted) + list(missing) + list(shared)
        with self.engine.begin() as conn:
            settled: set[str] = set()
            if gone:
                settled = set(
                    conn.execute(
                        sa.delete(self.pending)
                        .where(self._in(p.file_id, gone), mine)
                        .returning(p.file_id)
                    ).scalars()
                )
            if failed:  # one statement for all of them (executemany)
                conn.execute(
                    sa.update(self.pending)
                    .where(p.file_id == sa.bindparam("failed_id"), mine)
                    .values(
                        attempts=p.attempts + 1,
                        last_error=sa.bindparam("error"),
                        claimed_by=None,
                        lease_until=None,
                        next_attempt_at=sa.bindparam("retry_at"),
                    ),
                    [
                        {
                            "failed_id": file_id,
                            "error": error[:MAX_ERROR_CHARS],
                            "retry_at": now + backoff(attempts + 1),
                        }
                        for file_id, (attempts, error) in failed.items()
                    ],
                )
            result = Settled(
                deleted=sum(1 for i in deleted if i in settled),
                missing=sum(1 for i in missing if i in settled),
                bytes_reclaimed=sum(size for i, size in deleted.items() if i in settled),
                file_ids=frozenset(settled),
            )
            if result.deleted or result.missing:
                conn.execute(
                    sa.update(self.runs)
                    .where(r.run_id == run_id)
                    .values(
                        # deletedCount: objects removed now; a missing one freed nothing.
                        deleted_count=r.deleted_count + result.deleted,
                        missing_count=r.missing_count + result.missing,
                        bytes_reclaimed=r.bytes_reclaimed + result.bytes_reclaimed,
                    )
                )
        return result

    def backed_off(self, now: dt.datetime) -> list[BackedOff]:
        """Journal entries not to be retried before a later instant (failed deletes)."""
        p = self.pending.c
        with self.reading() as conn:
            rows = conn.execute(
                sa.select(p.file_id, p.attempts, p.next_attempt_at, p.last_error, p.marked_at)
                .where(p.next_attempt_at > now)
                .order_by(p.file_id)
            ).all()
        return [BackedOff(*row) for row in rows]

    # -- releasing journal entries that cannot succeed -------------------------------------

    def release_pending(self, file_ids: Sequence[str]) -> list[str]:
        """Make the rows of these journal entries live again and drop the entries.

        In one transaction: the journal entries among `file_ids` are deleted, and only for
        the entries that were there, the row's `"deletedAt"` is set back to NULL. Ids that
        the journal does not hold are left alone (their rows are not touched), so releasing
        twice, or racing a run that just settled an entry, changes nothing. Rows are picked
        by id only, never by comparing timestamps. The object is not touched: a released
        row is live, can be fixed, and is a candidate again for the next run.

        An entry that a live run holds (an unexpired lease, see `claim_pending`) is left
        alone too: that run may be deleting its object right now, and its row must not
        become live meanwhile.

        Returns the released file ids. For an entry whose object the store refused (it can
        never be deleted by that key) or whose row's key was changed since it was marked.
        """
        if not file_ids:
            return []
        p, f = self.pending.c, self.files.c
        now = dt.datetime.now(dt.UTC)
        with self.engine.begin() as conn:
            released = list(
                conn.execute(
                    sa.delete(self.pending)
                    .where(
                        self._in(p.file_id, list(dict.fromkeys(file_ids))),
                        self._unheld(now),
                    )
                    .returning(p.file_id)
                ).scalars()
            )
            if released:
                conn.execute(
                    sa.update(self.files).where(self._in(f.fileId, released)).values(deletedAt=None)
                )
        return released

    def stale_pending(self, *, limit: int) -> list[PendingDelete]:
        """Up to `limit` journal entries whose row now names another storage key.

        The row's owner changed its `"storageKey"` after it was marked (e.g. pointed a
        refused key at the real file): deleting the journaled key would miss the row's
        object, so such an entry is released (`release_pending`) instead of retried.
        Entries whose row no longer exists are not stale: their object is still deleted.

        The keys are compared exactly, on every store: on one that ignores case, a row
        whose key changed only in case still names the same object, and its entry is
        released all the same. That costs nothing but a round: the row is live again and
        is marked anew by its new key in the same run. Comparing folded keys instead would
        be wrong where the fold takes two names for one that the store keeps apart: the
        journaled object would be deleted and the row's own object left behind.
        """
        p, f = self.pending.c, self.files.c
        query = (
            sa.select(p.file_id, p.storage_key, p.size_bytes, p.attempts)
            .join_from(self.pending, self.files, f.fileId == sa.cast(p.file_id, f.fileId.type))
            .where(f.storageKey.is_distinct_from(p.storage_key))
            .order_by(p.file_id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [PendingDelete(*row) for row in conn.execute(query)]

    def journal(self) -> list[dict[str, Any]]:
        """Every journal entry with its row's current state, in file_id order.

        Each is a dict: `file_id`, `storage_key` (the journaled key), `row_storage_key`
        (the row's key now; None if the row is gone), `row_marked` (its `"deletedAt"` is
        set; None if the row is gone), `attempts`, `last_error`, `run_id`, `marked_at`
        (ISO 8601). Empty when the job never created its journal here.
        """
        p, f = self.pending.c, self.files.c
        if not sa.inspect(self.engine).has_table(self.pending.name, schema=self.pending.schema):
            return []
        query = (
            sa.select(
                p.file_id,
                p.storage_key,
                f.fileId.is_not(None).label("row_exists"),
                f.storageKey.label("row_storage_key"),
                f.deletedAt.is_not(None).label("row_marked"),
                p.attempts,
                p.last_error,
                p.run_id,
                p.marked_at,
            )
            .join_from(
                self.pending,
                self.files,
                f.fileId == sa.cast(p.file_id, f.fileId.type),
                isouter=True,
            )
            .order_by(p.file_id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        entries = []
        for row in rows:
            entry = row._asdict()
            exists = bool(entry.pop("row_exists"))
            entry["row_marked"] = bool(row.row_marked) if exists else None
            entry["marked_at"] = row.marked_at.isoformat() if row.marked_at else None
            entries.append(entry)
        return entries

    def pending_count(self) -> int:
        with self.reading() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(self.pending)).scalar_one()
