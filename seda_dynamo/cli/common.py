"""What several ``seda-dynamo`` commands share: the client flags, and how values print.

The client commands, ``admin`` and ``top`` reach a node through the same four flags
(``--server``, ``--timeout`` and the CURVE key files, docs/configuration.md "Security").
Values are opaque bytes to the store (Dynamo paper section 4.1): they print as text when
they are UTF-8 and as hex otherwise; a context (section 4.4) travels the shell as hex.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TypeAlias

from seda_dynamo.client import DEFAULT_SERVER, Client
from seda_dynamo.security import KEY_ENV, SERVER_KEY_ENV

#: What ``add_subparsers`` returns: each command module's ``add_parser`` takes it.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=DEFAULT_SERVER, help="HOST:PORT of any node")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds")
    p.add_argument("--curve-key", metavar="FILE",
                   help=f"CURVE: your secret key file (default: ${KEY_ENV})")
    p.add_argument("--curve-server-key", metavar="FILE",
                   help=f"CURVE: the cluster's public server key file (default: "
                        f"${SERVER_KEY_ENV})")


def client_keys(args: argparse.Namespace) -> dict[str, Any]:
    """``Client`` keyword arguments for the CURVE flags (or their environment variables):
    both or neither."""
    from seda_dynamo.security import ClientKeys

    keys = ClientKeys.find(args.curve_key, args.curve_server_key)  # KeyFileError: exit 2
    return {"keys": keys} if keys else {}


def connect(args: argparse.Namespace) -> Client:
    """A client of ``--server`` as the client flags say."""
    return Client(args.server, timeout=args.timeout, **client_keys(args))


def show(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + value.hex()


def context(text: str | None) -> bytes | None:
    """A ``--context`` flag (hex, as ``get`` prints it) as bytes; none when not given."""
    return bytes.fromhex(text) if text else None


def print_json(reply: Any) -> None:
    """A reply as indented JSON, bytes in it shown as ``show`` does."""
    print(json.dumps(reply, indent=2, default=show))
