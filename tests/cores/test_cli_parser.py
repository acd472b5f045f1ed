"""The ``seda-dynamo`` parser: one module per command, each parsing its own flags.

Built from ``seda_dynamo.cli.COMMANDS`` (seda_dynamo/cli/__init__.py); each module adds
its subcommand, its flags with their help, and sets its action. These tests parse
without running anything: each command's flags and defaults, help text on every flag,
the refusals argparse makes (exit 2), and the checks an action makes before it sends
a request.
"""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seda_dynamo import cli
from seda_dynamo.cli import bench
from seda_dynamo.client import DEFAULT_SERVER

NAMES = ["serve", "config", "put", "get", "delete", "ping", "ring", "stats", "admin", "keys",
         "top", "cluster", "bench"]
CLIENT_DEFAULTS = {"server": DEFAULT_SERVER, "timeout": 5.0, "curve_key": None,
                   "curve_server_key": None}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def parse(*argv: str) -> dict[str, object]:
    return vars(cli.parser().parse_args(argv))


def test_the_commands_are_listed_in_order_each_from_its_own_module():
    assert list(subcommands()) == NAMES
    assert [m.__name__.rpartition(".")[2] for m in cli.COMMANDS] == NAMES
    for module in cli.COMMANDS:
        name = module.__name__.rpartition(".")[2]
        assert subcommands()[name].get_default("func") is module.run, name


@pytest.mark.parametrize("name", NAMES)
def test_every_flag_and_argument_has_help_text(name):
    p = subcommands()[name]
    missing = [a.dest for a in p._actions if not a.help or a.help == argparse.SUPPRESS]
    assert missing == []
    text = p.format_help()  # a stray % in a help text would raise here
    for action in p._actions:
        for option in action.option_strings:
            assert option in text


def test_every_command_has_a_one_line_help_in_the_overview():
    sub = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert [c.dest for c in sub._choices_actions] == NAMES
    assert all(c.help for c in sub._choices_actions)


@pytest.mark.parametrize("argv,expected", [
    (["serve"], {"config": None, "node_id": None, "seeds": None, "engine": None}),
    (["serve", "--config", "c.toml", "--node-id", "n2", "--n", "5", "--seeds", "a:1",
      "--seeds", "b:2", "--engine", "memory", "--anti-entropy-every", "0.5"],
     {"config": "c.toml", "node_id": "n2", "n": 5, "seeds": ["a:1", "b:2"],
      "engine": "memory", "anti_entropy_every": 0.5}),
    (["config", "check", "c.toml"], {"action": "check", "file": "c.toml"}),
    (["put", "k", "v"], {**CLIENT_DEFAULTS, "key": "k", "value": "v", "context": None,
                         "w": None}),
    (["put", "--server", "h:1", "--timeout", "1.5", "--context", "ab", "--w", "2", "k", "v",
      "--curve-key", "me.key_secret", "--curve-server-key", "s.key"],
     {"server": "h:1", "timeout": 1.5, "context": "ab", "w": 2, "key": "k", "value": "v",
      "curve_key": "me.key_secret", "curve_server_key": "s.key"}),
    (["get", "k"], {**CLIENT_DEFAULTS, "key": "k", "r": None}),
    (["get", "k", "--r", "1"], {"key": "k", "r": 1}),
    (["delete", "k", "--context", "ab", "--w", "3"], {"key": "k", "context": "ab", "w": 3}),
    (["ping"], {**CLIENT_DEFAULTS, "command": "ping"}),
    (["ring", "--server", "h:2"], {"server": "h:2", "command": "ring"}),
    (["stats"], {**CLIENT_DEFAULTS, "command": "stats"}),
    (["admin", "status"], {**CLIENT_DEFAULTS, "command": "status", "seed": None,
                           "wait": False}),
    (["admin", "join", "h:7100"], {"command": "join", "seed": "h:7100"}),
    (["admin", "leave", "--wait"], {"command": "leave", "wait": True}),
    (["keys", "generate", "a", "b"], {"action": "generate", "names": ["a", "b"],
                                      "dir": "keys"}),
    (["keys", "generate", "a", "--dir", "d"], {"names": ["a"], "dir": "d"}),
    (["top"], {**CLIENT_DEFAULTS, "every": 2.0, "frames": None, "cluster": False}),
    (["top", "--every", "0.5", "--frames", "3", "--cluster"],
     {"every": 0.5, "frames": 3, "cluster": True}),
    (["cluster", "start"], {"action": "start", "nodes": 3, "data_dir": "data/cluster",
                            "base_port": 7000, "engine": "bdb"}),
    (["cluster", "stop", "--nodes", "5", "--data-dir", "d", "--base-port", "9000",
      "--engine", "memory"],
     {"action": "stop", "nodes": 5, "data_dir": "d", "base_port": 9000, "engine": "memory"}),
    (["bench"], {"server": DEFAULT_SERVER, "target": None, "cluster": False, "nodes": 3,
                 "routing": None, "mix": None, "distribution": "uniform", "prefill": False,
                 "ops": None, "concurrency": 64, "value_size": 100, "keys": None,
                 "processes": 1, "rate": None, "max_seconds": None, "progress": None,
                 "json": None}),
    (["bench", "--target", "redis://127.0.0.1:6379", "--mix", "95/5", "--distribution",
      "zipfian", "--prefill", "--ops", "10", "--concurrency", "8", "--value-size", "10",
      "--keys", "5", "--processes", "2", "--rate", "100", "--seconds", "3",
      "--no-progress", "--json", "--routing", "owner", "--cluster", "--nodes", "4"],
     {"target": "redis://127.0.0.1:6379", "mix": "95/5", "distribution": "zipfian",
      "prefill": True, "ops": 10, "concurrency": 8, "value_size": 10, "keys": 5,
      "processes": 2, "rate": 100.0, "max_seconds": 3.0, "progress": False, "json": "-",
      "routing": "owner", "cluster": True, "nodes": 4}),
    (["bench", "--max-seconds", "7", "--progress", "--json", "out.json"],
     {"max_seconds": 7.0, "progress": True, "json": "out.json"}),
])
def test_each_command_parses_its_flags(argv, expected):
    args = parse(*argv)
    assert {k: args[k] for k in expected} == expected


