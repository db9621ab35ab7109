"""Mutation testing of the modules that decide what is deleted, checked against a record.

    python -m mutation.check ci        # the fixed, fast set CI runs (a few minutes)
    python -m mutation.check full      # every deciding module, by hand (long)
    python -m mutation.check ci --update   # rewrite the record from this run's survivors

Each set names the modules it mutates and the tests that must catch the mutants. The set is
run by mutmut (pinned in constraints.txt) in its own working folder, `.mutation/<set>/`, so
the two sets never share a cache and the work tree stays clean. Every mutant that the tests
do not catch (mutmut's "survived", "no tests", "suspicious" or "skipped") must be listed,
with the reason it is acceptable, in `mutation/survivors-<set>.toml`; one that is not listed
there is a new survivor and fails the command (exit 1), which prints its name and its diff.

A survivor is identified by the function it is in and the lines the mutation changes (as
text, indentation ignored), not by mutmut's running number, so edits elsewhere in the module
or the function do not disturb the record. Listed survivors that no longer survive are
reported, and `--update` drops them.

Exit status: 0 when every survivor is listed with a reason; 1 when one is not (or a listed
one has no reason); 2 when the run itself failed (the tests fail without mutations, or
mutmut could not run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


def say(*parts: object) -> None:
    """One line of this command's report on standard output, flushed at once."""
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


REPO = Path(__file__).resolve().parent.parent
HERE = REPO / "mutation"
WORK = REPO / ".mutation"


@dataclass(frozen=True)
class MutationSet:
    """The modules one set mutates and the pytest arguments selecting the tests that run."""

    modules: tuple[str, ...]
    tests: tuple[str, ...]


SETS = {
    # The pure rules and the key checks and batch shape every object store shares, against
    # their unit tests (real folders, no services): a few minutes on 2 cores.
    "ci": MutationSet(
        modules=("snapshot_ops/rules.py", "snapshot_ops/storage/base.py"),
        tests=(
            "snapshot_ops_tests/unit/test_rules.py",
            "snapshot_ops_tests/unit/test_rules_bounds.py",
            "snapshot_ops_tests/unit/test_storage_filesystem.py",
            "snapshot_ops_tests/unit/test_storage_keys_and_batches.py",
        ),
    ),
    # Everything that decides what is deleted: the rules, the SQL of the protocol and the
    # journal, the cleanup loops and each backend's reading of per-key results, against the
    # unit and integration tiers (the end-to-end tier runs the job in subprocesses, which
    # mutmut cannot attribute to a function, and takes too long per mutant).
    "full": MutationSet(
        modules=(
            "snapshot_ops/rules.py",
            "snapshot_ops/db/engine.py",
            "snapshot_ops/db/schema.py",
            "snapshot_ops/db/runlog.py",
            "snapshot_ops/db/candidates.py",
            "snapshot_ops/db/journal.py",
            "snapshot_ops/cleanup.py",
            "snapshot_ops/storage/base.py",
            "snapshot_ops/storage/s3.py",
            "snapshot_ops/storage/azure_blob.py",
            "snapshot_ops/storage/filesystem.py",
        ),
        tests=("snapshot_ops_tests", "-m", "unit or integration"),
    ),
}

#: mutmut's statuses that mean the tests noticed the mutant.
CAUGHT = {"killed", "timeout", "segfault", "caught by type check"}
#: Statuses that must be listed in the record with a reason.
UNCAUGHT = {"survived", "no tests", "suspicious", "skipped"}

RECORD_HEADER = """\
# Surviving mutants of the "{name}" mutation set, each with why it is acceptable.
#
# `make {target}` (python -m mutation.check {name}) fails on any mutant that the tests do not
# catch and that is not listed here. An entry is identified by `function` (module, class and
# function) and `mutation` (the lines the mutant removes and adds, indentation ignored), so it
# keeps matching while unrelated code moves; `status` is mutmut's verdict, for reading only.
#
# When the command names a new survivor:
#   1. read its diff; if a test should catch it, add that test (a survivor that shows a real
#      gap is never recorded);
#   2. otherwise run `python -m mutation.check {name} --update` (or `make {target}
#      MUTATION_ARGS=--update`), which rewrites this file from the last run: entries still
#      surviving keep their reason, new ones get an empty `why`, gone ones are dropped;
#   3. fill in every empty `why`: "equivalent: ..." (no input can tell the mutant from the
#      code) or "out of scope: ..." (what it changes, and why no test here should pin it).
# The command fails while any `why` is empty.
"""


