"""The one address check (``seda_dynamo.address``): what a node accepts as ``HOST:PORT``.

Addresses enter a node from its config, a client's ``admin join``, a peer's frame and a
gossiped view; every one of them goes through ``address.parse``.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seda_dynamo import address
from seda_dynamo.address import AddressError

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
label = st.from_regex(r"\A[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\Z")
top = st.text(LETTERS, min_size=1, max_size=12)
dns_name = st.builds(lambda labels, tld: ".".join([*labels, tld]),
                     st.lists(label, max_size=4), top).filter(lambda n: len(n) <= 253)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a.compressed}]")
port = st.integers(1, 65535)


@settings(max_examples=300, deadline=None)
@given(st.one_of(dns_name, ipv4, ipv6), port)
def test_every_well_formed_address_parses_to_itself(host, number):
    text = f"{host}:{number}"
    parsed = address.parse(text)
    assert parsed.port == number
    assert str(parsed) == text
    assert address.check(text, "peer") == text


BAD = [
    "x:y",  # the one that made a node deaf
    "", ":", "host", "host:", ":7100", "host:0", "host:65536", "host:99999999",
    "host:-1", "host:+7", "host:07100", "host:7 100", "host: 7100", " host:7100",
    "host:7100 ", "host:٧١٠٠",  # digits, but not ASCII ones
    "ho st:7100", "ho_st:7100", "-host:7100", "host-:7100", "a..b:7100", ".a:7100",
    "a.:7100", "*:7100", "tcp://host:7100", "host:7100/x", "a" * 64 + ":7100",
    ".".join(["a" * 63] * 4) + ":7100",  # 255 characters: longer than a DNS name may be
    "1.2.3.256:7100", "1.2.3:7100", "01.2.3.4:7100", "999.1.1.1:7100",
    "::1:7100", "[::1]", "[::1]7100", "[::1:7100", "[1.2.3.4]:7100", "[::g]:7100",
    "[fe80::1%eth0]:7100", "héllo:7100", "host\x00:7100", "a:b:c",
]


@pytest.mark.parametrize("text", BAD)
def test_malformed_addresses_are_refused_with_the_setting_named(text):
    with pytest.raises(AddressError, match="^seed = "):
        address.check(text, "seed")
    assert not address.valid(text)


@pytest.mark.parametrize("value", [None, 7100, b"127.0.0.1:7100", ["h", 1], 1.5])
def test_an_address_that_is_not_text_is_refused(value):
    with pytest.raises(AddressError):
        address.parse(value)
    assert not address.valid(value)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40))
def test_any_text_either_parses_to_a_connectable_address_or_is_refused(text):
    """The class: whatever arrives, parse never raises anything but AddressError, and
    what it accepts has a host libzmq takes and a port in range."""
    try:
        parsed = address.parse(text)
    except AddressError:
        return
    assert 1 <= parsed.port <= 65535
    assert str(parsed) == text
    host = parsed.host
    assert host and host.isascii() and " " not in host and "%" not in host
    assert address.endpoint(text) == f"tcp://{text}"


def test_loopback_is_told_from_the_connection_s_peer_address():
    for host in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        assert address.is_loopback(host), host
    for host in ("10.0.0.1", "192.168.1.1", "::ffff:10.0.0.1", "2001:db8::1", "", None,
                 "localhost", "garbage"):
        assert not address.is_loopback(host), host
    assert ipaddress.ip_address("::1").is_loopback


def test_an_address_found_valid_is_not_parsed_again(monkeypatch):
    """Gossip checks every member's two addresses at every merge (membership.View
    .merge_state): at 500 nodes, 2,000 IP parses a merge, 10% of a core (issue 13,
    seda_dynamo/sim/scale.py). A valid address is remembered; an invalid one never is."""
    parsed = []
    real = address.ipaddress.IPv4Address
    monkeypatch.setattr(address.ipaddress, "IPv4Address",
                        lambda text: parsed.append(text) or real(text))
    first = address.parse("127.0.0.9:7109")
    assert address.parse("127.0.0.9:7109") == first
    assert parsed == ["127.0.0.9"]
    for _ in range(2):
        with pytest.raises(address.AddressError):
            address.parse("127.0.0.999:7109")
    assert parsed[1:] == ["127.0.0.999", "127.0.0.999"]
