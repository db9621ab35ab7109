"""Rows whose objects the store must hold: the evidence that a storage URL names the right
place, apart from the candidates themselves (snapshot_ops.sentinel judges it).

A store that is the wrong place (an unmounted volume's empty mount point, another bucket or
prefix) answers "not found" for every key, which a delete would take as "already gone". The
candidates' own objects cannot tell that apart from objects removed by hand; objects that
other rows need can, if the application cannot have written them since the store went
away. So each read here says, or is chosen by, how old its rows are: older than the run's
cutoff (written before any outage shorter than the retention), or younger, spread across
the retention window.

Every comparison with "createdAt" is on the column as stored, against a bound written in
its own representation (`Catalog.times`, as for the candidates), so the indexes serve it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa

from snapshot_ops.db.schema import Tables
from snapshot_ops.rules import TEMPORARY_TYPE


class Witnesses(Tables):
    """The witness queries of a `Catalog`: each is one short, indexed read. Time bounds
    come from `times` (db.candidates.Candidates, the other half of the `Catalog`)."""

    def _created_before(self, instant: dt.datetime) -> sa.ColumnElement[bool]:
        """ "createdAt" is earlier than `instant` (NULL: not)."""
        return self._created < self.times.created.bound(instant)

    def linked_keys(self, cutoff: dt.datetime, limit: int) -> list[tuple[str, bool]]:
        """(storage key, whether its row was created before `cutoff`) of up to `limit` live
        rows that orders link, any type, without repeats. Which ones is the database's
        choice (no order: an ORDER BY would sort every attachment); a table scan reads the
        oldest stored first, usually old files."""
        f, a = self.files.c, self.attachments.c
        old = sa.case((self._created_before(cutoff), 1), else_=0)
        query = (
            sa.select(f.storageKey, old)
            .select_from(self.attachments.join(self.files, f.fileId == a.fileId))
            .where(f.deletedAt.is_(None))
            .limit(limit)
        )
        with self.reading() as conn:
            rows = conn.execute(query).all()
        keys: dict[str, bool] = {}
        for key, before in rows:
            if isinstance(key, str):
                keys[key] = keys.get(key, False) or bool(before)
        return list(keys.items())

    def sampled_keys(self, bounds: Sequence[dt.datetime]) -> list[str]:
        """One storage key per span of `bounds` (the instants between `bounds[i]` and
        `bounds[i + 1]`, the last span open above): the oldest live ParseSessionSnapshot
        row of each, by the expiry index's order ("createdAt", "fileId"). Spans without a
        row give none; keys are not repeated. One indexed read per span."""
        f = self.files.c
        values = [self.times.created.bound(b) for b in bounds]
        keys: dict[str, None] = {}
        with self.reading() as conn:
            for i, low in enumerate(values):
                span: list[sa.ColumnElement[bool]] = [self._created >= low]
                if i + 1 < len(values):
                    span.append(self._created < values[i + 1])
                key = conn.execute(
                    sa.select(f.storageKey)
                    .where(f.snapshotType == TEMPORARY_TYPE, f.deletedAt.is_(None), *span)
                    .order_by(self._created, f.fileId)
                    .limit(1)
                ).scalar()
                if isinstance(key, str):
                    keys[key] = None
        return list(keys)

    def journaled_keys(self, limit: int, *, created_before: dt.datetime | None = None) -> list[str]:
        """Storage keys of up to `limit` journal entries (rows marked deleted whose object
        may still exist), in file_id order; with `created_before`, only entries whose row
        was created before it. The job's own tables must exist (they do once a run has
        prepared them: preflight.prepare_tables)."""
        p, f = self.pending.c, self.files.c
        query = sa.select(p.storage_key).order_by(p.file_id).limit(limit)
        if created_before is not None:
            query = query.join_from(
                self.pending, self.files, f.fileId == sa.cast(p.file_id, f.fileId.type)
            ).where(self._created_before(created_before))
        with self.reading() as conn:
            return list(conn.execute(query).scalars())
