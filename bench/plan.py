"""Checks the plan for 100 million snapshots a day (docs/performance.md) by simulation.

    python -m bench.plan [--per-day 100000000] [--workers 16] [--share 0.5]

The plan: a run every hour deletes the rows that expired in that hour. The run splits its
("createdAt", "fileId") keyset into K disjoint ranges (equal slices of the hour), one step
each, run in parallel by Dagster's k8s_job_executor or celery_executor; each step is the
job's own lock + re-check + mark + delete loop on its range, so steps never contend for a
row. Every step paces its store requests at (budget / K): the budget is a configurable
share of the store's limit, the rest is left to the application.

The simulation runs two days at 250 ms resolution with a diurnal load (the busiest hour
twice the average), sends real batch-sized requests from K paced workers, and reports what
the limits are about: the most keys and requests the store saw in any one-second window,
the longest a row waited after expiring, and whether every day's rows were done that day.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import deque
from dataclasses import dataclass

TICK = 0.25  # seconds
#: How far above the budget one second may go: one batch per worker at most.
BURST = 0.25
DAY = 86_400


@dataclass(frozen=True)
class Store:
    name: str
    keys_per_request: int  # most deletes one request carries
    limit: float  # the store's published ceiling, in `unit` per second
    unit: str
    counts_batch: bool  # does the batch request count once more, besides its keys?

    def units(self, keys: float, requests: int) -> float:
        """How much of the limit `keys` deleted in `requests` requests use."""
        return keys + (requests if self.counts_batch else 0)


# S3: 3,500 DELETE requests/s per partitioned prefix, 1,000 keys per DeleteObjects. AWS
# does not promise that a DeleteObjects of 1,000 keys counts once (SlowDown is reported
# around 3,500 deleted keys/s), so each key is counted. A new bucket or prefix has one
# partition; S3 adds partitions under sustained load (or on request), and keys spread
# evenly over them because they start with two hex characters of the file id.
def s3(partitions: int = 1) -> Store:
    """S3 with `partitions` partitioned prefixes under the snapshot prefix."""
    return Store(
        f"S3, {partitions} partition{'s' if partitions > 1 else ''}",
        1000,
        3500 * partitions,
        "deletes/s",
        counts_batch=False,
    )


# Azure Blob: 20,000 requests/s per account, 256 deletes per batch; each sub-request is a
# transaction and so is the batch itself (256 keys = 257 transactions).
AZURE = Store("Azure Blob, one account", 256, 20_000, "transactions/s", counts_batch=True)


def expiring_per_second(t: float, per_day: float) -> float:
    """Rows expiring at time t: the creation rate 7 days earlier; busiest hour 2x the mean."""
    return per_day / DAY * (1 + math.sin(2 * math.pi * (t / DAY - 0.25)))


@dataclass(frozen=True)
class Outcome:
    store: Store
    workers: int
    budget: float  # in the store's unit per second
    batch: int
    max_units_1s: float  # the most of the limit used in any one-second window
    max_keys_1s: float
    max_wait_hours: float  # longest time from expiry (end of its hour) to deletion
    backlog: float  # rows waiting at the start (an outage's leftovers)
    drained_hours: float | None  # when that backlog was gone; None: not within the run
    backlog_end_of_day: list[int]  # rows expired and not yet deleted at each midnight


def simulate(
    store: Store,
    *,
    per_day: float,
    workers: int,
    share: float,
    days: int = 2,
    worker_keys_per_second: float = 10_000,
    backlog: float = 0,
) -> Outcome:
    """Hourly runs, K paced workers, diurnal expiry: what the store and the rows see.

    Each hour's expired rows become deletable at the end of that hour (the run's reference
    time); workers drain them oldest first. A worker sends a request every `interval`
    seconds and never banks unused time, so K workers together cannot burst above the
    budget. `worker_keys_per_second` caps one worker (its DB + store round trips).
    """
    budget = store.limit * share
    # Keys per second one worker may delete so that K of them stay within the budget.
    keys_share = budget / workers
    # Any one-second window can hold a worker's steady rate plus one batch (requests are
    # whole batches), so batches are kept small enough that K of them add at most BURST
    # of the budget; on S3 that shrinks a batch only when the budget is small.
    batch = max(1, min(store.keys_per_request, int(budget * BURST / workers)))
    per_worker_keys = min(keys_share * batch / store.units(batch, 1), worker_keys_per_second)
    interval = batch / per_worker_keys
    ticks_per_hour = round(3600 / TICK)
    hours: deque[list[float]] = deque()  # [hour became deletable at, rows left]
    if backlog:  # rows left over from an outage, all deletable at the start
        hours.append([0.0, backlog])
    drained_at = None if backlog else 0.0
    hour_rows = 0.0
    next_send = [w * interval / workers for w in range(workers)]  # staggered
    window: deque[tuple[float, float, float]] = deque()
    window_units = window_keys = 0.0
    max_units = max_keys = max_wait = 0.0
    backlog_end_of_day: list[int] = []
    for step in range(int(days * DAY / TICK)):
        t = step * TICK
        hour_rows += expiring_per_second(t, per_day) * TICK
        if step % ticks_per_hour == ticks_per_hour - 1:
            hours.append([t, hour_rows])
            hour_rows = 0.0
        keys = 0.0
        requests = 0
        for w in range(workers):
            while next_send[w] <= t and hours:
                left = float(batch)
                sent = 0.0
                while left > 1e-9 and hours:
                    take = min(left, hours[0][1])
                    hours[0][1] -= take
                    left -= take
                    sent += take
                    if hours[0][1] <= 1e-9:
                        max_wait = max(max_wait, (t - hours[0][0]) / 3600)
                        if drained_at is None and hours[0][0] == 0.0:
                            drained_at = t / 3600
                        hours.popleft()
                keys += sent
                requests += 1
                next_send[w] += interval
            next_send[w] = max(next_send[w], t)  # idle time is not saved up for a burst
        units = store.units(keys, requests)
        window.append((t, units, keys))
        window_units += units
        window_keys += keys
        while window[0][0] <= t - 1.0 + 1e-9:
            _, u, k = window.popleft()
            window_units -= u
            window_keys -= k
        max_units = max(max_units, window_units)
        max_keys = max(max_keys, window_keys)
        if step % round(DAY / TICK) == round(DAY / TICK) - 1:
            backlog_end_of_day.append(round(sum(h[1] for h in hours) + hour_rows))
    return Outcome(
        store=store,
        workers=workers,
        budget=budget,
        batch=batch,
        max_units_1s=max_units,
        max_keys_1s=max_keys,
        max_wait_hours=max_wait,
        backlog=backlog,
        drained_hours=drained_at,
        backlog_end_of_day=backlog_end_of_day,
    )


def report(outcomes: list[Outcome], per_day: float, share: float) -> str:
    """A markdown table of the simulated outcomes and the arithmetic they rest on."""
    mean = per_day / DAY
    lines = [
        f"{per_day:,.0f} snapshots a day: {mean:,.0f} deletions/s on average, "
        f"{2 * mean:,.0f}/s at the busiest hour; the cleanup's budget is {share:.0%} of a "
        f"store's limit, and no second may exceed it by more than {BURST:.0%}.",
        "",
        "| store | workers | batch | budget | most used in any 1 s | limit "
        "| deleted keys/s (max) | rows waiting at start | start backlog gone after "
        "| longest wait after expiry | backlog at each midnight |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        unit = o.store.unit
        lines.append(
            f"| {o.store.name} | {o.workers} | {o.batch} | {o.budget:,.0f} {unit} | "
            f"{o.max_units_1s:,.0f} {unit} | {o.store.limit:,.0f} {unit} | "
            f"{o.max_keys_1s:,.0f} | {o.backlog:,.0f} | "
            + (
                "-"
                if not o.backlog
                else "not within the run"
                if o.drained_hours is None
                else f"{o.drained_hours:.1f} h"
            )
            + f" | {o.max_wait_hours:.1f} h | "
            f"{', '.join(f'{b:,}' for b in o.backlog_end_of_day)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-day", type=float, default=100_000_000)
    parser.add_argument(
        "--share", type=float, default=0.5, help="share of the store's limit the cleanup may use"
    )
    args = parser.parse_args(argv)
    day = args.per_day
    cases = [  # (store, workers, rows waiting at the start)
        (s3(1), 1, 0),
        (s3(1), 4, 0),
        (s3(1), 4, day),
        (s3(16), 4, 0),
        (s3(16), 4, day),
        (AZURE, 1, 0),
        (AZURE, 4, day),
    ]
    outcomes = [
        simulate(store, per_day=day, workers=k, share=args.share, backlog=backlog)
        for store, k, backlog in cases
    ]
    sys.stdout.write(report(outcomes, args.per_day, args.share))
    # The check: no second uses more than the budget plus one batch per worker, which
    # stays below the store's limit: the application always keeps its share.
    over = [
        o for o in outcomes if o.max_units_1s > min(o.budget * (1 + BURST), o.store.limit) * 1.001
    ]
    for o in over:
        sys.stdout.write(f"OVER BUDGET: {o.store.name} with {o.workers} workers\n")
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
