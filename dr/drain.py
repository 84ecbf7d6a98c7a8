"""Draining a park node: it parks nothing new and its peers take its parked calls over
live (INVITE/Replaces), so it can be stopped without losing a call.

The drain key is the one the node's ``POST /api/drain`` writes
(:mod:`callpark.node.adminapi`); the node's scan loop is where a drain takes effect.
"""

from __future__ import annotations

from dataclasses import dataclass

from callpark.errors import CallparkError, NotFound
from callpark.store.drain import cancel_drain, request_drain
from callpark.store.kv import KV
from callpark.store.parking import read_history, read_parked
from callpark.store.records import NodeId
from callpark.store.schema import Keys
from callpark.waiting import WaitTimeout, wait_until


def cancel(kv: KV, pool: str, node: str) -> None:
    """End a drain: the node parks again."""
    cancel_drain(kv, pool, node)


@dataclass(frozen=True)
class Drained:
    """What a finished drain moved: calls the node held, and those lost on the way."""

    calls: int
    lost: int


def drain(kv: KV, pool: str, node: str, timeout_s: float) -> Drained:
    """Start draining ``pool/node`` and wait until its peers hold every call it held.

    Raises NotFound when the node is not live, CallparkError when calls remain after
    ``timeout_s`` (the node stays draining).
    """
    if kv.get(Keys.member(pool, node)) is None:
        raise NotFound(f"no live park node {pool}/{node}")
    request_drain(kv, pool, node, via="cli")
    # park id -> Call-ID of the dialog the node holds: a call has moved only when a peer
    # holds the record AND its INVITE/Replaces replaced that dialog (stopping the node
    # between the claim and the Replaces would hang the caller up)
    draining = NodeId(pool, node)  # pool/node: a namesake in another pool is not this node
    dialogs = {h.call.park_id: h.call.dialog.call_id for h in read_parked(kv) if draining.holds(h.call.holder)}

    def remaining() -> int:
        now = {h.call.park_id: h.call for h in read_parked(kv)}
        return sum(
            1
            for park_id, call_id in dialogs.items()
            if park_id in now and (draining.holds(now[park_id].holder) or now[park_id].dialog.call_id == call_id)
        )

    try:
        wait_until(lambda: remaining() == 0, timeout=timeout_s, what=f"{pool}/{node} to hand over its calls")
    except WaitTimeout:
        raise CallparkError(
            f"{pool}/{node} still holds {remaining()} of {len(dialogs)} parked call(s) after {timeout_s:.0f}s "
            "(are its peers up with free slots?); it stays draining"
        ) from None
    lost = [p for p in dialogs if (h := read_history(kv, p)) is not None and h.get("outcome") == "lost"]
    return Drained(len(dialogs), len(lost))
