"""One table over several benchmark results (the one in docs/performance.md).

python -m bench.summary bench/results/*.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PHASES = ("identify", "mark", "delete", "record")


def _seconds(result: dict[str, Any], name: str) -> float | None:
    return result["contenders"].get(name, {}).get("seconds")


def _label(r: dict[str, Any]) -> str:
    return f"{r['backend']}, {r['scenario']}, {r['mix']['rows']:,} rows ({r['date'][11:16]} UTC)"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "not run" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"**{a / b:.2f}**" if a and b else "-"


def summary(results: list[dict[str, Any]]) -> str:
    """Markdown: the totals and ratios, then the job's phases, one line per result."""
    lines = [
        "| data | to delete | job s | (a) one-liner s | (b) limit s | (c) naive s "
        "| job / (a) | job / (b) | (c) / job | job peak memory |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        job = _seconds(r, "job")
        lines.append(
            f"| {_label(r)} | {r['mix']['to_delete']:,} | {_fmt(job)} "
            f"| {_fmt(_seconds(r, 'oneliner'))} "
            f"| {_fmt(_seconds(r, 'limit'))} | {_fmt(_seconds(r, 'naive'))} "
            f"| {_ratio(job, _seconds(r, 'oneliner'))} | {_ratio(job, _seconds(r, 'limit'))} "
            f"| {_ratio(_seconds(r, 'naive'), job)} "
            f"| {r['contenders']['job']['peak_bytes'] / 1e6:,.0f} MB |"
        )
    lines += [
        "",
        "| data | start-up to RUN_START s | identify s | mark s (rows/s) "
        "| delete s (objects/s) | record s | rest of the run s | total s (rows/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        job, n = r["contenders"]["job"], r["mix"]["to_delete"]
        by_phase: dict[str, float] = {}
        for step in job["steps"]:
            for phase in step["phases"]:
                by_phase[phase] = by_phase.get(phase, 0.0) + (step["seconds"] or 0.0)
        startup = job.get("startup_seconds") or 0.0
        rest = job["seconds"] - startup - sum(s["seconds"] or 0.0 for s in job["steps"])
        lines.append(
            f"| {_label(r)} | {startup:.1f} "
            f"| {by_phase.get('identify', 0):.1f} "
            f"| {by_phase.get('mark', 0):.1f} ({n / by_phase['mark']:,.0f}) "
            f"| {by_phase.get('delete', 0):.1f} ({n / by_phase['delete']:,.0f}) "
            f"| {by_phase.get('record', 0):.1f} | {rest:.1f} "
            f"| {job['seconds']:.1f} ({n / job['seconds']:,.0f}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path)
    args = parser.parse_args(argv)
    results = [json.loads(path.read_text()) for path in args.results]
    results.sort(key=lambda r: (r["backend"], r["scenario"], r["mix"]["rows"], r["date"]))
    sys.stdout.write(summary(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
