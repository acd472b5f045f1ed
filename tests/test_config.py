"""Configuration: defaults, TOML, overrides and the messages for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from seda_dynamo.config import ConfigError, NodeConfig, load

DEFAULT_TOML = Path(__file__).parent.parent / "conf" / "default.toml"


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
