"""``seda-dynamo config check FILE``: validate a configuration file as ``serve`` would.

Says what is wrong, naming the key, or prints every resolved setting (docs/
configuration.md), the replication settings of Dynamo paper sections 4.3 and 4.5 (N, R,
W) among them, so a bad file is caught before a node is started with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from seda_dynamo.cli.common import Subparsers
from seda_dynamo.config import ConfigError, NodeConfig, load


def add_parser(sub: Subparsers) -> None:
    f = sub.add_parser("config", help="check a configuration file (docs/configuration.md)")
    f.add_argument("action", choices=["check"],
                   help="check: load FILE, then print its settings or what is wrong")
    f.add_argument("file", help="a TOML file such as conf/default.toml")
    f.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``config check FILE``: load and validate it as ``serve`` would; say what is wrong,
    naming the key, or print the resolved settings."""
    try:
        config = load(args.file)
    except ConfigError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2
    print(f"{args.file}: ok")
    for f in dataclasses.fields(NodeConfig):
        print(f"  {f.name} = {json.dumps(getattr(config, f.name))}")
    return 0
