"""Mutation testing of the modules that decide what is deleted, checked against a record.

    python -m mutation.check ci        # the fixed, fast set CI runs (a few minutes)
    python -m mutation.check full      # every deciding module, by hand (hours): the groups
                                       # selection, protocol and storage, one after another
    python -m mutation.check protocol --module snapshot_ops/db/journal.py   # one module
    python -m mutation.check selection --keep \
        --function snapshot_ops.db.candidates.Candidates.summarize          # one function
    python -m mutation.check ci --update   # rewrite the record from this run's survivors

Each set names the modules it mutates and the tests that must catch the mutants. The set is
run by mutmut (pinned in constraints.txt) in its own working folder, `.mutation/<set>/`, so
no two sets share a cache and the work tree stays clean. Every mutant that the tests
do not catch (mutmut's "survived", "no tests", "suspicious" or "skipped") must be listed,
with the reason it is acceptable, in `mutation/survivors-<set>.toml`; one that is not listed
there is a new survivor and fails the command (exit 1), which prints its name and its diff.

`--module` and `--function` (each repeatable, together their union) choose what is run and
checked: the mutants of those modules and functions, against the record's entries for them.
With `--keep`, verdicts of earlier runs in the set's folder stay and only mutants without
one are run, so a set can be judged in parts and checked whole at the end.

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


def tests_in(*paths: str) -> tuple[str, ...]:
    """pytest arguments selecting these test files (paths under snapshot_ops_tests/)."""
    return tuple(f"snapshot_ops_tests/{path}" for path in paths)


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
            "snapshot_ops_tests/unit/test_key_matching.py",
        ),
    ),
    # The three groups below together mutate everything that decides what is deleted, each
    # group against the tests whose job is to pin it: unit and integration tests, and the
    # end-to-end tests that run the job in process (mutmut cannot attribute what a
    # subprocess runs to a function, so the others would only cost time). Each survivor
    # runs all the tests that reach its function, so tests that run the job for other ends
    # (alerts, housekeeping, reconcile, migrations of the Dagster instance) are left out.
    #
    # What is a candidate: the retention rules, the candidate SQL and the marking protocol,
    # the engine and the schema.
    "selection": MutationSet(
        modules=(
            "snapshot_ops/rules.py",
            "snapshot_ops/db/candidates.py",
            "snapshot_ops/db/engine.py",
            "snapshot_ops/db/schema.py",
        ),
        tests=tests_in(
            "unit/test_rules.py",
            "unit/test_rules_bounds.py",
            "unit/test_database_urls.py",
            "integration/test_property_oracle.py",
            "integration/test_concurrent_attach.py",
            "integration/test_journal_entries.py",
            "integration/test_cleanup_loops.py",
            "integration/test_lease.py",
            "integration/test_faults.py",
            "integration/test_migrations.py",
            "integration/test_least_privilege.py",
            "e2e/test_time_formats.py",
            "e2e/test_job_rules.py",
            "e2e/test_bad_input.py",
            "e2e/test_safety_valves.py",
            "e2e/test_run_outcomes_at_bounds.py",
            "e2e/test_key_ranges.py",
            "e2e/test_message_hints.py",
        ),
    ),
    # What happens to a marked row: the cleanup loops, the journal and the run log.
    "protocol": MutationSet(
        modules=(
            "snapshot_ops/cleanup.py",
            "snapshot_ops/db/journal.py",
            "snapshot_ops/db/runlog.py",
        ),
        tests=tests_in(
            "unit/test_lease_length.py",
            "integration/test_cleanup_loops.py",
            "integration/test_lease.py",
            "integration/test_faults.py",
            "integration/test_concurrent_attach.py",
            "integration/test_journal_entries.py",
            "integration/test_checkpoint_order.py",
            "e2e/test_bad_input.py",
            "e2e/test_job_rules.py",
            "e2e/test_refused_keys.py",
            "e2e/test_safety_valves.py",
            "e2e/test_run_outcomes_at_bounds.py",
            "e2e/test_key_ranges.py",
            "e2e/test_message_hints.py",
        ),
    ),
    # What the stores answer: the key checks, batching and each backend's per-key results.
    "storage": MutationSet(
        modules=(
            "snapshot_ops/storage/base.py",
            "snapshot_ops/storage/s3.py",
            "snapshot_ops/storage/azure_blob.py",
            "snapshot_ops/storage/filesystem.py",
        ),
        tests=tests_in(
            "unit/test_storage_filesystem.py",
            "unit/test_storage_keys_and_batches.py",
            "unit/test_storage_urls.py",
            "unit/test_emptied_folders.py",
            "integration/test_azure_credential.py",
            "integration/test_storage_contract.py",
            "integration/test_storage_batches.py",
            "integration/test_object_storage_requests.py",
            "integration/test_s3_resource.py",
            "integration/test_faults.py",
            "e2e/test_object_store_faults.py",
            "e2e/test_job_object_storage.py",
            "e2e/test_refused_keys.py",
        ),
    ),
}
#: `full`: every group, one after another.
FULL = ("selection", "protocol", "storage")

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


@dataclass(frozen=True)
class Scope:
    """The part of a set that one command runs and checks: whole modules (paths, as in
    `MutationSet.modules`) and single functions (dotted, as the record names them). Empty
    means the whole set."""

    modules: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.modules or self.functions)

    def patterns(self) -> list[str]:
        """mutmut's names of the scope's mutants, as the globs `mutmut run` accepts."""
        return [f"{dotted(module)}.*" for module in self.modules] + [
            mangled(function) + "__mutmut_*" for function in self.functions
        ]

    def covers(self, function: str) -> bool:
        """Whether the record entry or mutant of this (dotted) function is in the scope."""
        if not self:
            return True
        return function in self.functions or any(
            function.startswith(dotted(module) + ".") for module in self.modules
        )


def mangled(function: str) -> str:
    """The inverse of `function_of`: `pkg.mod.func` -> `pkg.mod.x_func`, and
    `pkg.mod.Cls.meth` -> `pkg.mod.xǁClsǁmeth` (a class name starts with a capital, after
    any leading underscores: `_Meter`)."""
    owner, _, name = function.rpartition(".")
    module, _, cls = owner.rpartition(".")
    if cls.lstrip("_")[:1].isupper():
        return f"{module}.xǁ{cls}ǁ{name}"
    return f"{owner}.x_{name}"


def dotted(module: str) -> str:
    """`snapshot_ops/db/journal.py` -> `snapshot_ops.db.journal`."""
    return module.removesuffix(".py").replace("/", ".")


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
        "also_copy": ["snapshot_ops_tests", "dagster.yaml", "workspace.yaml", "mutation"],
        "pytest_add_cli_args_test_selection": list(mset.tests),
        # fast_first: each mutant's tests run quickest first, so a caught one is cheap.
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-p", "mutation.fast_first"],
        "use_git_change_detection": False,
        # mutmut stops a mutant after (its tests' clean call time + constant) * multiplier
        # seconds of wall time (twice that of CPU). Its default multiplier, 15, lets a mutant
        # that loops forever hold a worker for half an hour. The clean time it measures leaves
        # out fixture set-up, and parallel mutants slow each other: a survivor's pass took
        # 3.8 times its clean time with 4 at once on 2 cores, so 8 leaves room to spare.
        "timeout_multiplier": 8.0,
        "timeout_constant": 30.0,
    }
    config = "\n[tool.mutmut]\n" + "".join(
        f"{key} = {json.dumps(value)}\n" for key, value in table.items()
    )
    (work / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text() + config)
    for entry in (
        "snapshot_ops",
        "snapshot_ops_tests",
        "dagster.yaml",
        "workspace.yaml",
        "mutation",
    ):
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


def run_mutmut(work: Path, max_children: int | None, patterns: list[str]) -> None:
    """`mutmut run` in the set's folder: every mutant not yet judged there, or with
    `patterns`, the mutants they name (judged again even if judged before)."""
    command = [sys.executable, "-m", "mutmut", "run"]
    if max_children:
        command += ["--max-children", str(max_children)]
    command += patterns
    env = dict(os.environ)
    # The mutated copy must be the one imported, also by subprocesses the tests start.
    env["PYTHONPATH"] = str(work / "mutants")
    say("mutation: running", " ".join(command[1:]), "in", work.relative_to(REPO))
    done = subprocess.run(command, cwd=work, env=env, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        say(f"mutation: mutmut failed (exit {done.returncode}); see its output above")
        sys.exit(2)


def unjudged(work: Path, mset: MutationSet, scope: Scope) -> list[str] | None:
    """mutmut's names of the scope's mutants that have no verdict in `work` yet (and the
    pattern of each scope function it has no mutant of), or None when `work` holds no
    mutants (a first run)."""
    os.chdir(work)
    from mutmut.mutation.data import SourceFileMutationData

    known, waiting, seen = False, [], set()
    for module in mset.modules:
        data = SourceFileMutationData(path=Path(module))
        data.load()
        known = known or bool(data.exit_code_by_key)
        seen |= {function_of(mutant) for mutant in data.exit_code_by_key}
        waiting += [
            mutant
            for mutant, exit_code in data.exit_code_by_key.items()
            if exit_code is None and scope.covers(function_of(mutant))
        ]
    os.chdir(REPO)
    # A function with no mutant here yet (new since mutmut last ran in this folder) is named
    # by pattern: mutmut makes its mutants when it runs, and runs them.
    waiting += [mangled(f) + "__mutmut_*" for f in scope.functions if f not in seen]
    return waiting if known else None


def collect(work: Path, mset: MutationSet, scope: Scope) -> tuple[list[Survivor], Counter[str]]:
    """Every uncaught mutant of the set's modules in the scope, and the count of each status."""
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
            if not scope.covers(function_of(mutant)):
                continue
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


