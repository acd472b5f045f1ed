"""When a tombstone may be forgotten: the reaping rule, as a pure function.

Dynamo paper section 4.4 keeps deletes as versions; kept forever, tombstones grow the
store without bound. A tombstone may be reaped only when no node could bring a covered
value back: every member of the cluster, fallbacks included, was asked what it holds
for the key, every answer is either nothing or exactly the same tombstone, and no node
holds a hint for the key (a hint could still carry an older, covered value). Then each
holder deletes the key *if it still holds exactly that tombstone*, so a write that
arrives meanwhile is never lost, and a stale tombstone never hides a later write.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seda_dynamo import causality

#: Rechecks after a failed check, with the delay doubling each time.
MAX_ATTEMPTS = 8
CHECK_DEADLINE = 5.0


@dataclass(slots=True)
class Check:
    key: bytes
    members: tuple[str, ...]
    started: float
    answers: dict[str, tuple[bytes | None, bool]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.answers) == len(self.members)


def verdict(answers: dict[str, tuple[bytes | None, bool]]) -> bytes | None:
    """The tombstone every holder may delete, or None if the key must be kept for now."""
    held = {raw for raw, _ in answers.values() if raw is not None}
    if any(hinted for _, hinted in answers.values()) or len(held) != 1:
        return None
    (tombstone,) = held
    return tombstone if only_tombstones(tombstone) else None


def only_tombstones(raw: bytes) -> bool:
    """Whether encoded versions hold at least one version and every one is a tombstone
    (a holder deletes a key only then, whatever bytes it is asked to compare with)."""
    try:
        values = causality.values(causality.decode(raw))
    except ValueError:
        return False
    return bool(values) and all(v is None for v in values)


def worth_retrying(answers: dict[str, tuple[bytes | None, bool]]) -> bool:
    """After a negative verdict: do tombstones remain that a later check may reap?
    Not when nothing is held any more, nor when the key holds a live value again."""
    held = [raw for raw, _ in answers.values() if raw is not None]
    for raw in held:
        try:
            if any(v is not None for v in causality.values(causality.decode(raw))):
                return False
        except ValueError:
            return False
    return bool(held)
