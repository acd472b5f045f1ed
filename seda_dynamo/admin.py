"""``seda-dynamo admin``: an operator's view of the cluster and its membership changes.

In the spirit of ``riak-admin cluster`` and ``nodetool`` (Dynamo paper section 4.8:
membership changes are explicit commands). ``status`` shows every node, its state,
partitions owned and transfers pending; ``ring`` the owners; ``transfers`` the
hand-overs in progress at a node with a progress bar and rate; ``leave`` hands every
partition of the node over and then leaves; ``join SEED`` makes a lone node join the
cluster of the member whose peer address is SEED.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from seda_dynamo.client import Client

BAR = 24
LEAVE_WAIT = 3600.0


def bar(done: int, total: int | None) -> str:
    if not total:
        return "[" + "?" * BAR + "]"
    filled = min(BAR, BAR * done // total)
    return "[" + "#" * filled + "." * (BAR - filled) + f"] {100 * done // total:3d}%"


def status_text(reply: dict[str, Any]) -> str:
    lines = [f"epoch {reply['epoch']}   pending transfers {reply['pending_transfers']}",
             f"{'node':<16} {'state':<8} {'up':<5} {'owned':>6} {'planned':>8} "
             f"{'out':>5} {'in':>5}"]
    for n in reply["nodes"]:
        lines.append(f"{n['id']:<16} {n['status']:<8} {'yes' if n['up'] else 'DOWN':<5} "
                     f"{n['partitions']:>6} {n['planned']:>8} {n['transfers_out']:>5} "
                     f"{n['transfers_in']:>5}")
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


def run(server: str, command: str, seed: str | None, wait: bool, timeout: float) -> str:
    with Client(server, timeout=timeout) as c:
        if command == "ring":
            return ring_text(c.ring())
        if command == "status":
            return status_text(c.admin("status"))
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
