"""The figures of merit, their medians and spreads over the rounds, and the targets they are
judged against.

The targets are the project's, stated as ratios of contenders measured side by side in the
same run (absolute seconds on a shared machine say little):

- backlog (half the rows expired): job <= 1.0 x the one-liner at 100k rows and <= 0.6 x at
  1M; job <= 1.5 x the machine's limit at 1M; the naive script >= 8 x slower than the job at
  1M; the job's mark-and-delete step within 1.5 x the limit's time;
- steady day (1M rows, about 20k newly expired): job <= 2.0 x the one-liner; the naive
  script >= 3 x slower than the job;
- S3: the job's delete phase deletes at least as many objects/s as a plain loop of
  1,000-key DeleteObjects calls;
- nothing to delete (`empty`): the job <= 1.15 x a one-op Dagster job run the same way on
  the same instance (its fixed cost);
- every scenario: the job's peak memory < 400 MB.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

#: Each figure's name in the report.
FIGURES = {
    "job_over_oneliner": "job time / (a) one-liner time",
    "job_over_limit": "job time / (b) machine's limit time",
    "naive_over_job": "(c) naive time / job time",
    "mark_delete_over_limit": "job's mark-and-delete step time / (b) machine's limit time",
    "delete_rate_over_loop": "job's delete phase objects/s / (a) DeleteObjects loop objects/s",
    "job_over_trivial": "job time / one-op Dagster job time (fixed cost)",
    "peak_memory_mb": "job peak memory, all processes (MB)",
}
MILLION = 1_000_000
HUNDRED_K = 100_000


@dataclass(frozen=True)
class Target:
    """A figure's bound: `figure <= bound` (or `<`, or `>=` when not `at_most`)."""

    figure: str
    bound: float
    at_most: bool = True
    strict: bool = False
    stated_at: str = ""  # the data size the bound is stated for, e.g. "1M rows"
    judged: bool = True  # False when this run's size is not the one the bound is stated for

    @property
    def text(self) -> str:
        sign = ("<" if self.strict else "<=") if self.at_most else ">="
        return f"{sign} {self.bound:g}" + (f" at {self.stated_at}" if self.stated_at else "")

    def met(self, value: float | None) -> str:
        """yes / no, or why the run does not judge it."""
        if value is None:
            return "not measured"
        if not self.judged:
            return f"not judged (stated at {self.stated_at})"
        if self.at_most:
            ok = value < self.bound if self.strict else value <= self.bound
        else:
            ok = value >= self.bound
        return "yes" if ok else "no"


def targets(scenario: str, backend: str, rows: int) -> list[Target]:
    """The project's targets that apply to a run of `scenario` on `backend` at `rows` rows.

    A bound stated for a data size is listed at any size and judged only at that size (at
    or above 1M rows for the 1M bounds; from 100k up to 1M for the 100k one).
    """
    big, mid = rows >= MILLION, HUNDRED_K <= rows < MILLION
    found: list[Target] = []
    if scenario == "backlog":
        if big:
            found.append(Target("job_over_oneliner", 0.6, stated_at="1M rows"))
        else:
            found.append(Target("job_over_oneliner", 1.0, stated_at="100k rows", judged=mid))
        found += [
            Target("job_over_limit", 1.5, stated_at="1M rows", judged=big),
            Target("naive_over_job", 8.0, at_most=False, stated_at="1M rows", judged=big),
            Target("mark_delete_over_limit", 1.5),
        ]
    elif scenario == "steady":
        found += [
            Target("job_over_oneliner", 2.0, stated_at="1M rows", judged=big),
            Target("naive_over_job", 3.0, at_most=False, stated_at="1M rows", judged=big),
        ]
    elif scenario == "empty":
        found.append(Target("job_over_trivial", 1.15))
    if backend == "s3" and scenario != "empty":
        found.append(Target("delete_rate_over_loop", 1.0, at_most=False))
    found.append(Target("peak_memory_mb", 400, strict=True))
    return found


def ratios(contenders: dict[str, Any], n: int, s3: bool) -> dict[str, float]:
    """The figures of merit of one round's outcomes (`n` objects to delete); a figure whose
    contenders did not run is left out."""
    c = contenders
    job = c.get("job", {}).get("seconds")

    def over(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    figures: dict[str, float | None] = {
        "job_over_oneliner": over(job, c.get("oneliner", {}).get("seconds")),
        "job_over_limit": over(job, c.get("limit", {}).get("seconds")),
        "naive_over_job": over(c.get("naive", {}).get("seconds"), job),
        "job_over_trivial": over(job, c.get("trivial", {}).get("seconds")),
        "peak_memory_mb": (c["job"]["peak_bytes"] / 1e6) if "job" in c else None,
    }
    if "job" in c:
        steps = c["job"].get("steps", [])
        mark_delete = [s["seconds"] for s in steps if {"mark", "delete"} <= set(s["phases"])]
        figures["mark_delete_over_limit"] = over(
            sum(mark_delete) if mark_delete and None not in mark_delete else None,
            c.get("limit", {}).get("seconds"),
        )
        if s3 and "oneliner" in c:
            figures["delete_rate_over_loop"] = over(
                delete_rate(c["job"]), over(n, c["oneliner"].get("delete_seconds"))
            )
    return {key: value for key, value in figures.items() if value is not None}


def delete_rate(job: dict[str, Any]) -> float | None:
    """Objects the job's delete steps removed (or found already gone) per second of them."""
    steps = [s for s in job.get("steps", []) if "delete" in s["phases"]]
    seconds = sum(s["seconds"] or 0.0 for s in steps)
    objects = sum(
        s["metadata"].get("deleted", 0) + s["metadata"].get("alreadyMissing", 0) for s in steps
    )
    return objects / seconds if seconds and objects else None


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One contender's runs: the run of median wall time (its steps, memory, check) with
    every run's seconds beside it, and `ok` only if every run's outcome check passed."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    typical = dict(ordered[(len(ordered) - 1) // 2])
    typical["runs_seconds"] = [r["seconds"] for r in runs]
    typical["seconds_min"], typical["seconds_max"] = ordered[0]["seconds"], ordered[-1]["seconds"]
    typical["peak_bytes_max"] = max((r.get("peak_bytes") or 0) for r in runs) or None
    failed = [r["check"] for r in runs if not r["check"]["ok"]]
    typical["check"] = failed[0] if failed else typical["check"]
    return typical


def round_contenders(runs: dict[str, list[dict[str, Any]]], index: int) -> dict[str, Any]:
    """The contenders' outcomes of round `index`, by name."""
    return {c: r[index] for c, r in runs.items() if len(r) > index}


def over_rounds(per_round: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, list]]:
    """(median, [min, max]) of each figure over the rounds that measured it."""
    keys = [k for k in FIGURES if any(k in r for r in per_round)]
    medians, spreads = {}, {}
    for key in keys:
        values = [r[key] for r in per_round if key in r]
        medians[key] = statistics.median(values)
        spreads[key] = [min(values), max(values)]
    return medians, spreads


def judge(scenario: str, backend: str, rows: int, medians: dict[str, float]) -> list[dict]:
    """The targets of the run with their medians: figure, target, median, met."""
    return [
        {
            "figure": t.figure,
            "target": t.text,
            "median": medians.get(t.figure),
            "met": t.met(medians.get(t.figure)),
        }
        for t in targets(scenario, backend, rows)
    ]
