"""The benchmark command keeps working: at a tiny size it runs the real job through
`dagster job execute` and every baseline on copies of the same data, checks each one's
outcome (every expected row marked and object gone, nothing else touched), and writes a
result table with every phase of the job and every baseline, plus the JSON behind it.

No timing is asserted: the figures belong in docs/performance.md, not in a test."""

from __future__ import annotations

import json
from pathlib import Path

from snapshot_ops_tests.support.commands import python_module, run_command

PHASES = {"identify", "mark", "delete", "record"}


def run_bench(tmp_path: Path, *args: str) -> tuple[dict, str]:
    """Run the whole command at 200 rows and 2 rounds; return its JSON and markdown."""
    out = tmp_path / "results"
    run_command(
        python_module(
            "bench.run",
            "--rows",
            "200",
            "--repeat",
            "2",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path),
            *args,
        ),
        timeout=500,
    )
    [json_file] = out.glob("*.json")
    [md_file] = out.glob("*.md")
    return json.loads(json_file.read_text()), md_file.read_text()


def check_result(result: dict, page: str) -> None:
    contenders = result["contenders"]
    assert set(contenders) == {"job", "oneliner", "limit", "naive"}
    expected = result["mix"]["to_delete"]
    assert 0 < expected < result["mix"]["rows"]
    assert result["rounds"] == 2
    for name, outcome in contenders.items():
        assert outcome["check"]["ok"], (name, outcome["check"])
        assert outcome["seconds"] > 0
        # Every contender ran once per round; the reported time is the median run's.
        assert len(outcome["runs_seconds"]) == 2
        assert outcome["seconds_min"] <= outcome["seconds"] <= outcome["seconds_max"]
    assert len(result["ratios_per_round"]) == 2
    for key, (low, high) in result["ratio_spread"].items():
        assert low <= result["ratios"][key] <= high, key
    for name in ("oneliner", "limit"):
        assert contenders[name]["rows_updated"] == expected
    job = contenders["job"]
    covered = {phase for step in job["steps"] for phase in step["phases"]}
    assert covered == PHASES
    assert all(step["seconds"] is not None for step in job["steps"])
    assert job["peak_bytes"] > 0 and contenders["naive"]["peak_bytes"] > 0
    figures = {
        "job_over_oneliner",
        "job_over_limit",
        "naive_over_job",
        "mark_delete_over_limit",
        "peak_memory_mb",
    }
    if result["backend"] == "s3":
        figures.add("delete_rate_over_loop")
    assert set(result["ratios"]) == figures
    assert all(value is not None for value in result["ratios"].values())
    # Every target of a backlog is in the targets table, each with its median and verdict.
    assert {t["figure"] for t in result["targets"]} == figures
    assert all(t["median"] is not None for t in result["targets"])
    for target in result["targets"]:
        assert f"| {target['target']} | {target['met']} |" in page
    # The table: a row per job step and per baseline part, and the ratios.
    for step in job["steps"]:
        assert f"| job | {step['step']} (" in page
    assert "**total (process wall time)**" in page
    for label in ("(a) ", "(b) ", "(c) "):
        assert sum(line.startswith(f"| {label}") for line in page.splitlines()) >= 1
    assert "job time / (a) one-liner time" in page
    assert "- job: ok" in page


def test_bench_filesystem_tiny(tmp_path):
    result, page = run_bench(tmp_path, "--backend", "fs")
    check_result(result, page)
    # Nothing of the run is left behind: its databases are dropped, its folder removed.
    assert not list(tmp_path.glob("snapshot-bench-*"))


def test_bench_s3_tiny(tmp_path):
    result, page = run_bench(tmp_path, "--backend", "s3")
    check_result(result, page)
    assert "DeleteObjects" in page


def test_bench_empty_measures_fixed_cost(tmp_path):
    """Nothing expired: the job and the one-op reference job both run in every round on the
    same instance, the job deletes nothing, and the fixed-cost ratio meets its target row."""
    result, page = run_bench(tmp_path, "--scenario", "empty")
    contenders = result["contenders"]
    assert set(contenders) == {"job", "trivial"}
    assert result["mix"]["to_delete"] == 0
    for name, outcome in contenders.items():
        assert outcome["check"]["ok"], (name, outcome["check"])
        assert outcome["status"] == "SUCCESS"
        assert len(outcome["runs_seconds"]) == 2
    assert [s["step"] for s in contenders["trivial"]["steps"]] == ["do_nothing"]
    covered = {phase for step in contenders["job"]["steps"] for phase in step["phases"]}
    assert covered == PHASES
    assert set(result["ratios"]) == {"job_over_trivial", "peak_memory_mb"}
    low, high = result["ratio_spread"]["job_over_trivial"]
    assert low <= result["ratios"]["job_over_trivial"] <= high
    [fixed_cost] = [t for t in result["targets"] if t["figure"] == "job_over_trivial"]
    assert fixed_cost["target"] == "<= 1.15"
    assert fixed_cost["met"] in ("yes", "no")
    assert "job time / one-op Dagster job time (fixed cost)" in page
    assert "- trivial: ok" in page
