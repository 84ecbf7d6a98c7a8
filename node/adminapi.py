"""The park node's admin writes over HTTP: start and cancel this node's drain.

Both write ``drain/<pool>/<node>``, the same key ``callpark dr drain`` writes, so the
node's scan loop is the one place a drain takes effect.
"""

from __future__ import annotations

from typing import Any

from callpark.httpapi import Action
from callpark.store.drain import cancel_drain, request_drain
from callpark.store.kv import KV


def drain_actions(kv: KV, pool: str, node: str) -> dict[tuple[str, str], Action]:
    """``POST /api/drain`` starts this node's drain, ``DELETE /api/drain`` cancels it."""

    def start(params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        request_drain(kv, pool, node, via="http")
        detail = "parks nothing new; peers take its parked calls over (watch /readyz and /api/parked)"
        return 202, {"node": f"{pool}/{node}", "draining": True, "detail": detail}

    def cancel(params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        cancel_drain(kv, pool, node)
        return 200, {"node": f"{pool}/{node}", "draining": False, "detail": "drain cancelled; the node parks again"}

    return {("POST", "/api/drain"): start, ("DELETE", "/api/drain"): cancel}
