"""The client's answer to a finished quorum, and the read repair it calls for.

Dynamo paper sections 4.5 (a get answers every causally unrelated version its replicas
returned, with one context covering them all; a put or delete answers the context of
the version this node stamped), 4.6 (an ``unavailable`` or ``timeout`` says how many
replicas could answer) and 5 (read repair: every replica that answered with less than
the merge is sent the merged version). Pure, no IO.
"""

from __future__ import annotations

from typing import Any

from seda_dynamo import causality, contexts
from seda_dynamo.requests import FAIL_EVENT, OK_EVENT, Outcome, QuorumRequest
from seda_dynamo.routing import Target

#: Versioning errors answered with their own code at once start with one of these and
#: ": " (seda_dynamo/reconciliation.py, stages/versioning.py): the request's own fault,
#: or a queue of this node full.
REFUSALS = ("bad_request", "too_large", "overloaded")


def error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": code, "message": message}


def refusal(failure: str) -> str | None:
    """The code of a write error answered as it is (None: the replica failed it)."""
    return next((code for code in REFUSALS if failure.startswith(f"{code}: ")), None)


def reply_error(reply: Any) -> str | None:
    """The error code of a reply another node sent (None: it succeeded)."""
    return None if not isinstance(reply, dict) or reply.get("ok") else str(reply.get("error"))


def replica_answer(payload: list[Any]) -> tuple[str, Any]:
    """A replica's ``updated`` or ``got`` answer as an event of its request's quorum and
    what it carries: the error if it failed, else the context or the versions read."""
    if payload[0] == "updated":
        return (FAIL_EVENT if payload[1] else OK_EVENT), payload[1]
    _, raw, failure = payload
    return (FAIL_EVENT if failure else OK_EVENT), raw


def ok_reply(op: str, replies: dict[str, Any], me: str,
             epoch: int) -> tuple[dict[str, Any], int | None]:
    """The reply to a quorum that succeeded, and for a get the number of values read.
    Raises ``ValueError`` for versions a replica returned that cannot be decoded."""
    if op != "get":  # the context of the version this node stamped
        return {"ok": True, "context": replies[me], "epoch": epoch}, None
    clocks = [causality.decode(raw) for raw in replies.values() if raw is not None]
    if not clocks:
        return {"ok": True, "values": [], "context": None, "epoch": epoch}, 0
    merged = causality.sync_all(clocks)
    values = [v for v in causality.values(merged) if v is not None]
    return {"ok": True, "values": values, "epoch": epoch,
            "context": contexts.encode_context(causality.join(merged))}, len(values)


def failed_reply(quorum: QuorumRequest, why: str = "") -> dict[str, Any]:
    """The reply to a quorum that timed out or became unavailable (``why``: what
    aborted it, if anything did)."""
    if quorum.outcome is Outcome.TIMEOUT:
        return error("timeout", f"{len(quorum.replies)} of {quorum.needed} replicas "
                                "answered before the deadline")
    return error("unavailable", why or f"{quorum.needed} replicas needed, "
                                       f"{len(quorum.asked) - len(quorum.failed)} could answer")


def repairs(replies: dict[str, bytes | None],
            targets: list[Target]) -> tuple[bytes | None, list[Target]]:
    """Read repair of a get's answers: the encoded merge of every version read and the
    targets that answered with less (none when the answers cannot be decoded, or hold
    nothing)."""
    try:
        clocks = {node: causality.decode(raw) if raw is not None else causality.EMPTY
                  for node, raw in replies.items()}
    except ValueError:
        return None, []
    merged = causality.sync_all(clocks.values())
    if causality.size(merged) == 0 and not causality.join(merged):
        return None, []
    behind = [target for target in targets if (clock := clocks.get(target.node)) is not None
              and not causality.equal(clock, merged)]
    return (causality.encode(merged) if behind else None), behind


def final_reply(op: str, quorum: QuorumRequest, why: str, me: str,
                epoch: int) -> tuple[dict[str, Any], int | None, str | None]:
    """The reply to a finished quorum, the number of values a get read (None: no get, or
    it failed), and the coordinator count a failure adds to (``timeouts`` or
    ``unavailable``; None: it succeeded, or a replica's versions were unreadable)."""
    if quorum.outcome is Outcome.OK:
        try:
            reply, read = ok_reply(op, quorum.replies, me, epoch)
        except ValueError as exc:
            return error("internal", f"a replica returned unreadable versions: {exc}"), \
                None, None
        return reply, read, None
    counted = "timeouts" if quorum.outcome is Outcome.TIMEOUT else "unavailable"
    return failed_reply(quorum, why), None, counted
