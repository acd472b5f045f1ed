"""``seda-dynamo keys generate NAME...``: make CURVE key pairs for nodes and clients.

The Dynamo paper assumes a trusted environment (section 2); outside one, the client and
peer sockets let in only known keys (``seda_dynamo.security``, docs/configuration.md
"Security"). This command writes the key files those allow-lists are made of.
"""

from __future__ import annotations

import argparse

from seda_dynamo.cli.common import Subparsers


def add_parser(sub: Subparsers) -> None:
    g = sub.add_parser("keys", help="generate CURVE key pairs (docs/configuration.md)")
    g.add_argument("action", choices=["generate"],
                   help="generate: write a new key pair for each NAME")
    g.add_argument("names", nargs="+", metavar="NAME",
                   help="one pair each: NAME.key (public) and NAME.key_secret")
    g.add_argument("--dir", default="keys", help="where to write them (default: keys)")
    g.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seda_dynamo.security import generate

    for name in args.names:
        public, secret = generate(args.dir, name)  # KeyFileError, a ValueError: exit 2
        print(f"{name}: public {public}  secret {secret}")
    return 0
