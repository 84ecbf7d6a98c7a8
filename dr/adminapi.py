"""The controller's admin writes over HTTP: planned failover and failback of a pool.

Each writes the same ``requests/`` key ``callpark dr failover|failback`` writes (see
:func:`callpark.dr.controller.request`); the leader serves or refuses it and records an
event. The answer is 202 with the request key: follow it with ``/api/status`` or
``callpark dr status``.
"""

from __future__ import annotations

from typing import Any

from callpark.dr.controller import request
from callpark.errors import ValidationError
from callpark.httpapi import Action
from callpark.model.pools import validate_name
from callpark.store.admin import AdminStore
from callpark.store.kv import KV
from callpark.store.records import DEFAULT


def controller_actions(kv: KV) -> dict[tuple[str, str], Action]:
    """``POST /api/dr/failover?pool=P`` and ``POST /api/dr/failback?pool=P``."""

    def make(what: str) -> Action:
        def run(params: dict[str, str]) -> tuple[int, dict[str, Any]]:
            pool = params.get("pool", "")
            if not pool:
                return 400, {"error": f"{what} needs ?pool=NAME"}
            try:
                validate_name("pool", pool)
            except ValidationError as exc:
                return 400, {"error": str(exc)}
            if pool not in AdminStore(kv, decoder=DEFAULT).state().pools:
                return 404, {"error": f"pool {pool!r} does not exist"}
            key = request(kv, what, pool)
            detail = "the controller leader serves or refuses it; see /api/status or 'callpark dr status'"
            return 202, {"request": key, "action": what, "pool": pool, "detail": detail}

        return run

    return {("POST", "/api/dr/failover"): make("failover"), ("POST", "/api/dr/failback"): make("failback")}
