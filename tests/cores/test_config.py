"""Configuration: defaults, TOML, overrides and the messages for bad values."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from seda_dynamo.cli import parser
from seda_dynamo.config import NON_NEGATIVE, ConfigError, NodeConfig, load

DEFAULT_TOML = Path(__file__).parents[2] / "conf" / "default.toml"


def test_the_shipped_default_file_loads_and_matches_the_defaults():
    assert load(str(DEFAULT_TOML)) == NodeConfig()


def test_flags_override_the_file_and_data_dir_follows_node_id(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('node_id = "x"\nn = 5\nseeds = ["127.0.0.1:9"]\n')
    cfg = load(str(f), n=4, r=None)
    assert (cfg.node_id, cfg.n, cfg.data_dir, cfg.seeds) == ("x", 4, "data/x", ("127.0.0.1:9",))
    assert NodeConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("overrides,needle", [
    ({"client": "nowhere"}, "client"),
    ({"r": 4}, "r = 4"),
    ({"partitions": 100}, "partitions"),
    ({"engine": "rocks"}, "engine"),
    ({"durability": "maybe"}, "durability"),
    ({"node_id": "a b"}, "node_id"),
    ({"n": "3"}, "expected int"),
])
def test_bad_values_name_the_key(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load(None, **overrides)


def test_unknown_keys_and_bad_files(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("colour = 1\n")
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        load(str(f))
    f.write_text("n = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(str(f))
    with pytest.raises(ConfigError, match="cannot read"):
        load(str(tmp_path / "missing.toml"))


@pytest.mark.parametrize("key", sorted(NON_NEGATIVE))
def test_negative_values_are_refused_naming_the_key(key):
    with pytest.raises(ConfigError, match=f"^{key} = -1"):
        load(None, **{key: -1 if key in ("transfer_keys_per_sec", "max_in_flight") else -1.0})


def test_every_serve_flag_is_a_config_key_and_every_key_a_flag():
    """`serve` hands its flags to the config by name: a flag whose name is not a key
    would be silently ignored; conf/default.toml promises a flag for every key."""
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    dests = {a.dest for a in sub.choices["serve"]._actions} - {"help", "config"}
    keys = {f.name for f in dataclasses.fields(NodeConfig)}
    assert dests <= keys, dests - keys
    assert dests == keys, f"keys without a serve flag: {keys - dests}"


ROOT = Path(__file__).resolve().parents[2]


def test_every_key_is_documented_with_its_default_and_in_the_commented_file():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    toml_text = (ROOT / "conf" / "default.toml").read_text()
    defaults = NodeConfig()
    for f in dataclasses.fields(NodeConfig):
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{f.name}` |")),
                   None)
        assert row is not None, f"docs/configuration.md has no row for {f.name}"
        value = getattr(defaults, f.name)
        shown = "[]" if value == () else json.dumps(value) if f.name != "data_dir" \
            else '"data/NODE_ID"'
        assert f"`{shown}`" in row, f"{f.name}: default {shown} not in {row!r}"
        assert re.search(rf"^#? ?{f.name} = ", toml_text, re.M), \
            f"conf/default.toml does not mention {f.name}"


def test_config_check_validates_a_file_naming_the_bad_key(tmp_path):
    def check(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "seda_dynamo.cli", "config", "check",
                               str(path)], text=True, capture_output=True, timeout=30)

    good = check(ROOT / "conf" / "default.toml")
    assert good.returncode == 0 and "ok" in good.stdout and "  n = 3" in good.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('node_id = "a"\nmax_in_flight = -5\n')
    result = check(bad)
    assert result.returncode == 2
    assert "max_in_flight = -5: must be >= 0 (0: no limit)" in result.stderr
    bad.write_text('metrics = "nowhere"\n')
    assert "metrics = 'nowhere': expected HOST:PORT" in check(bad).stderr
    bad.write_text('engine = "leveldb"\n')
    assert "engine = 'leveldb': must be one of bdb, memory" in check(bad).stderr
    bad.write_text('log_levle = "debug"\n')
    assert "unknown key 'log_levle'" in check(bad).stderr


@pytest.mark.parametrize("key", ["client", "peer", "join", "seeds", "metrics"])
@pytest.mark.parametrize("bad", ["x:y", "ho st:7000", "*:7000", "h_st:7000", "::1:7000",
                                 "1.2.3.256:7000", "host:07000"])
def test_every_address_key_is_checked_by_the_address_core(key, bad):
    """The config is one of the places an address enters: the same check as a client's
    admin join seed, a peer's frame and a gossiped view (seda_dynamo.address)."""
    value = [bad] if key == "seeds" else bad
    with pytest.raises(ConfigError, match=f"^{key} = .*expected HOST:PORT"):
        load(None, **{key: value})


def test_address_keys_take_ip_literals_and_dns_names():
    cfg = load(None, client="[::1]:7000", peer="node-1.example.com:7100",
               join="10.0.0.7:7100", seeds=["[2001:db8::7]:7100", "db7:7100"])
    assert cfg.peer == "node-1.example.com:7100"
