"""What the network stage's client and metrics ports rest on, without sockets: a client
message's envelope (``protocol.split_envelope``, ``protocol.with_id``) and the metrics
listener's connections (``metrics.Scrapes``): every request head is answered once
complete, a connection is never held past its answer, and half-sent requests are capped.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seda_dynamo import metrics
from seda_dynamo.protocol import split_envelope, with_id


@given(st.lists(st.binary(min_size=1, max_size=4), min_size=1, max_size=3),
       st.binary(max_size=8))
def test_the_envelope_is_every_frame_up_to_the_delimiter_and_the_body_the_one_after(ids, body):
    assert split_envelope([*ids, b"", body]) == ([*ids, b""], body)
    assert split_envelope([*ids, b"", body, b"more"]) == ([*ids, b""], None)
    assert split_envelope([*ids, b""]) == ([*ids, b""], None)


def test_a_message_without_a_delimiter_is_answered_at_its_first_frame():
    assert split_envelope([b"id", b"body"]) == ([b"id"], b"body")
    assert split_envelope([b"id"]) == ([b"id"], None)


def test_a_reply_carries_the_request_id_only_when_there_was_one():
    assert with_id({"ok": True}, 7) == {"ok": True, "id": 7}
    assert with_id({"ok": True}, None) == {"ok": True}


GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


@given(st.integers(1, len(GET) - 1))
def test_a_request_sent_in_two_pieces_is_answered_once_it_is_whole(cut):
    scrapes = metrics.Scrapes()
    assert scrapes.feed(b"c", b"", lambda: "page") is None  # the connect
    assert scrapes.feed(b"c", GET[:cut], lambda: "page") is None
    assert len(scrapes) == 1
    reply = scrapes.feed(b"c", GET[cut:], lambda: "page")
    assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b"page")
    assert len(scrapes) == 0


def test_half_sent_requests_are_capped_and_a_disconnect_forgets_one():
    scrapes = metrics.Scrapes()
    for i in range(metrics.MAX_CONNECTIONS):
        assert scrapes.feed(b"c%d" % i, b"GET /met", lambda: "") is None
    refused = scrapes.feed(b"late", b"GET /met", lambda: "")
    assert refused.startswith(b"HTTP/1.1 503") and len(scrapes) == metrics.MAX_CONNECTIONS
    scrapes.feed(b"c0", b"", lambda: "")
    assert len(scrapes) == metrics.MAX_CONNECTIONS - 1


def test_a_page_that_fails_raises_and_leaves_nothing_held():
    def broken() -> str:
        raise RuntimeError("boom")

    scrapes = metrics.Scrapes()
    with pytest.raises(RuntimeError):
        scrapes.feed(b"c", GET, broken)
    assert len(scrapes) == 0
