"""Operator requests to the controller leader: planned failover and failback of a pool.

:func:`submit` writes the request (:func:`callpark.dr.controller.request`), waits until
the leader consumes it and returns the event the leader recorded for it; a request no
leader serves in time is withdrawn.
"""

from __future__ import annotations

from typing import Any

from callpark.dr.controller import request
from callpark.errors import CallparkError, NotFound, ValidationError
from callpark.store.admin import AdminStore
from callpark.store.kv import KV, Delete
from callpark.store.ownership import events
from callpark.store.schema import Keys
from callpark.waiting import WaitTimeout, wait_until

ACTIONS = ("failover", "failback")


def submit(kv: KV, action: str, pool: str, timeout_s: float) -> dict[str, Any]:
    """Ask for ``action`` on ``pool`` and wait for the leader's event (served, never refused).

    Raises NotFound for an unknown pool, CallparkError when no leader acted in time (the
    request is then withdrawn) and ValidationError (rule ``dr-refused``) when refused.
    """
    if pool not in AdminStore(kv).state().pools:
        raise NotFound(f"pool {pool!r} does not exist")
    key = request(kv, action, pool)
    try:
        wait_until(lambda: kv.get(key) is None, timeout=timeout_s, what=f"the controller to {action}")
    except WaitTimeout:
        kv.txn([], [Delete(key)])
        raise CallparkError(
            f"no controller leader acted on the {action} request within {timeout_s:.0f}s; request withdrawn"
        ) from None
    done: dict[str, Any] | None = next((e for e in reversed(events(kv, last=50)) if e.get("request") == key), None)
    if done is None:
        raise CallparkError(f"{action} request was consumed but no event was recorded under {Keys.EVENTS}")
    if done.get("kind") == "refused":
        raise ValidationError("dr-refused", f"{action} of {pool} refused: {done.get('why')}")
    return done


def describe(event: dict[str, Any]) -> str:
    """One line saying what a served request did."""
    return (
        f"{event['kind']}: {', '.join(event.get('ranges', []))} now served by {event.get('to')} "
        f"({event.get('parked_calls', 0)} parked call(s) follow)"
    )
