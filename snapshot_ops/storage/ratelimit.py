"""A cap on the deletes a run sends to a store it shares with the application.

The stores' own published limits, which the cap keeps a cleanup well below when set:

- S3: at least 3,500 PUT/COPY/POST/DELETE requests per second per partitioned prefix
  (Amazon S3 User Guide, "Best practices design patterns: optimizing Amazon S3 performance").
- Azure Blob Storage: 20,000 requests per second per standard storage account (Azure
  Storage docs, "Scalability and performance targets for standard storage accounts").

Beyond them the store throttles (S3 503 SlowDown, Azure 503 ServerBusy) every client of the
prefix or account, the application included. The cap counts keys, not requests: a batch
request of n keys counts n, which is conservative for both stores, and on a store that
takes no batch requests each key's single delete counts one. Retries (the SDKs' own, and a
key a batch answer failed with a passing error, sent again within the call) are not
counted again: they wait out their backoff instead.

A run split into ranges gives each range an equal share of the cap (`range_rate`), so the
run as a whole stays under it however many ranges run at once, in one process or on many
workers. Each range enforces its share in its own process with pyrate-limiter's in-memory
sliding-window log: no window of one second admits more than the share.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from snapshot_ops.errors import ConfigError
from snapshot_ops.storage.base import DeleteResult, KeyMatching, StorageBackend

if TYPE_CHECKING:
    # pyrate-limiter (and the multiprocessing modules it loads) is imported when a limit is
    # set, not when the code location loads: most deployments set none.
    from pyrate_limiter import Rate


def range_rate(max_deletes_per_second: int, ranges: int) -> Rate:
    """One range's share of `max_deletes_per_second`: floor(max / ranges) keys per second.

    Raises ConfigError when the share would be below one key per second (fewer deletes per
    second allowed than ranges), naming both settings.
    """
    from pyrate_limiter import Duration, Rate

    if max_deletes_per_second < 1:
        raise ConfigError(
            f"max_deletes_per_second must be at least 1, got {max_deletes_per_second} "
            "(unset means no limit)"
        )
    if max_deletes_per_second < ranges:
        raise ConfigError(
            f"max_deletes_per_second={max_deletes_per_second} is less than the run's "
            f"{ranges} ranges: each range needs at least one delete per second. Lower the "
            "ranges (SNAPSHOT_OPS_RANGES or the run's `ranges`) or raise the limit"
        )
    return Rate(max_deletes_per_second // ranges, Duration.SECOND)


class RateLimitedBackend(StorageBackend):
    """`inner`, with `delete_many` held to `rate` keys per window (thread-safe).

    Before each store request the keys it carries are admitted by the limiter, which waits
    as long as the window needs; a call with more keys than one window admits is sent as
    several requests of at most `rate.limit` keys. Everything else is `inner`'s own. Closing
    this leaves `inner` open (the storage resource owns it).
    """

    def __init__(self, inner: StorageBackend, rate: Rate) -> None:
        self.inner = inner
        self.rate = rate
        self.description = inner.description
        from pyrate_limiter import Limiter

        self._limiter = Limiter(rate)

    @property
    def key_matching(self) -> KeyMatching:
        return self.inner.key_matching

    @property
    def delete_requests(self) -> str:
        return self.inner.delete_requests

    def refusals(self, keys: Sequence[str]) -> dict[str, str]:
        return self.inner.refusals(keys)

    def delete_many(self, keys: Sequence[str]) -> list[DeleteResult]:
        results: list[DeleteResult] = []
        for start in range(0, len(keys), self.rate.limit):
            chunk = keys[start : start + self.rate.limit]
            if not self._limiter.try_acquire("deletes", weight=len(chunk)):
                raise RuntimeError(f"the delete rate limiter refused {len(chunk)} keys")
            results += self.inner.delete_many(chunk)
        return results

    def sizes(self, keys: Sequence[str]) -> dict[str, int | None]:
        return self.inner.sizes(keys)

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        return self.inner.list_keys(prefix)

    def close(self) -> None:
        for bucket in self._limiter.buckets():
            self._limiter.dispose(bucket)
