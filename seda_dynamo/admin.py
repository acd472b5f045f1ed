"""``seda-dynamo admin``: an operator's view of the cluster and its membership changes.

In the spirit of ``riak-admin cluster`` and ``nodetool`` (Dynamo paper section 4.8:
membership changes are explicit commands). ``status`` shows every node, its state,
partitions owned, transfers pending, the hints it holds and how far its anti-entropy
sweep has come (each node's own figures, asked of it); ``tpstats`` the stages of one
node; ``ring`` the owners; ``transfers`` the hand-overs in progress at a node with a
progress bar and rate; ``leave`` hands every partition of the node over and then
leaves; ``join SEED`` makes a lone node join the cluster of the member whose peer
address is SEED.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

from seda_dynamo import tpstats
from seda_dynamo.client import Client, DynamoError

BAR = 24
LEAVE_WAIT = 3600.0


def bar(done: int, total: int | None) -> str:
    if not total:
        return "[" + "?" * BAR + "]"
    filled = min(BAR, BAR * done // total)
    return "[" + "#" * filled + "." * (BAR - filled) + f"] {100 * done // total:3d}%"


def _ago(at: float | None, now: float) -> str:
    return "never" if not at else f"{max(0.0, now - at):.0f}s ago"


def status_text(reply: dict[str, Any], local: dict[str, dict[str, Any] | None] | None = None,
                now: float | None = None) -> str:
    """The cluster table; ``local`` adds each node's own figures (its ``stats`` reply,
    None when it did not answer): hints held, anti-entropy sweep and exchanges."""
    local = local or {}
    now = time.time() if now is None else now
    lines = [f"epoch {reply['epoch']}   pending transfers {reply['pending_transfers']}",
             f"{'node':<16} {'state':<8} {'up':<5} {'owned':>6} {'planned':>8} "
             f"{'out':>5} {'in':>5} {'hints':>6}  anti-entropy"]
    for n in reply["nodes"]:
        line = (f"{n['id']:<16} {n['status']:<8} {'yes' if n['up'] else 'DOWN':<5} "
                f"{n['partitions']:>6} {n['planned']:>8} {n['transfers_out']:>5} "
                f"{n['transfers_in']:>5}")
        stats = local.get(n["id"])
        if stats:
            gossip = stats.get("gossip", {})
            hints = stats.get("persistence", {}).get("hints", "?")
            line += (f" {hints:>6}  sweep {gossip.get('sweep_position', '?')}/"
                     f"{reply.get('partitions', '?')}, {gossip.get('sweeps', 0)} done, last "
                     f"{_ago(gossip.get('last_sweep_at'), now)}, "
                     f"{gossip.get('exchanges', 0)} exchanges, "
                     f"{gossip.get('keys_pushed', 0) + gossip.get('keys_pulled', 0)} keys "
                     "repaired")
        elif n["id"] in local:
            line += f" {'?':>6}  (not answering)"
        lines.append(line)
    return "\n".join(lines)


def ring_text(reply: dict[str, Any]) -> str:
    counts = Counter(owners[0] for owners in reply["owners"] if owners)
    lines = [f"epoch {reply['epoch']}  Q={reply['partitions']}  N={reply['n']} "
             f"R={reply['r']} W={reply['w']}",
             f"{'node':<16} {'status':<8} {'primary of':>10}  client / peer"]
    for n in reply["nodes"]:
        lines.append(f"{n['id']:<16} {n['status']:<8} {counts.get(n['id'], 0):>10}  "
                     f"{n['client']} / {n['peer']}")
    return "\n".join(lines)


def transfers_text(reply: dict[str, Any]) -> str:
    lines = [f"at {reply['node']}: {len(reply['active'])} active, "
             f"{len(reply['pending'])} planned moves in the cluster"]
    for t in reply["active"]:
        lines.append(f"  partition {t['partition']:>5} -> {t['to']:<12} "
                     f"{bar(t['keys_sent'], t['keys_total'])} {t['keys_sent']} keys "
                     f"{t['bytes_sent'] / 1e6:.1f} MB  {t['keys_per_sec']:.0f} keys/s")
    for p, src, dst in reply["pending"][:20]:
        lines.append(f"  planned: partition {p:>5} {src} -> {dst}")
    if len(reply["pending"]) > 20:
        lines.append(f"  ... and {len(reply['pending']) - 20} more")
    return "\n".join(lines)


def _local_stats(reply: dict[str, Any], ring: dict[str, Any],
                 options: dict[str, Any], timeout: float) -> dict[str, dict[str, Any] | None]:
    """Every member's own ``stats``, asked of it at its client address (None: silent)."""
    clients = {n["id"]: n["client"] for n in ring.get("nodes", [])}
    found: dict[str, dict[str, Any] | None] = {}
    for n in reply["nodes"]:
        address = clients.get(n["id"])
        if not address or not n["up"]:
            found[n["id"]] = None
            continue
        try:
            with Client(address, timeout=min(timeout, 2.0), **options) as c:
                found[n["id"]] = c.stats()
        except (DynamoError, OSError):
            found[n["id"]] = None
    return found


