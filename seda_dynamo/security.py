"""ZeroMQ CURVE on the client and peer sockets: keys, and who may connect.

The Dynamo paper (section 2) assumes a trusted environment; a store run outside one
must keep strangers out. CURVE (RFC 26, CurveZMQ) encrypts a connection and
authenticates both ends; a ZAP handler (RFC 27, ``zmq.auth``) decides which client keys
a server socket lets in.

The shape: the members of a cluster share one **server key**. Every server socket (a
node's client port and peer port) presents it, so a client or a node connecting needs
only its public half, whatever node it reaches. Each node and each client also has its
**own key**, which it presents when it connects; a node lets in only the public keys in
its allow-lists (``curve_client_keys`` for the client port, ``curve_peer_keys`` for the
peer port). A node whose own key is not on the peer allow-list gets no frame through:
it cannot join, gossip or write replicas. Removing a key file and restarting the nodes
revokes it. Key files are the ``zmq.auth`` certificate format
(``NAME.key`` public, ``NAME.key_secret`` both halves).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

CLIENT_DOMAIN = "client"
PEER_DOMAIN = "peer"
KEY_ENV = "SEDA_CURVE_KEY"  # a client's own .key_secret file
SERVER_KEY_ENV = "SEDA_CURVE_SERVER_KEY"  # the cluster's public server .key file


class KeyFileError(ValueError):
    """A key file or key directory that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    public: bytes  # Z85, 40 bytes
    secret: bytes | None = None


def generate(directory: str | Path, name: str) -> tuple[Path, Path]:
    """A new key pair: ``DIR/NAME.key`` (public, to hand out) and ``DIR/NAME.key_secret``
    (readable by its owner only). Refuses to overwrite an existing pair."""
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise KeyFileError(f"key name {name!r}: a file name without slashes or spaces")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if public.exists() or secret.exists():
        raise KeyFileError(f"{public} or {secret} exists already; not overwriting a key")
    made_public, made_secret = zmq.auth.create_certificates(str(directory), name)
    os.chmod(made_secret, 0o600)
    return Path(made_public), Path(made_secret)


def load(path: str | Path, need_secret: bool, what: str) -> KeyPair:
    """The key pair in a certificate file; ``what`` names the setting in errors."""
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{what} = {str(path)!r}: not a readable CURVE key file ({exc})") \
            from None
    if need_secret and not secret:
        raise KeyFileError(f"{what} = {str(path)!r}: holds only a public key; name the "
                        "'.key_secret' file")
    return KeyPair(public, secret)


def allowed(directory: str | Path, what: str) -> list[bytes]:
    """The public keys of the certificate files in ``directory``."""
    if not Path(directory).is_dir():
        raise KeyFileError(f"{what} = {str(directory)!r}: not a directory of public key files")
    try:
        return sorted(zmq.auth.load_certificates(str(directory)))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{what} = {str(directory)!r}: {exc}") from None


def serve(sock: zmq.Socket, server: KeyPair, domain: str) -> None:
    """Make ``sock`` a CURVE server whose clients the ZAP handler checks in ``domain``
    (before it binds)."""
    sock.curve_secretkey = server.secret
    sock.curve_publickey = server.public
    sock.curve_server = True
    sock.zap_domain = domain.encode()


def connect_as(sock: zmq.Socket, own: KeyPair, server_public: bytes) -> None:
    """Make ``sock`` a CURVE client presenting ``own`` to a server with ``server_public``
    (before it connects)."""
    sock.curve_secretkey = own.secret
    sock.curve_publickey = own.public
    sock.curve_serverkey = server_public


def start_authenticator(ctx: zmq.Context, domains: dict[str, str]) -> Any:
    """A ZAP handler thread for ``ctx``: in each domain, only the keys in its directory.
    Must run before any CURVE server socket of ``ctx`` binds, or libzmq lets all in."""
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(ctx, log=None)
    auth.start()
    for domain, directory in domains.items():
        auth.configure_curve(domain=domain, location=directory)
    return auth


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """What a client needs to reach a node with CURVE on: its own pair and the server's
    public key."""

    own: KeyPair
    server_public: bytes

    @classmethod
    def from_files(cls, own_secret_file: str, server_public_file: str) -> ClientKeys:
        return cls(load(own_secret_file, True, "client key"),
                   load(server_public_file, False, "server key").public)

    @classmethod
    def find(cls, own_secret_file: str | None = None,
             server_public_file: str | None = None) -> ClientKeys | None:
        """The keys named, else by ``$SEDA_CURVE_KEY`` and ``$SEDA_CURVE_SERVER_KEY``;
        None when neither is; ``KeyFileError`` when only one is."""
        own = own_secret_file or os.environ.get(KEY_ENV)
        server = server_public_file or os.environ.get(SERVER_KEY_ENV)
        if not own and not server:
            return None
        if not own or not server:
            raise KeyFileError(f"CURVE needs both a client key (--curve-key or ${KEY_ENV}: "
                               "your .key_secret file) and the server key "
                               f"(--curve-server-key or ${SERVER_KEY_ENV}: the cluster's "
                               "public .key file)")
        return cls.from_files(own, server)

    def apply(self, sock: zmq.Socket) -> None:
        connect_as(sock, self.own, self.server_public)


def curve_from_env(sock: zmq.Socket) -> None:
    """Set ``sock`` up as a CURVE client when ``$SEDA_CURVE_KEY`` and
    ``$SEDA_CURVE_SERVER_KEY`` name keys (the load generator's sockets: its worker
    processes inherit the environment)."""
    keys = ClientKeys.find()
    if keys is not None:
        keys.apply(sock)