@dataclass(frozen=True)
class Survivor:
    name: str  # mutmut's name, e.g. snapshot_ops.rules.x_make_policy__mutmut_3
    function: (
        str  # e.g. snapshot_ops.rules.make_policy, snapshot_ops.db.journal.Journal.claim_pending
    )
    mutation: str  # the removed and added lines, one per line, "- ..." / "+ ..."
    status: str
    diff: str

    @property
    def identity(self) -> tuple[str, str]:
        return (self.function, self.mutation)


def function_of(mutant_name: str) -> str:
    """`pkg.mod.x_func__mutmut_3` -> `pkg.mod.func`; `pkg.mod.xǁClsǁmeth__mutmut_1` ->
    `pkg.mod.Cls.meth`."""
    mangled = mutant_name.partition("__mutmut_")[0]
    module, _, func = mangled.rpartition(".")
    if func.startswith("xǁ"):
        _, cls, meth = func.split("ǁ", 2)
        func = f"{cls}.{meth}"
    elif func.startswith("x_"):
        func = func[2:]
    return f"{module}.{func}"


def mutation_of(diff: str) -> str:
    """The changed lines of a unified diff, indentation ignored: the mutant's identity."""
    lines = []
    for line in diff.splitlines():
        if line.startswith(("---", "+++")) or not line.startswith(("-", "+")):
            continue
        lines.append(f"{line[0]} {line[1:].strip()}")
    return "\n".join(lines)


def prepare(name: str, mset: MutationSet, keep: bool) -> Path:
    """The set's working folder: this project's pyproject.toml plus the set's mutmut table,
    the package and the tests (linked), and what the tests read beside them."""
    work = WORK / name
    if not keep and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    table = {
        "source_paths": ["snapshot_ops"],
        "only_mutate": list(mset.modules),
        "also_copy": ["snapshot_ops_tests", "dagster.yaml", "workspace.yaml"],
        "pytest_add_cli_args_test_selection": list(mset.tests),
        "pytest_add_cli_args": ["-p", "no:cacheprovider"],
        "use_git_change_detection": False,
        # mutmut stops a mutant after 2 * multiplier * (its tests' clean duration + constant)
        # CPU seconds. Its default multiplier (15) lets a mutant that loops forever hold a
        # worker for half an hour; the CPU a clean run of the tests takes is below their wall
        # time, so 1 * (duration + 10 s), doubled, still never stops one that would finish.
        "timeout_multiplier": 1.0,
        "timeout_constant": 10.0,
    }
    config = "\n[tool.mutmut]\n" + "".join(
        f"{key} = {json.dumps(value)}\n" for key, value in table.items()
    )
    (work / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text() + config)
    for entry in ("snapshot_ops", "snapshot_ops_tests", "dagster.yaml", "workspace.yaml"):
        link = work / entry
        if not link.exists():
            link.symlink_to(REPO / entry)
    # The tests find Azurite (and other repository files) next to their own folder, which
    # mutmut copies into mutants/.
    (work / "mutants").mkdir(exist_ok=True)
    modules = work / "mutants" / "node_modules"
    if not modules.exists() and (REPO / "node_modules").exists():
        modules.symlink_to(REPO / "node_modules")
    return work


