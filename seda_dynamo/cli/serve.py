"""``seda-dynamo serve``: run one node in the foreground until Ctrl-C.

Every ``NodeConfig`` key is a flag of the same name (``--node-id`` for ``node_id``), over
``--config FILE`` and the defaults (docs/configuration.md); the supervisor then starts
the node's stage processes. Dynamo paper section 5 (a node: request coordination,
membership and failure detection, a local persistence engine).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from seda_dynamo.cli.common import Subparsers
from seda_dynamo.config import CHOICES, FLAGS, ConfigError, NodeConfig, load


def add_parser(sub: Subparsers) -> None:
    s = sub.add_parser("serve", help="run a node in the foreground (Ctrl-C stops it)")
    s.add_argument("--config", help="a TOML file (see conf/default.toml)")
    defaults = NodeConfig()
    for f in dataclasses.fields(NodeConfig):  # every key a flag: --node-id for node_id
        metavar, help_text = FLAGS[f.name]
        default = getattr(defaults, f.name)
        kind = {"action": "append", "metavar": metavar} if isinstance(default, tuple) else \
            {"choices": CHOICES[f.name]} if f.name in CHOICES else \
            {"type": type(default), "metavar": metavar}
        s.add_argument("--" + f.name.replace("_", "-"), help=help_text, **kind)
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seda_dynamo.hygiene import setup_logging
    from seda_dynamo.supervisor import Supervisor

    try:
        # Every NodeConfig key has a flag of the same name (--node-id: node_id ...).
        config = load(args.config, **{f.name: getattr(args, f.name, None)
                                      for f in dataclasses.fields(NodeConfig)})
    except ConfigError as exc:
        return _refuse(f"bad configuration: {exc}")
    try:
        setup_logging(config, "supervisor")
    except OSError as exc:
        return _refuse(f"bad configuration: log_file = {config.log_file!r}: cannot write "
                       f"there ({exc.strerror})")
    try:
        supervisor = Supervisor(config)
    except OSError as exc:
        logging.getLogger("seda_dynamo.supervisor").error("cannot start node %s: %s",
                                                          config.node_id, exc)
        return 1
    return supervisor.run()


def _refuse(message: str) -> int:
    """A node that cannot start says why on stderr (its log is not set up yet); exit 2."""
    logging.basicConfig(format="seda-dynamo: %(message)s", stream=sys.stderr)
    logging.getLogger("seda_dynamo.supervisor").error("%s", message)
    return 2
