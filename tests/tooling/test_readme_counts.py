"""The README's counts of what ``make test`` runs are the code's: the simulated seeds of
tests/sim/test_seeds.py (how many, of how many nodes) and the generated fuzz cases of
tests/fuzz (hypothesis ``max_examples`` of every fuzz test, by target) and the real
node's fuzzing time. Each number is read from the module that sets it, so changing
``SEEDS``, a ``max_examples`` or the budget without the README fails here.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
#: The README's name for the target each fuzz module drives.
TARGETS = {"test_handlers": "one node's stage handlers",
           "test_returned_contexts": "contexts a node handed out and a client changed",
           "test_in_sim": "a node of a simulated three-node cluster"}


def module(folder: str, name: str) -> ModuleType:
    """``tests/<folder>/<name>.py`` as pytest imports it (its folder on the path)."""
    for path in (ROOT / "tests", ROOT / "tests" / folder):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    return importlib.import_module(name)


def generated_cases(mod: ModuleType) -> int:
    """The ``max_examples`` of every hypothesis test of ``mod``, summed, as ``make test``
    runs them (``SEDA_SOAK=1`` multiplies them by the module's ``EXAMPLES``)."""
    total = 0
    for _, fn in inspect.getmembers(mod, inspect.isfunction):
        found = getattr(fn, "_hypothesis_internal_use_settings", None)
        if fn.__name__.startswith("test_") and found is not None:
            total += found.max_examples // mod.EXAMPLES
    return total


def test_every_fuzz_module_with_generated_cases_is_counted_in_the_readme():
    counted = {path.stem for path in (ROOT / "tests" / "fuzz").glob("test_*.py")
               if generated_cases(module("fuzz", path.stem))}
    assert counted == set(TARGETS), "name the target of each fuzz module in TARGETS"


def test_the_readme_states_the_fuzz_cases_make_test_runs():
    cases = {name: generated_cases(module("fuzz", name)) for name in TARGETS}
    stated = re.search(r"tests/fuzz\): (\d+) generated cases, (.*?) \(up to", README, re.S)
    assert stated, "README.md: the sentence on the fuzzers' cases is gone"
    assert int(stated.group(1)) == sum(cases.values())
    parts = " ".join(stated.group(2).split())
    for name, target in TARGETS.items():
        assert f"{cases[name]} against {target}" in parts, (name, cases[name], parts)


def test_the_readme_states_the_seconds_against_a_real_node():
    real = module("fuzz", "test_real_node")
    if real.SOAK or real.BUDGET_S != 20.0:
        pytest.skip("the budget is set by the environment in this run")
    assert re.search(rf"\b{real.BUDGET_S:g} s against one real node", README)


def test_the_readme_states_the_seeds_make_test_runs():
    seeds = module("sim", "test_seeds").SEEDS
    sizes = sorted({nodes for nodes, _ in seeds})
    stated = re.search(r"make test runs (\d+) seeds of ([\d, and]+) nodes", README)
    assert stated, "README.md: the sentence on the simulator's seeds is gone"
    assert int(stated.group(1)) == len(seeds)
    assert [int(n) for n in re.findall(r"\d+", stated.group(2))] == sizes
