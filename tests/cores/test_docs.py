"""The architecture page stays true to the code: its module map names every module, one
line each, and a module longer than the size line says why (docs/architecture.md)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
SIZE_LINE = 350


def modules() -> list[str]:
    found = [p for folder in ("seda_dynamo", "stages") for p in (ROOT / folder).rglob("*.py")]
    return sorted(str(p.relative_to(ROOT)) for p in found if "__pycache__" not in p.parts)


def section(title: str) -> str:
    text = DOC.read_text()
    match = re.search(rf"^(#+) {re.escape(title)}\n(.*?)(?=^#+ |\Z)", text, re.S | re.M)
    assert match, f"docs/architecture.md has no section {title!r}"
    return match.group(2)


def named(text: str) -> list[str]:
    return re.findall(r"^- `([^`]+\.py)`", text, re.M)


def test_the_module_map_names_every_module_once_and_no_module_that_is_gone():
    listed = named(section("Module map"))
    assert sorted(set(listed)) == sorted(listed), "a module is listed twice"
    missing = sorted(set(modules()) - set(listed))
    gone = sorted(set(listed) - set(modules()))
    assert not missing, f"add to the module map: {missing}"
    assert not gone, f"the module map names modules that no longer exist: {gone}"


def test_a_module_over_the_size_line_says_why():
    excused = set(named(section("Longer than the size line")))
    bench = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "bench").glob("*.py"))
    long = {m for m in [*modules(), *bench]
            if len((ROOT / m).read_text().splitlines()) > SIZE_LINE}
    assert not long - excused, f"over {SIZE_LINE} lines, without a reason: {sorted(long - excused)}"
    assert not excused - long, f"excused but no longer long: {sorted(excused - long)}"


def test_the_peer_request_table_of_the_docs_is_the_one_in_code():
    """docs/peer-protocol.md's table of requests: each row's op, serving stage and answer
    kind are ``peerprotocol.REQUESTS``'s, and no op is in one but not the other."""
    from seda_dynamo.peerprotocol import ANSWERS, REQUESTS

    text = (ROOT / "docs" / "peer-protocol.md").read_text()
    rows = re.findall(r'^\| `\["(\w+)"[^|]*\| (\w+)[^|]*\| (?:`\["(\w+)"|none)', text, re.M)
    documented = {op: (stage, answer or None) for op, stage, answer in rows}
    assert documented == {op: (row.served_by, row.answer) for op, row in REQUESTS.items()}
    assert {row.answer for row in REQUESTS.values()} - {None} == set(ANSWERS)


def test_every_file_and_test_the_docs_name_exists():
    """README and docs/ point readers at modules and at the tests behind each promise:
    a move or a rename must take those pointers along."""
    docs = [ROOT / "README.md", ROOT / "bench" / "NOTES.md", *(ROOT / "docs").glob("*.md")]
    pattern = r"\b((?:seda_dynamo|stages|tests|bench)/[a-z_/]*\.py)(?:::(\w+))?"
    missing = []
    for doc in docs:
        for path, test in re.findall(pattern, doc.read_text()):
            target = ROOT / path
            if not target.exists() or test and f"def {test}(" not in target.read_text():
                missing.append(f"{doc.name}: {path}{'::' + test if test else ''}")
    assert not missing, missing


def test_every_test_file_has_a_name_of_its_own():
    """Test folders have no ``__init__.py`` (pytest imports each file by its base name):
    two files of one name in two folders collide, and the second fails to import."""
    names = [p.name for p in (ROOT / "tests").rglob("*.py") if p.name != "conftest.py"]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
