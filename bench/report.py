"""The benchmark's report: what it ran on, and the markdown page of one result."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench.contenders import LABELS, S3_LABELS
from bench.figures import FIGURES

REPO = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    """What the figures were measured on (no paths, no host names)."""
    model = ""
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        mem_kb = int(handle.readline().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def code_version() -> str:
    """The checkout's short commit, with `+changes` if tracked files differ from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def _rate(count: int, seconds: float | None) -> str:
    return f"{count / seconds:,.0f}" if seconds else "-"


def _seconds_spread(outcome: dict[str, Any]) -> str:
    """Median seconds, with the min-max of the rounds when there was more than one."""
    median = f"{outcome['seconds']:.2f}"
    runs = outcome.get("runs_seconds") or []
    if len(runs) < 2:
        return median
    return f"{median} ({outcome['seconds_min']:.2f}-{outcome['seconds_max']:.2f})"


def _mb(value: int | None) -> str:
    return f"{value / 1e6:,.0f} MB" if value else "-"


def _job_rows(job: dict[str, Any], n: int) -> list[str]:
    lines = []
    for step in job["steps"]:
        phases = step["phases"]
        # The step's own counts where it reports them (a step that finishes an earlier
        # run's leftovers deletes none of this run's rows), else the data set's.
        md = step["metadata"]
        rows = n if ({"identify", "mark"} & set(phases)) else 0
        rows = md.get("marked", md.get("candidates", rows)) if rows else 0
        objects = n if "delete" in phases else 0
        if objects and "deleted" in md:
            objects = md["deleted"] + md.get("alreadyMissing", 0)
        lines.append(
            f"| job | {step['step']} ({'+'.join(phases) or 'other'}) | "
            f"{step['seconds']:.2f} | {_rate(rows, step['seconds']) if rows else '-'} | "
            f"{_rate(objects, step['seconds']) if objects else '-'} | |"
        )
    in_steps = sum(s["seconds"] or 0 for s in job["steps"])
    startup = job.get("startup_seconds") or 0.0
    lines += [
        f"| job | process start, imports, code location load (to RUN_START) | "
        f"{startup:.2f} | | | |",
        f"| job | Dagster between and after steps, process exit | "
        f"{job['seconds'] - in_steps - startup:.2f} | | | |",
        f"| **job** | **total (process wall time)** | **{_seconds_spread(job)}** | "
        f"{_rate(n, job['seconds'])} | {_rate(n, job['seconds'])} | {_mb(job['peak_bytes'])} |",
    ]
    return lines


def _trivial_rows(r: dict[str, Any], label: str) -> list[str]:
    startup = r.get("startup_seconds") or 0.0
    return [
        f"| {label} | process start, imports, code location load (to RUN_START) | "
        f"{startup:.2f} | | | |",
        f"| {label} | **total (process wall time)** | **{_seconds_spread(r)}** | | | "
        f"{_mb(r['peak_bytes'])} |",
    ]


def markdown(result: dict[str, Any], command: str) -> str:
    """The result as a markdown page: setup, one row per phase and contender, the figures
    against the project's targets for this scenario, and the outcome checks."""
    mix, n = result["mix"], result["mix"]["to_delete"]
    labels = S3_LABELS if result["backend"] == "s3" else LABELS
    lines = [
        f"# snapshot cleanup benchmark: {result['backend']}, {result['scenario']}, "
        f"{mix['rows']:,} rows",
        "",
        f"- command: `{command}`",
        f"- data: {mix['rows']:,} rows: {mix['expired']:,} expired parse-session snapshots "
        f"({n:,} to delete, the rest linked to an order), {mix['fresh']:,} fresh, "
        f"{mix['permanent']:,} permanent, {mix['tombstones']:,} already deleted",
        f"- machine: {result['machine']['cpus']} CPUs ({result['machine']['cpu_model']}), "
        f"{result['machine']['memory_gb']} GB, Linux {result['machine']['kernel']}, "
        f"PostgreSQL {result['machine'].get('postgresql', '?')}, "
        f"Python {result['machine']['python']}",
        f"- code: {result['code']}, {result['date']}; 1-minute load average during the run: "
        + ", ".join(f"{x:.1f}" for x in result["load_average_1min"])
        + " (shared machine: compare the ratios, not the seconds)",
        "",
        "| contender | part | seconds | rows/s | objects/s | peak memory |",
        "|---|---|---:|---:|---:|---:|",
    ]
    c = result["contenders"]
    if "job" in c:
        lines += _job_rows(c["job"], n)
    if "trivial" in c:
        lines += _trivial_rows(c["trivial"], labels["trivial"])
    for name in ("oneliner", "limit"):
        if name in c:
            r, label = c[name], labels[name]
            lines += [
                f"| {label} | delete objects | {r['delete_seconds']:.2f} | | "
                f"{_rate(n, r['delete_seconds'])} | |",
                f"| {label} | one set-based UPDATE | {r['update_seconds']:.2f} | "
                f"{_rate(n, r['update_seconds'])} | | |",
                f"| {label} | **total** | **{_seconds_spread(r)}** | {_rate(n, r['seconds'])} | "
                f"{_rate(n, r['seconds'])} | |",
            ]
    if "naive" in c:
        r = c["naive"]
        lines.append(
            f"| {labels['naive']} | **total (process wall time)** | **{_seconds_spread(r)}** | "
            f"{_rate(n, r['seconds'])} | {_rate(n, r['seconds'])} | {_mb(r['peak_bytes'])} |"
        )
    lines += [
        "",
        f"| figure | median of {result.get('rounds', 1)} rounds | min-max | target | met |",
        "|---|---:|---:|---|---|",
    ]
    medians, spreads = result["ratios"], result.get("ratio_spread") or {}
    judged = {t["figure"]: t for t in result["targets"]}
    # The scenario's targets first, then figures no target of the scenario bounds.
    for key in [*judged, *(k for k in FIGURES if k in medians and k not in judged)]:
        value, spread, target = medians.get(key), spreads.get(key), judged.get(key)
        lines.append(
            f"| {FIGURES[key]} | {'-' if value is None else f'{value:.2f}'} | "
            f"{'-' if not spread else f'{spread[0]:.2f}-{spread[1]:.2f}'} | "
            f"{target['target'] if target else '-'} | {target['met'] if target else '-'} |"
        )
    lines += ["", "Outcome checks (every expected row marked and object gone, nothing else):"]
    for name, r in c.items():
        check = r["check"]
        lines.append(f"- {name}: {'ok' if check['ok'] else 'FAILED ' + json.dumps(check)}")
    return "\n".join(lines) + "\n"
