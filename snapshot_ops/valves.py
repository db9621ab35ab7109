"""Checks a run makes before it touches anything, against the storage it is about to clean.

A storage URL that names the wrong place (an unmounted volume's empty mount point, a bucket
of another environment) makes every object look already deleted: the run would mark every
candidate, report them all as deleted and succeed while freeing nothing, and the real
objects would be left forever. So if none of a sample of the oldest candidates' objects
exists, the run stops and says where it looked.
"""

from __future__ import annotations

import datetime as dt

from snapshot_ops.catalog import Catalog
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
    """Raise StorageMismatch if none of the sampled candidates' objects exists."""
    sample = next(catalog.iter_candidates(cutoff, SAMPLE_SIZE), [])
    if len(sample) < MIN_SAMPLE:
        return
    sizes = storage.sizes([c.storage_key for c in sample])
    if all(size is None for size in sizes.values()):
        raise StorageMismatch(
            f"none of the {len(sample)} oldest candidates' objects exists in "
            f"{storage.description}; is the storage URL right? Nothing was deleted."
        )
