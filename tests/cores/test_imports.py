"""Which way imports point (docs/architecture.md, "Which way imports point").

Two checks. The source of every module is parsed and each import it makes is held to
the rules below, so a forbidden direction fails here with the file and line. And each
pure core is imported alone in a fresh interpreter, so an import that only becomes
forbidden through another module (a package ``__init__`` pulling in the client, say)
fails too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "seda_dynamo"

#: The modules of ``seda_dynamo`` that may touch sockets, processes or the disk engine
#: (the thin shells); every other module of the package is a pure core.
SHELLS = frozenset({
    "seda_dynamo.runtime", "seda_dynamo.sockets", "seda_dynamo.outbox",
    "seda_dynamo.accounting", "seda_dynamo.hygiene", "seda_dynamo.contract",
    "seda_dynamo.supervisor", "seda_dynamo.security",
    "seda_dynamo.client", "seda_dynamo.cli", "seda_dynamo.admin",
    "seda_dynamo.launcher", "seda_dynamo.ports", "seda_dynamo.localcluster",
    "seda_dynamo.engines.bdb",
})
#: Packages of shells: every module in them is one. The load generator (the ``bench``
#: extra) is tooling: its package imports its drivers, so none of it loads alone IO-free.
#: The command (``cli/``) is one module per subcommand. The simulator (``sim/``) loads
#: stage code (through the stage table) and owns its nodes' data directories.
SHELL_PACKAGES = ("seda_dynamo.loadgen", "seda_dynamo.cli", "seda_dynamo.sim")
#: What a core never loads: the network library, the disk engine, event loops, process
#: inspection, and stage code.
IO_LIBRARIES = ("zmq", "berkeleydb", "asyncio", "psutil")
#: Imports of a shell by a core that are made inside a function, only when asked for,
#: each for a reason; importing the core alone still loads no IO library (checked below).
LAZY = {
    ("seda_dynamo.engines", "seda_dynamo.engines.bdb"):
        "the engine factory opens Berkeley DB only when a node is configured with it",
    ("seda_dynamo.config", "seda_dynamo.security"):
        "CURVE key files are checked at start-up only when CURVE is configured",
}
#: The client speaks the wire protocol: of the package it uses only these.
CLIENT_MAY_USE = frozenset({"seda_dynamo.protocol", "seda_dynamo.causality",
                            "seda_dynamo.ring", "seda_dynamo.routing",
                            "seda_dynamo.security"})


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in ``path``, relative ones resolved, at any depth
    (an import inside a function still points somewhere)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            # ``from seda_dynamo import client``: the names may be modules themselves.
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names
                      if (ROOT / Path(*base.split("."), alias.name)).with_suffix(".py")
                      .exists()]
    return found


def under(module: str, *roots: str) -> bool:
    return any(module == root or module.startswith(root + ".") for root in roots)


def is_shell(module: str) -> bool:
    return module in SHELLS or under(module, *SHELL_PACKAGES)


SOURCES = sorted([*PACKAGE.rglob("*.py"), *(ROOT / "stages").glob("*.py")])
CORES = sorted(module_name(p) for p in PACKAGE.rglob("*.py")
               if not is_shell(module_name(p)))


def violations(path: Path) -> list[str]:
    name = module_name(path)
    found = []
    for line, target in imports(path):
        where = f"{path.relative_to(ROOT)}:{line} imports {target}"
        if under(name, "stages") and under(target, "stages") and target != "stages":
            found.append(f"{where}: stages never import each other (they meet through "
                         "queues)")
        if under(name, "seda_dynamo") and under(target, "stages"):
            found.append(f"{where}: the package names stage modules in its table, never "
                         "imports them")
        if under(target, "berkeleydb") and name != "seda_dynamo.engines.bdb":
            found.append(f"{where}: only the Berkeley DB engine imports berkeleydb")
        if name in CORES and under(target, *IO_LIBRARIES):
            found.append(f"{where}: a pure core does no IO")
        if name in CORES and is_shell(target) and (name, target) not in LAZY:
            found.append(f"{where}: a pure core never imports a shell")
        if name == "seda_dynamo.client" and under(target, "seda_dynamo") \
                and target != "seda_dynamo" and target not in CLIENT_MAY_USE:
            found.append(f"{where}: the client uses the wire protocol only")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_the_allowed_way(path):
    assert violations(path) == []


@pytest.mark.parametrize("core", CORES)
def test_a_core_imported_alone_loads_no_io_library_and_no_stage(core):
    probe = ("import sys, importlib; importlib.import_module(sys.argv[1]); "
             f"print(sorted(m for m in sys.modules if m.split('.')[0] in {IO_LIBRARIES!r} "
             "or m.split('.')[0] == 'stages'))")
    done = subprocess.run([sys.executable, "-c", probe, core], cwd=ROOT, text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", f"importing {core} loads {done.stdout.strip()}"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle of ``graph`` (module -> modules it imports), each once."""
    found, state, path = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_package_has_no_import_cycle():
    """Two modules that import each other (even lazily, inside a function) are one
    module in two files: a cycle means a duty sits on the wrong side. (A package that
    loads its own submodules, as the engine factory does, is no cycle.)"""
    graph = {module_name(p): {t for _, t in imports(p) if t.startswith("seda_dynamo.")
                              and not under(t, module_name(p))}
             for p in PACKAGE.rglob("*.py")}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_rules_catch_each_forbidden_direction(tmp_path, monkeypatch):
    """The checker itself: one file per rule, each must be reported."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "stages").mkdir()
    (tmp_path / "seda_dynamo" / "engines").mkdir(parents=True)
    cases = {
        "stages/a.py": "from stages import b\n",
        "seda_dynamo/ring.py": "import zmq\n",
        "seda_dynamo/merkle.py": "from seda_dynamo.runtime import endpoint\n",
        "seda_dynamo/config.py": "def f():\n    from stages.network import Handler\n",
        "seda_dynamo/engines/memory.py": "import berkeleydb\n",
        "seda_dynamo/client.py": "from seda_dynamo.membership import View\n",
    }
    for rel, text in cases.items():
        (tmp_path / rel).write_text(text)
    for rel in ("seda_dynamo/runtime.py", "seda_dynamo/membership.py", "stages/b.py"):
        (tmp_path / rel).touch()
    monkeypatch.setattr(sys.modules[__name__], "CORES",
                        ["seda_dynamo.ring", "seda_dynamo.merkle", "seda_dynamo.config",
                         "seda_dynamo.engines.memory", "seda_dynamo.membership"])
    for rel in cases:
        assert violations(tmp_path / rel), rel
