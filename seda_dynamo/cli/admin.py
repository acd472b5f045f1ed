"""``seda-dynamo admin``: status, tpstats, ring, transfers, leave, join SEED.

The operator's view of a cluster and its explicit membership changes (Dynamo paper
section 4.8.1); what each subcommand shows and does is in ``seda_dynamo.admin``, loaded
only when this command runs.
"""

from __future__ import annotations

import argparse
import sys

from seda_dynamo.cli.common import Subparsers, add_client_flags, client_keys


def add_parser(sub: Subparsers) -> None:
    a = sub.add_parser("admin", help="status, tpstats, ring, transfers, leave, join SEED")
    a.add_argument("command",
                   choices=["status", "tpstats", "ring", "transfers", "leave", "join"],
                   help="what to show, or the membership change to make "
                        "(docs/operating.md)")
    a.add_argument("seed", nargs="?", help="join: a member's peer HOST:PORT")
    add_client_flags(a)
    a.add_argument("--wait", action="store_true", help="leave: return once it has left")
    a.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seda_dynamo import admin

    if args.command == "join" and not args.seed:
        print("seda-dynamo: admin join needs SEED, a member's peer HOST:PORT", file=sys.stderr)
        return 2
    print(admin.run(args.server, args.command, args.seed, args.wait, args.timeout,
                    client_keys(args)))
    return 0
