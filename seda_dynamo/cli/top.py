"""``seda-dynamo top``: the stages of a node (or of every member) live, until Ctrl-C.

Redraws the ``tpstats`` table every ``--every`` seconds as rates (SEDA's per-stage
queues and controllers; Dynamo paper section 6 on watching the request path). The
drawing is ``seda_dynamo.admin.top``, loaded only when this command runs.
"""

from __future__ import annotations

import argparse

from seda_dynamo.cli.common import Subparsers, add_client_flags, client_keys


def add_parser(sub: Subparsers) -> None:
    t = sub.add_parser("top", help="the stages of a node (or --cluster) live, redrawn "
                                   "every --every seconds until Ctrl-C")
    add_client_flags(t)
    t.add_argument("--every", type=float, default=2.0, help="seconds between frames")
    t.add_argument("--frames", type=int, help="stop after this many frames")
    t.add_argument("--cluster", action="store_true", help="every member of its cluster")
    t.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seda_dynamo import admin

    if args.every <= 0 or (args.frames is not None and args.frames < 1):
        raise ValueError("--every must be > 0 and --frames >= 1")
    return admin.top(args.server, args.every, args.frames, args.cluster, args.timeout,
                     client_keys(args))
