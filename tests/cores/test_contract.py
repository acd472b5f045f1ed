"""What the supervisor and the stage processes agree on (``seda_dynamo.contract``).

Both sides import the one module, so these check the module's own rules: the workers
file survives a round trip and a damaged one reads as "no extra workers" (a sender then
uses worker 0, which always runs); endpoints stay short enough for Unix socket paths;
a grow request is taken once; a stage's command line is read back as it was written.
"""

from __future__ import annotations

import os
import signal
import string
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seda_dynamo import contract
from seda_dynamo.stage import STAGE_NAMES, worker_name

names = st.text(string.ascii_lowercase + ".", min_size=1, max_size=20)


@given(st.dictionaries(names, st.integers(min_value=1, max_value=64), max_size=8))
def test_the_workers_file_reads_back_what_was_written(tmp_path_factory, workers):
    run_dir = str(tmp_path_factory.mktemp("run"))
    contract.write_workers(run_dir, workers)
    assert contract.read_workers(run_dir) == workers
    assert not os.path.exists(os.path.join(run_dir, contract.WORKERS_FILE + ".tmp"))


@pytest.mark.parametrize("damage", [b"", b"\xc1", b"\x93\x01\x02\x03", b"\x81\xa1a\xa1b",
                                    b"\x81\xa1a\xc0", b"\x81\xa1a\x92\x01\x02", b"not msgpack"])
def test_a_damaged_workers_file_reads_as_no_extra_workers(tmp_path, damage):
    (tmp_path / contract.WORKERS_FILE).write_bytes(damage)
    assert contract.read_workers(str(tmp_path)) == {}


def test_a_missing_workers_file_reads_as_no_extra_workers(tmp_path):
    assert contract.read_workers(str(tmp_path / "nowhere")) == {}


def test_endpoints_name_one_queue_per_worker_in_the_run_dir():
    assert contract.endpoint("/tmp/sd-a", "versioning.1") == "ipc:///tmp/sd-a/versioning.1.q"
    ends = {contract.endpoint("/tmp/sd-a", worker_name(s, i)) for s in STAGE_NAMES
            for i in range(3)}
    assert len(ends) == 3 * len(STAGE_NAMES)


def test_a_run_dir_too_deep_for_ipc_paths_is_refused():
    contract.check_endpoints("/tmp/sd-a", ["versioning.3"])
    deep = "/tmp/" + "d" * contract.MAX_IPC_PATH
    with pytest.raises(ValueError, match="too deep"):
        contract.check_endpoints(deep, ["versioning.3"])


def test_a_stage_command_line_is_read_back_as_written():
    cmd = contract.stage_command("versioning.2", "/tmp/sd-a/node.json")
    assert cmd[:3] == [sys.executable, "-m", contract.RUNTIME_MODULE]
    assert contract.parse_stage_command(cmd[3:]) == ("versioning.2", "/tmp/sd-a/node.json",
                                                     "/tmp/sd-a")
    assert contract.node_file("/tmp/sd-a") == "/tmp/sd-a/node.json"
    with pytest.raises(ValueError, match="usage"):
        contract.parse_stage_command(["versioning"])


def test_the_stage_environment_keeps_the_callers_settings():
    assert contract.stage_env({"PATH": "/bin"}) == {"MALLOC_ARENA_MAX": "2", "PATH": "/bin"}
    assert contract.stage_env({"MALLOC_ARENA_MAX": "4"})["MALLOC_ARENA_MAX"] == "4"


def test_a_grow_request_is_taken_once_and_signals_the_supervisor(tmp_path):
    got: list[int] = []
    old = signal.signal(contract.GROW_SIGNAL, lambda signum, _frame: got.append(signum))
    try:
        contract.ask_to_grow(str(tmp_path), "versioning", os.getpid())
    finally:
        signal.signal(contract.GROW_SIGNAL, old)
    assert got == [contract.GROW_SIGNAL]
    assert contract.take_grow_requests(str(tmp_path), STAGE_NAMES) == ["versioning"]
    assert contract.take_grow_requests(str(tmp_path), STAGE_NAMES) == []