def run_mutmut(work: Path, max_children: int | None) -> None:
    command = [sys.executable, "-m", "mutmut", "run"]
    if max_children:
        command += ["--max-children", str(max_children)]
    env = dict(os.environ)
    # The mutated copy must be the one imported, also by subprocesses the tests start.
    env["PYTHONPATH"] = str(work / "mutants")
    say("mutation: running", " ".join(command[1:]), "in", work.relative_to(REPO))
    done = subprocess.run(command, cwd=work, env=env, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        say(f"mutation: mutmut failed (exit {done.returncode}); see its output above")
        sys.exit(2)


def collect(work: Path, mset: MutationSet) -> tuple[list[Survivor], Counter[str]]:
    """Every uncaught mutant of the set's modules, and the count of each status."""
    os.chdir(work)  # mutmut's own helpers read mutants/ relative to the current folder
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    survivors, statuses = [], Counter()
    for module in mset.modules:
        data = SourceFileMutationData(path=Path(module))
        data.load()
        if not data.exit_code_by_key:
            say(f"mutation: no mutants recorded for {module}")
            sys.exit(2)
        for mutant, exit_code in sorted(data.exit_code_by_key.items()):
            status = status_by_exit_code[exit_code]
            statuses[status] += 1
            if status in CAUGHT:
                continue
            if status not in UNCAUGHT:
                say(f"mutation: {mutant} was not run ({status})")
                sys.exit(2)
            diff = get_diff_for_mutant(mutant, path=Path(module))
            survivors.append(Survivor(mutant, function_of(mutant), mutation_of(diff), status, diff))
    os.chdir(REPO)
    return survivors, statuses


def load_record(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return tomllib.loads(path.read_text()).get("survivor", [])


def toml_string(text: str) -> str:
    if "\n" in text:
        return '"""\n' + text.replace("\\", "\\\\").replace('"""', '\\"""') + '\n"""'
    return json.dumps(text, ensure_ascii=False)


def write_record(path: Path, name: str, survivors: list[Survivor], old: list[dict]) -> None:
    reasons: dict[tuple[str, str], list[str]] = {}
    for entry in old:
        key = (entry["function"], entry["mutation"].strip("\n"))
        reasons.setdefault(key, []).append(entry.get("why", ""))
    target = "mutation-ci" if name == "ci" else "mutation"
    parts = [RECORD_HEADER.format(name=name, target=target)]
    for survivor in sorted(survivors, key=lambda s: s.identity):
        kept = reasons.get(survivor.identity) or [""]
        why = kept.pop(0)
        parts.append(
            "\n[[survivor]]\n"
            f"function = {toml_string(survivor.function)}\n"
            f"mutation = {toml_string(survivor.mutation)}\n"
            f"status = {toml_string(survivor.status)}\n"
            f"why = {toml_string(why)}\n"
        )
    path.write_text("".join(parts))


def compare(survivors: list[Survivor], record: list[dict]) -> tuple[list[Survivor], list, list]:
    """(new survivors, listed entries without a reason, listed entries that no longer survive)."""
    listed = Counter((e["function"], e["mutation"].strip("\n")) for e in record)
    unexplained = [e for e in record if not e.get("why", "").strip()]
    new = []
    for survivor in survivors:
        if listed[survivor.identity] > 0:
            listed[survivor.identity] -= 1
        else:
            new.append(survivor)
    stale = [key for key, count in listed.items() for _ in range(count)]
    return new, unexplained, stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("set", choices=sorted(SETS))
    parser.add_argument("--update", action="store_true", help="rewrite the survivors file")
    parser.add_argument("--keep", action="store_true", help="reuse the last run's results")
    parser.add_argument(
        "--module",
        action="append",
        help="mutate only this module of the set (repeatable); the record is checked for it only",
    )
    parser.add_argument("--max-children", type=int, default=None, help="parallel mutants")
    args = parser.parse_args(argv)

    mset = SETS[args.set]
    if args.module:
        unknown = sorted(set(args.module) - set(mset.modules))
        if unknown:
            parser.error(f"not in the set {args.set}: {', '.join(unknown)}")
        mset = MutationSet(modules=tuple(args.module), tests=mset.tests)
        if args.update:
            parser.error("--update rewrites the whole record: run it without --module")
    record_path = HERE / f"survivors-{args.set}.toml"
    started = time.monotonic()
    work = prepare(args.set, mset, keep=args.keep)
    run_mutmut(work, args.max_children)
    survivors, statuses = collect(work, mset)
    elapsed = time.monotonic() - started
    summary = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    say(
        f"mutation: set {args.set}: {sum(statuses.values())} mutants ({summary}) in {elapsed:.0f} s"
    )

    record = load_record(record_path)
    if args.module:
        names = tuple(m.removesuffix(".py").replace("/", ".") + "." for m in mset.modules)
        record = [entry for entry in record if entry["function"].startswith(names)]
    if args.update:
        write_record(record_path, args.set, survivors, record)
        record = load_record(record_path)
        say(f"mutation: wrote {len(survivors)} survivors to {record_path.relative_to(REPO)}")

    new, unexplained, stale = compare(survivors, record)
    for function, mutation in stale:
        say(f"mutation: listed survivor no longer survives (drop it with --update): {function}")
        say("    " + mutation.replace("\n", "\n    "))
    for survivor in new:
        say(f"\nmutation: NEW SURVIVOR {survivor.name} ({survivor.status}) in {survivor.function}")
        say(survivor.diff)
    for entry in unexplained:
        say(f"mutation: listed survivor has no reason: {entry['function']}")
        say("    " + entry["mutation"].strip("\n").replace("\n", "\n    "))
    if new or unexplained:
        say(
            f"\nmutation: {len(new)} survivor(s) not in {record_path.relative_to(REPO)} and "
            f"{len(unexplained)} without a reason: add a test that catches each, or record why "
            "it is acceptable (see the file's header)"
        )
    caught = sum(statuses[s] for s in CAUGHT)
    accepted = len(survivors) - len(new) - len(unexplained)
    say(f"mutation: {caught + accepted} passed, {len(new) + len(unexplained)} failed")
    return 1 if new or unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
