"""``python -m seda_dynamo.sim.reinject [--item N] [--max-seeds K] [--nodes M]``: the
demonstration that the simulator and the fuzzers find bugs by themselves (issue 13).

Each patch of ``tests/sim/reinjected/`` undoes the fix of one item of the
broken-promises issue (its README says which). For each, the working tree (``git
ls-files``: no venv, no caches) is copied to a temp dir, the patch applied there with
``git apply`` (never to the tree itself), and the finders run in the copy as
subprocesses with ``PYTHONPATH`` set to it:

- the core property tests that exist for items 1 and 2 (``CORE_TESTS``);
- the handler fuzzers (``tests/fuzz/test_handlers.py``, ``test_returned_contexts.py``),
  derandomized (Hypothesis seed 0), counting the cases each ran until it failed
  (Hypothesis's observations); when no finder found it with ``make test``'s budget,
  the fuzzers again with ``make soak``'s (ten times more);
- the simulator (``python -m seda_dynamo.sim``) over seeds 0, 1, 2, ... up to K,
  stopping at the first seed with an anomaly. It runs M = 5 nodes by default: with 3
  nodes and N = 3 every node replicates every key, so no spare exists to fail over to
  (item 11) and no node stands in for another (item 10).

It prints, per item, which finder found it and after how many seeds or cases, then the
table of ``seda_dynamo/sim/report.md``. The generators are the ones the suite runs,
unchanged. A shell (subprocesses, files); Dynamo paper sections 4.4-4.7 are what the
patched fixes protect.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATCHES = ROOT / "tests" / "sim" / "reinjected"
#: Item of the broken-promises issue -> (its patch, what the patch brings back).
ITEMS: dict[int, tuple[str, str]] = {
    1: ("item01.patch", "a replica stamps with its actor whose name sorts last as text"),
    2: ("item02.patch", "a context's counters are bounded neither at the door nor at the "
                        "stamp"),
    5: ("item05.patch", "a forwarded write's timeout_ms is not validated"),
    10: ("item10.patch", "a forwarded write stamped off its replicas carries no hint"),
    11: ("item11.patch", "a failed or silent target is not replaced within the request"),
}
#: The property tests of tests/cores written for items 1 and 2 (issue 11, "Done when").
CORE_TESTS: dict[int, list[str]] = {
    1: ["tests/cores/test_actors.py"],
    2: ["tests/cores/test_contexts.py", "tests/cores/test_causality.py"],
}
FUZZ_TESTS = ["tests/fuzz/test_handlers.py", "tests/fuzz/test_returned_contexts.py"]
SEED_TIMEOUT = 600.0  # seconds one simulated seed may take before it counts as a hang
TESTS_TIMEOUT = 1200.0  # seconds one finder's pytest run may take


@dataclass(slots=True)
class Finding:
    finder: str
    found: bool
    after: str  # "seed 3", "37 cases", "not found within 20 seeds", ...
    detail: str = ""


def copy_tree(root: Path, dest: Path) -> None:
    """The files git tracks in ``root``, as they are in the working tree, into ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = root / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def apply(copy: Path, patch: Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    """``git apply`` (``--check``: only whether it would apply) ``patch`` in ``copy``."""
    return subprocess.run(["git", "apply", *(["--check"] if check else []), str(patch)],
                          cwd=copy, capture_output=True, text=True)


#: Hypothesis writes each test case it runs, so the cases before a failure can be counted.
OBSERVE = {"HYPOTHESIS_EXPERIMENTAL_OBSERVABILITY": "1",
           "HYPOTHESIS_EXPERIMENTAL_OBSERVABILITY_NOCOVER": "1"}


def env_for(copy: Path, soak: bool = False) -> dict[str, str]:
    return {**os.environ, **OBSERVE, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1",
            "SEDA_SOAK": "1" if soak else "0"}


def anomalies(copy: Path, seed: int, nodes: int) -> list[str] | None:
    """The anomalies the simulator of ``copy`` finds on ``seed`` (None: it hung)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "seda_dynamo.sim", "--seed", str(seed), "--nodes",
             str(nodes)], cwd=copy, env=env_for(copy), capture_output=True, text=True,
            timeout=SEED_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None
    found = [line.strip() for line in done.stdout.splitlines() if line.startswith("  ")]
    if done.returncode != 0 and not found:
        found = [f"exit {done.returncode}: {done.stderr.strip()[-300:]}"]
    return found


def simulate(copy: Path, nodes: int, max_seeds: int, baseline: Path,
             clean: dict[int, bool]) -> Finding:
    """Seeds 0, 1, ... of the patched simulator until one has an anomaly that the
    unpatched tree (``baseline``; ``clean`` caches its verdicts) does not have on the same
    seed. A seed that fails without the patch too proves nothing: it is skipped."""
    skipped = []
    for seed in range(max_seeds):
        found = anomalies(copy, seed, nodes)
        if found == []:
            continue
        if seed not in clean:
            clean[seed] = anomalies(baseline, seed, nodes) == []
        if not clean[seed]:
            skipped.append(seed)
            continue
        return Finding("simulator", True, f"seed {seed} ({seed + 1} seeds run)",
                       found[0][:300] if found else "the run hung")
    note = f"; seeds {skipped} skipped: they fail unpatched too" if skipped else ""
    return Finding("simulator", False, f"not found within {max_seeds} seeds ({nodes} nodes)",
                   note.lstrip("; "))


def cases_before_failing(copy: Path, test: str) -> int | None:
    """The test cases Hypothesis ran for ``test`` up to and including its first failing
    one, shrinking not counted, from the observations it writes (``OBSERVE``) under the
    copy's ``.hypothesis/observed``. None: no case of it failed (a test of fixed
    examples, or a failure outside Hypothesis)."""
    ran = 0
    for path in sorted((copy / ".hypothesis" / "observed").glob("*_testcases.jsonl")):
        for line in path.read_text().splitlines():
            case = json.loads(line)
            if case.get("type") != "test_case" or case.get("property") != test or \
                    "shrink" in case.get("how_generated", "") or \
                    case.get("status") not in ("passed", "failed"):
                continue
            ran += 1
            if case["status"] == "failed":
                return ran
    return None


def run_tests(copy: Path, finder: str, tests: list[str], soak: bool = False) -> Finding:
    """Run ``tests`` in the patched copy, derandomized (``soak``: with ``make soak``'s ten
    times as many cases); the first failing test is the finding."""
    shutil.rmtree(copy / ".hypothesis", ignore_errors=True)  # count this run's cases only
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "--hypothesis-seed=0", "-o", "timeout=600",
             *tests],
            cwd=copy, env=env_for(copy, soak), capture_output=True, text=True,
            timeout=TESTS_TIMEOUT)
    except subprocess.TimeoutExpired:
        return Finding(finder, True, "a hang", f"pytest ran past {TESTS_TIMEOUT:.0f} s")
    failed = re.findall(r"^FAILED (\S+)", done.stdout, re.MULTILINE)
    passed = re.search(r"(\d+) passed", done.stdout)
    if done.returncode == 0 or not failed:
        if done.returncode not in (0, 1):
            return Finding(finder, False, "could not run", done.stdout[-300:])
        return Finding(finder, False, "not found",
                       f"{passed.group(1) if passed else 0} tests passed")
    # Each failing test, with the cases Hypothesis ran until it failed (a property
    # test) or none (a test of fixed examples); the property test that failed soonest
    # is the finding's count.
    cases = {test: cases_before_failing(copy, test) for test in failed}
    counted = sorted((n, test) for test, n in cases.items() if n is not None)
    after = f"{counted[0][0]} cases ({counted[0][1].split('::')[-1]})" if counted else \
        "an example test"
    detail = "; ".join(f"{test.split('::')[-1]}" + (f" ({n} cases)" if n is not None else
                                                     " (examples)")
                       for test, n in cases.items())
    return Finding(finder, True, after, f"{len(failed)} failed: {detail}")


def demonstrate(item: int, max_seeds: int, nodes: int, baseline: Path,
                clean: dict[int, bool]) -> list[Finding]:
    patch = PATCHES / ITEMS[item][0]
    with tempfile.TemporaryDirectory(prefix=f"seda-reinject-{item}-") as tmp:
        copy = Path(tmp)
        copy_tree(ROOT, copy)
        applied = apply(copy, patch)
        if applied.returncode != 0:
            return [Finding("git apply", False, "the patch does not apply",
                            applied.stderr.strip()[:300])]
        findings = []
        if item in CORE_TESTS:
            findings.append(run_tests(copy, "core property tests", CORE_TESTS[item]))
        findings.append(run_tests(copy, "handler fuzzers", FUZZ_TESTS))
        findings.append(simulate(copy, nodes, max_seeds, baseline, clean))
        if not any(f.found for f in findings):  # make soak's budget, ten times make test's
            findings.append(run_tests(copy, "handler fuzzers, soak budget", FUZZ_TESTS,
                                      soak=True))
        return findings


def table(results: dict[int, list[Finding]]) -> str:
    """The results as the markdown table of the report."""
    rows = ["| item | re-injected | finder | found | after | first sign |",
            "|---|---|---|---|---|---|"]
    for item, findings in results.items():
        for f in findings:
            rows.append(f"| {item} | {ITEMS[item][1]} | {f.finder} | "
                        f"{'yes' if f.found else 'no'} | {f.after} | "
                        f"{f.detail.replace('|', '/')[:160]} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seda_dynamo.sim.reinject",
                                     description="re-inject fixed bugs, see who finds them")
    parser.add_argument("--item", type=int, choices=sorted(ITEMS), action="append",
                        help="one item (repeatable); default: every item")
    parser.add_argument("--max-seeds", type=int, default=20,
                        help="simulated seeds to try before giving up")
    parser.add_argument("--nodes", type=int, default=5, help="nodes of each simulated run")
    args = parser.parse_args(argv)
    results: dict[int, list[Finding]] = {}
    clean: dict[int, bool] = {}  # seed -> whether the unpatched simulator passes it
    with tempfile.TemporaryDirectory(prefix="seda-reinject-base-") as base:
        copy_tree(ROOT, Path(base))
        for item in args.item or sorted(ITEMS):
            print(f"item {item} ({ITEMS[item][0]}): {ITEMS[item][1]}", flush=True)
            results[item] = demonstrate(item, args.max_seeds, args.nodes, Path(base), clean)
            for f in results[item]:
                print(f"  {f.finder}: {'found after ' if f.found else ''}{f.after}"
                      f"{': ' + f.detail if f.detail else ''}", flush=True)
    failing = sorted(seed for seed, ok in clean.items() if not ok)
    if failing:
        print(f"\nseeds with anomalies on the unpatched tree ({args.nodes} nodes): {failing}")
    print()
    print(table(results))
    missed = [item for item, findings in results.items()
              if not any(f.found for f in findings)]
    if missed:
        print(f"\nnot found by any finder: items {', '.join(map(str, missed))}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
