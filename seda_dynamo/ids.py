"""Ids a stage hands out that never repeat across its restarts.

Dynamo paper section 4.5: a coordinator matches each replica's answer to the request it
asked for. Every stage numbers what it waits for (network request ids and peer call ids,
coordination's request ids, versioning's tags, gossip's refs); if a restarted stage numbered
from 0 again, a late answer meant for its previous process could be matched to a new
request (another key's versions handed to a client). So every counter starts from a base
drawn once per process: ``process_base`` (random high bits, the counter in the low ones),
and call ids sent to other nodes are drawn whole at random (``call_id``), so that a
sender cannot guess one it was not sent. Where the randomness comes from is passed in (a
deterministic simulator passes a seeded source). Pure functions, no IO.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

#: Bits of a process's own counter: 2**32 ids before it could reach another base.
COUNTER_BITS = 32
#: Random bits of a base: two processes share one with probability 2**-30.
BASE_BITS = 30
#: Call ids are drawn from 1..2**63-1 (0 means "no answer expected").
CALL_ID_BITS = 63

Entropy = Callable[[int], int]  # k -> a random integer of k bits (``secrets.randbits``)


def process_base(entropy: Entropy = secrets.randbits) -> int:
    """Where a process's id counters start: never 0, and different in each process with
    overwhelming probability; the ids fit in 62 bits (any msgpack integer)."""
    return (1 + entropy(BASE_BITS) % ((1 << BASE_BITS) - 1)) << COUNTER_BITS


def call_id(entropy: Entropy = secrets.randbits) -> int:
    """An id for a call to another node that its receiver cannot predict (never 0)."""
    return entropy(CALL_ID_BITS) or 1
