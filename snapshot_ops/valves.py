"""Checks a run makes before it touches anything, against the storage it is about to clean.

A storage URL that names the wrong place (an unmounted volume's empty mount point, a bucket
of another environment) makes every object look already deleted: the run would mark every
candidate, report them all as deleted and succeed while freeing nothing, and the real
objects would be left forever. So if none of a sample of the oldest candidates' objects
exists, the run stops and says where it looked. The same sign has an innocent cause (the
oldest objects were removed by hand), so the message names both, how to tell them apart
(the reconciliation report) and how to go on (`verify_storage: false`).
"""

from __future__ import annotations

import datetime as dt

from snapshot_ops.db import Catalog
from snapshot_ops.errors import SnapshotOpsError
from snapshot_ops.storage.base import StorageBackend

#: How many of the oldest candidates are looked up in storage.
SAMPLE_SIZE = 20
#: Below this many sampled candidates, all missing is plausible and does not stop a run.
MIN_SAMPLE = 10


class StorageMismatch(SnapshotOpsError):
    """The storage does not hold the objects the database says the candidates have."""


def check_storage_sees_candidates(
    catalog: Catalog, storage: StorageBackend, cutoff: dt.datetime
) -> None:
    """Raise StorageMismatch if none of the sampled candidates' objects exists.

    Looks the sample up one object at a time and stops at the first that exists, so a
    healthy run costs one lookup (one HEAD on an object store).
    """
    sample = next(catalog.iter_candidates(cutoff, SAMPLE_SIZE), [])
    if len(sample) < MIN_SAMPLE:
        return
    for candidate in sample:
        if storage.sizes([candidate.storage_key]).get(candidate.storage_key) is not None:
            return
    raise StorageMismatch(
        f"none of the {len(sample)} oldest candidates' objects exists in "
        f"{storage.description}. Nothing was deleted. Either the storage URL names the wrong "
        "place (or the store refuses the lookups, e.g. an S3 role without s3:GetObject: grant "
        "read), or the URL is right and these oldest objects were removed by hand or by "
        "another tool. To tell which: run `python -m snapshot_ops.reconcile` with the same "
        "SNAPSHOT_OPS_DATABASE_URL and SNAPSHOT_OPS_STORAGE_URL; a wrong place shows almost "
        "every live row under missing_objects, objects removed by hand show only those rows. "
        "If they were removed by hand, run once with verify_storage: false: their rows are "
        "marked deleted and counted as already missing."
    )