def write_record(
    path: Path, name: str, survivors: list[Survivor], old: list[dict], others: list[dict]
) -> None:
    """Rewrite the record: `survivors` (keeping the reasons `old` gave them) and, as they
    were, the entries `others` of modules this run did not mutate."""
    reasons: dict[tuple[str, str], list[str]] = {}
    for entry in old:
        key = (entry["function"], entry["mutation"].strip("\n"))
        reasons.setdefault(key, []).append(entry.get("why", ""))
    entries = [
        (e["function"], e["mutation"].strip("\n"), e.get("status", ""), e.get("why", ""))
        for e in others
    ]
    for survivor in survivors:
        kept = reasons.get(survivor.identity) or [""]
        entries.append((*survivor.identity, survivor.status, kept.pop(0)))
    target = "mutation-ci" if name == "ci" else "mutation"
    parts = [RECORD_HEADER.format(name=name, target=target)]
    for function, mutation, status, why in sorted(entries):
        parts.append(
            "\n[[survivor]]\n"
            f"function = {toml_string(function)}\n"
            f"mutation = {toml_string(mutation)}\n"
            f"status = {toml_string(status)}\n"
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


def check(name: str, scope: Scope, *, update: bool, keep: bool, children: int | None) -> int:
    """Run one set (or the scope's part of it) and check its survivors against its record:
    0 when every survivor is listed with a reason, 1 when not."""
    mset = SETS[name]
    record_path = HERE / f"survivors-{name}.toml"
    started = time.monotonic()
    work = prepare(name, mset, keep=keep)
    names = scope.patterns()
    if keep and scope:  # mutmut runs named mutants again: name only those not yet judged
        waiting = unjudged(work, mset, scope)
        if waiting is not None:  # None: a first run, nothing judged here yet
            names = waiting
    if names or not scope:
        run_mutmut(work, children, names)
    survivors, statuses = collect(work, mset, scope)
    elapsed = time.monotonic() - started
    summary = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    say(f"mutation: set {name}: {sum(statuses.values())} mutants ({summary}) in {elapsed:.0f} s")

    in_set = Scope(modules=mset.modules)
    everything = load_record(record_path)
    record = [e for e in everything if in_set.covers(e["function"]) and scope.covers(e["function"])]
    if update:  # the entries of what this run did not mutate stay as they are
        others = [entry for entry in everything if entry not in record]
        write_record(record_path, name, survivors, record, others)
        record = [e for e in load_record(record_path) if e not in others]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("set", choices=[*sorted(SETS), "full"])
    parser.add_argument("--update", action="store_true", help="rewrite the survivors file")
    parser.add_argument("--keep", action="store_true", help="reuse the last run's results")
    parser.add_argument(
        "--module",
        action="append",
        default=[],
        help="run only this module of the set (repeatable); the record is checked for it only",
    )
    parser.add_argument(
        "--function",
        action="append",
        default=[],
        help="run only this function (dotted, as the record names it; repeatable); the record "
        "is checked for it only",
    )
    parser.add_argument("--max-children", type=int, default=None, help="parallel mutants")
    args = parser.parse_args(argv)

    names = FULL if args.set == "full" else (args.set,)
    modules = {m for name in names for m in SETS[name].modules}
    unknown = sorted(set(args.module) - modules) + sorted(
        f for f in args.function if not Scope(modules=tuple(modules)).covers(f)
    )
    if unknown:
        parser.error(f"not in the set {args.set}: {', '.join(unknown)}")
    failed = 0
    for name in names:
        mset = SETS[name]
        scope = Scope(
            modules=tuple(m for m in mset.modules if m in args.module),
            functions=tuple(f for f in args.function if Scope(modules=mset.modules).covers(f)),
        )
        if (args.module or args.function) and not scope:
            continue
        failed |= check(name, scope, update=args.update, keep=args.keep, children=args.max_children)
    return failed


if __name__ == "__main__":
    sys.exit(main())