def run(server: str, command: str, seed: str | None, wait: bool, timeout: float,
        options: dict[str, Any] | None = None) -> str:
    """One admin command against ``server``; ``options`` go to every ``Client`` made
    (CURVE keys)."""
    options = options or {}
    with Client(server, timeout=timeout, **options) as c:
        if command == "ring":
            return ring_text(c.ring())
        if command == "status":
            reply, ring = c.admin("status"), c.ring()
            reply.setdefault("partitions", ring.get("partitions"))
            return status_text(reply, _local_stats(reply, ring, options, timeout))
        if command == "tpstats":
            return tpstats.text(c.ping(), c.stats())
        if command == "transfers":
            return transfers_text(c.admin("transfers"))
        reply = c.admin(command, seed)
        if command == "leave" and wait:
            deadline = time.monotonic() + LEAVE_WAIT
            while time.monotonic() < deadline:
                status = c.admin("status")
                mine = next(n for n in status["nodes"] if n["id"] == status["node"])
                if mine["status"] == "left":
                    return "left the cluster: every partition was handed over"
                time.sleep(0.5)
            return f"still leaving after {LEAVE_WAIT:.0f} s; see admin transfers"
        return ", ".join(f"{k}: {v}" for k, v in reply.items() if k != "ok")


def top(server: str, every: float, frames: int | None, cluster: bool, timeout: float,
        options: dict[str, Any] | None = None, out: Any = None) -> int:
    """``seda-dynamo top``: redraw the stages of ``server`` (or of every member, with
    ``cluster``) each ``every`` seconds, ``frames`` times or until Ctrl-C."""
    options = options or {}
    out = out or sys.stdout
    with Client(server, timeout=timeout, **options) as c:
        nodes = ({n["id"]: n["client"] for n in c.ring()["nodes"] if n["status"] != "left"}
                 if cluster else {c.ping(): server})
    clients = {node: Client(address, timeout=min(timeout, 2.0), **options)
               for node, address in nodes.items()}
    previous: dict[str, dict[str, Any] | None] = {}
    shown = 0
    last = time.monotonic()
    try:
        while frames is None or shown < frames:
            now = time.monotonic()
            latest: dict[str, dict[str, Any]] = {}
            for node, client in clients.items():
                try:
                    latest[node] = client.stats()
                except (DynamoError, OSError):
                    latest[node] = {}
            screen = tpstats.top_text({node: (latest[node], previous.get(node))
                                       for node in clients}, now - last,
                                      time.strftime("%H:%M:%S"))
            if out.isatty():
                out.write("\x1b[H\x1b[2J")  # home, clear: redraw in place
            out.write(screen + "\n")
            out.flush()
            previous, last = {k: v or None for k, v in latest.items()}, now
            shown += 1
            if frames is None or shown < frames:
                time.sleep(every)
    except KeyboardInterrupt:
        pass
    finally:
        for client in clients.values():
            client.close()
    return 0
