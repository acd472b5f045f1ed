"""What the ``seda-dynamo`` command loads: a client command loads none of the server.

Each command module imports what only its action needs (the supervisor, the load
generator, the admin views) inside the action (seda_dynamo/cli/__init__.py), so
``import seda_dynamo.cli`` and ``seda-dynamo get`` stay light: neither the process
inspection library, nor the disk engine, nor any stage, nor the node's own shells.
Checked in a fresh interpreter, as tests/cores/test_imports.py checks the cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: What a client command never loads: top-level packages, and modules of ours.
NEVER_TOP = ("psutil", "berkeleydb", "stages")
NEVER_OURS = ("seda_dynamo.supervisor", "seda_dynamo.runtime", "seda_dynamo.engines",
              "seda_dynamo.loadgen", "seda_dynamo.launcher", "seda_dynamo.localcluster",
              "seda_dynamo.admin")

PROBE = """
import json, sys
import seda_dynamo.cli
code = None
if len(sys.argv) > 1:
    code = seda_dynamo.cli.main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def loaded(*argv: str) -> tuple[int | None, list[str]]:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    reply = json.loads(done.stdout.splitlines()[-1])
    return reply["code"], reply["modules"]


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in NEVER_TOP
            or any(m == ours or m.startswith(ours + ".") for ours in NEVER_OURS)]


def test_importing_the_cli_loads_no_server_module():
    code, modules = loaded()
    assert code is None
    assert "seda_dynamo.cli.bench" in modules  # every command module was imported
    assert heavy(modules) == []


@pytest.mark.parametrize("argv,exit_code", [
    (("get", "--server", "127.0.0.1:1", "--timeout", "0.2", "k"), 3),
    (("config", "check", str(ROOT / "conf" / "default.toml")), 0),
])
def test_a_client_command_run_loads_no_server_module(argv, exit_code):
    """``get`` against an address where nothing listens (it fails ``no_reply``, exit 3)
    and ``config check`` run their whole action and still load none of the node."""
    code, modules = loaded(*argv)
    assert code == exit_code
    assert heavy(modules) == []


def test_the_check_sees_a_command_that_loads_the_admin_views():
    """The probe itself: ``admin`` loads ``seda_dynamo.admin`` in its action, and it
    is reported."""
    code, modules = loaded("admin", "status", "--server", "127.0.0.1:1", "--timeout", "0.2")
    assert code == 3
    assert "seda_dynamo.admin" in heavy(modules)
