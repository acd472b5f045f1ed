"""The ``seda-dynamo`` command: run a node, and talk to one from the shell.

``serve`` starts a node (the supervisor and its stage processes); ``put``, ``get``,
``delete``, ``ping``, ``ring`` and ``stats`` speak the wire protocol (docs/protocol.md)
to ``--server``; ``admin`` and ``top`` are the operator's views; ``bench`` runs the load
generator of ``bench/``.

One module per command, each owning its ``add_parser(subparsers)`` (flags and help) and
the action it sets as ``func``; the flags and helpers several commands share are in
``common``. This module only builds the parser from ``COMMANDS``, in the order ``--help``
lists them, and turns what an action raises into an exit code: 3 for an error a node
answered (its code printed), 2 for a value refused before anything was sent, 130 for
Ctrl-C. A command module imports what only its action needs (the supervisor, the load
generator, the admin views) inside the action, so ``seda-dynamo get`` loads none of the
server's modules. Dynamo paper section 4.1 (the get/put interface a client sees).
"""

from __future__ import annotations

import argparse
import logging
import sys

from seda_dynamo.cli import (
    admin,
    bench,
    cluster,
    config,
    delete,
    get,
    keys,
    ping,
    put,
    ring,
    serve,
    stats,
    top,
)
from seda_dynamo.client import DynamoError

#: The commands, in the order ``seda-dynamo --help`` lists them.
COMMANDS = (serve, config, put, get, delete, ping, ring, stats, admin, keys, top, cluster,
            bench)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seda-dynamo", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except DynamoError as exc:
        print(f"seda-dynamo: {exc.code}: {exc}", file=sys.stderr)
        return 3
    except ValueError as exc:
        print(f"seda-dynamo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        logging.shutdown()
        return 130