def test_every_serve_flag_defaults_to_none_so_the_file_and_the_defaults_decide():
    args = parse("serve")
    assert {k: v for k, v in args.items() if k not in ("command", "func")} == \
        dict.fromkeys(args.keys() - {"command", "func"})


@pytest.mark.parametrize("argv", [
    [], ["nope"], ["config", "lint", "c.toml"], ["config", "check"], ["put", "k"],
    ["get", "k", "--r", "two"], ["admin", "drain"], ["keys", "generate"],
    ["cluster", "start", "--engine", "rocks"], ["bench", "--routing", "random"],
    ["bench", "--distribution", "gauss"], ["serve", "--engine", "rocks"],
    ["serve", "--n", "three"], ["top", "--every", "x"],
])
def test_what_argparse_refuses_exits_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parser().parse_args(argv)
    assert exc.value.code == 2
    assert "usage: seda-dynamo" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["admin", "join"], "admin join needs SEED"),
    (["top", "--every", "0"], "--every must be > 0"),
    (["top", "--frames", "0"], "--frames >= 1"),
    (["bench", "--distribution", "zipfian"], "--distribution applies to a --mix run"),
    (["bench", "--prefill"], "--prefill applies to a --mix run"),
    (["bench", "--cluster", "--target", "seda://h:1"], "leave out --target"),
    (["bench", "--mix", "90/20"], "add up to 100"),
    (["bench", "--cluster", "--nodes", "0"], "--nodes must be in 1..100"),
])
def test_a_value_an_action_refuses_before_sending_anything_exits_2(argv, needle, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("seda-dynamo: ") and needle in err


@given(st.integers(min_value=0, max_value=100))
def test_a_mix_is_the_share_of_gets(gets):
    assert bench.parse_mix(f"{gets}/{100 - gets}") == pytest.approx(gets / 100)


@given(st.floats(min_value=-1e6, max_value=1e6), st.floats(min_value=-1e6, max_value=1e6))
def test_a_mix_not_adding_up_to_100_or_negative_is_refused(gets, puts):
    if gets >= 0 and puts >= 0 and abs(gets + puts - 100.0) <= 1e-6:
        assert bench.parse_mix(f"{gets}/{puts}") == pytest.approx(gets / 100)
    else:
        with pytest.raises(ValueError, match="--mix percentages"):
            bench.parse_mix(f"{gets}/{puts}")


@pytest.mark.parametrize("text", ["95", "95/5/0", "a/b", "", "95:5"])
def test_a_mix_that_is_not_two_numbers_is_refused(text):
    with pytest.raises(ValueError, match="--mix wants GET/PUT"):
        bench.parse_mix(text)
