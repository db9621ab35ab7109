"""Rows whose objects the store must hold: the evidence that a storage URL names the right
place, apart from the candidates themselves (snapshot_ops.sentinel uses them).

A store that is the wrong place (an unmounted volume's empty mount point, another bucket or
prefix) answers "not found" for every key, which a delete would take as "already gone". The
candidates' own objects cannot tell that apart from objects removed by hand; objects that
live rows still need can: if the store holds none of those either, it is not the store the
database describes.
"""

from __future__ import annotations

import sqlalchemy as sa

from snapshot_ops.db.schema import Tables
from snapshot_ops.rules import TEMPORARY_TYPE


class Witnesses(Tables):
    """The witness queries of a `Catalog`: each is one short, indexed read."""

    def witness_keys(self, limit: int) -> list[str]:
        """Storage keys of up to `limit` live rows of each of two kinds, without repeats:
        the newest live ParseSessionSnapshot rows (the objects written last; read backwards
        along the expiry index), then files that orders link (kept forever, any type).

        Some may be candidates too when every live snapshot is expired; they are still
        objects the store must hold until this run deletes them.
        """
        f, a = self.files.c, self.attachments.c
        newest = (
            sa.select(f.storageKey)
            .where(
                f.snapshotType == TEMPORARY_TYPE,
                f.deletedAt.is_(None),
                f.createdAt.is_not(None),  # PostgreSQL sorts NULLs first when descending
            )
            .order_by(self._created.desc(), f.fileId.desc())
            .limit(limit)
        )
        linked = (
            sa.select(f.storageKey)
            .select_from(self.attachments.join(self.files, f.fileId == a.fileId))
            .where(f.deletedAt.is_(None))
            .limit(limit)
        )
        with self.reading() as conn:
            keys = [*conn.execute(newest).scalars(), *conn.execute(linked).scalars()]
        return list(dict.fromkeys(k for k in keys if isinstance(k, str)))

    def journaled_keys(self, limit: int) -> list[str]:
        """Storage keys of up to `limit` journal entries (rows marked deleted whose object
        may still exist), in file_id order. The job's own tables must exist (they do once a
        run has prepared them: preflight.prepare_tables)."""
        p = self.pending.c
        with self.reading() as conn:
            return list(
                conn.execute(sa.select(p.storage_key).order_by(p.file_id).limit(limit)).scalars()
            )
