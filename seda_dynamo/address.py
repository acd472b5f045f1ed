"""Node addresses: the one check of ``HOST:PORT`` wherever an address enters a node.

Dynamo paper section 4.8: members learn each other's addresses from seeds and by gossip,
so an address is data that arrives from the network, as untrusted as a key or a value.
It enters from the config (``client``, ``peer``, ``join``, ``seeds``, ``metrics``), from
a client's ``admin join``, from a peer's frame (the address a reply goes to) and from a
gossiped view; each of those calls ``parse`` (or ``check``) before the address is stored
or connected to, so a bad one is refused where it enters and never reaches a socket.

The form: ``HOST:PORT`` where HOST is an IPv4 literal (``10.0.0.7``), an IPv6 literal in
brackets (``[::1]``, no zone id) or a DNS name (letters, digits and inner hyphens in dot
separated labels of 1..63 characters, 253 at most, not all digits), and PORT a decimal
1..65535 without sign or leading zero: one spelling per address, since members compare
addresses as text. Pure functions, no IO (a DNS name is not resolved here).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

MAX_NAME = 253  # RFC 1035: the longest DNS name, in text form
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_IPV4ISH = re.compile(r"[0-9.]+\Z")
_PORT = re.compile(r"[1-9][0-9]{0,4}\Z")


class AddressError(ValueError):
    """An address that is not ``HOST:PORT``; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str  # an IPv4 literal, an IPv6 literal (without brackets) or a DNS name
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _host(host: str) -> str:
    """The reason ``host`` (an unbracketed host part) is refused, or '' if it is fine."""
    if not host:
        return "no host before the ':'"
    if ":" in host:
        return "an IPv6 address is written in brackets: [ADDR]:PORT"
    if _IPV4ISH.match(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host!r} is not an IPv4 address"
        return ""
    if len(host) > MAX_NAME:
        return f"a host name is at most {MAX_NAME} characters"
    labels = host.split(".")
    if not all(_LABEL.match(part) for part in labels):
        return (f"{host!r} is neither an IP address nor a DNS name (letters, digits and "
                "inner '-' in dot-separated labels of 1..63 characters)")
    if labels[-1].isdigit():
        return f"{host!r}: the last label of a DNS name is not all digits"
    return ""


#: Addresses already found valid, with their parse (bounded): gossip checks every
#: member's addresses at every merge, the same ones each time. Invalid ones are not kept.
_VALID: dict[str, Address] = {}
_VALID_MAX = 8192


def parse(text: object) -> Address:
    """``text`` as an ``Address``; ``AddressError`` saying why if it is not one."""
    if not isinstance(text, str):
        raise AddressError(f"expected HOST:PORT as text, not {type(text).__name__}")
    known = _VALID.get(text)
    if known is not None:
        return known
    if not text.isascii():
        raise AddressError("HOST:PORT has only ASCII characters")
    if text.startswith("["):
        inner, sep, port = text[1:].partition("]:")
        if not sep:
            raise AddressError("an IPv6 address in brackets is followed by ':PORT'")
        try:
            host = ipaddress.IPv6Address(inner)
        except ValueError:
            raise AddressError(f"{inner!r} is not an IPv6 address") from None
        if host.scope_id is not None:
            raise AddressError("an IPv6 zone id ('%') is not supported")
        canonical = host.compressed
        if canonical != inner:
            raise AddressError(f"write the IPv6 address as [{canonical}]")
    else:
        canonical, sep, port = text.rpartition(":")
        if not sep:
            raise AddressError("no ':PORT'")
        why = _host(canonical)
        if why:
            raise AddressError(why)
    if not _PORT.match(port) or int(port) > 65535:
        raise AddressError(f"port {port!r} is not a number in 1..65535 (no sign or leading "
                           "zero)")
    found = Address(canonical, int(port))
    if len(_VALID) < _VALID_MAX:
        _VALID[text] = found
    return found


def check(text: object, what: str) -> str:
    """``text`` unchanged if it is a valid address; else ``AddressError`` naming ``what``
    (the setting or field it came from)."""
    try:
        parse(text)
    except AddressError as exc:
        raise AddressError(f"{what} = {text!r}: expected HOST:PORT ({exc}), e.g. "
                           "127.0.0.1:7100") from None
    assert isinstance(text, str)
    return text


def valid(text: object) -> bool:
    try:
        parse(text)
    except AddressError:
        return False
    return True


def endpoint(text: str) -> str:
    """The ZeroMQ endpoint of a valid address (``check`` it first)."""
    return f"tcp://{text}"


def is_loopback(host: object) -> bool:
    """Whether a connection's peer IP (ZeroMQ's ``Peer-Address``: a bare IPv4 or IPv6
    literal) is this machine's loopback; anything else, or nothing, is not."""
    if not isinstance(host, str):
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
