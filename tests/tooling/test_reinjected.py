"""The re-injected bugs of issue 13 (``tests/sim/reinjected``) stay appliable: each patch
undoes one fix of the broken-promises issue (Dynamo paper sections 4.4-4.6), and
``python -m seda_dynamo.sim.reinject`` applies it to a copy of the tree. A patch that no
longer applies would silently drop its item from the demonstration."""

from __future__ import annotations

import json
import shutil

import pytest

from seda_dynamo.sim import reinject


def test_every_item_has_its_patch_and_the_readme_names_it():
    readme = (reinject.PATCHES / "README.md").read_text()
    on_disk = {p.name for p in reinject.PATCHES.glob("*.patch")}
    assert on_disk == {patch for patch, _ in reinject.ITEMS.values()}
    assert all(f"`{patch}`" in readme for patch in on_disk)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_every_patch_applies_to_a_copy_of_the_tree_and_changes_it(tmp_path):
    reinject.copy_tree(reinject.ROOT, tmp_path)
    for item, (patch, _) in sorted(reinject.ITEMS.items()):
        checked = reinject.apply(tmp_path, reinject.PATCHES / patch, check=True)
        assert checked.returncode == 0, (item, checked.stderr)
    applied = reinject.apply(tmp_path, reinject.PATCHES / "item01.patch")
    assert applied.returncode == 0, applied.stderr
    changed = (tmp_path / "seda_dynamo" / "actors.py").read_text()
    assert changed != (reinject.ROOT / "seda_dynamo" / "actors.py").read_text()


def test_the_cases_before_a_failure_are_counted_from_hypothesis_observations(tmp_path):
    observed = tmp_path / ".hypothesis" / "observed"
    observed.mkdir(parents=True)
    cases = [("t::a", "passed", "during generate phase"), ("t::b", "failed", "explicit"),
             ("t::a", "gave_up", "during generate phase"),
             ("t::a", "passed", "during generate phase"),
             ("t::a", "failed", "during generate phase"),
             ("t::a", "failed", "during shrink phase")]
    lines = [json.dumps({"type": "test_case", "property": p, "status": s, "how_generated": h})
             for p, s, h in cases]
    (observed / "2026-01-01_testcases.jsonl").write_text("\n".join(lines) + "\n")
    assert reinject.cases_before_failing(tmp_path, "t::a") == 3
    assert reinject.cases_before_failing(tmp_path, "t::b") == 1
    assert reinject.cases_before_failing(tmp_path, "t::c") is None
