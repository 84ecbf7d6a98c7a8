"""Keeps one edge's orbit routing table in step with etcd (``callpark edge sync``).

Every ``interval_s`` it reads the ranges and their owners (config and ``owners/`` at one
revision: small, whatever the number of parked calls) and, when the table differs from what
the edge holds or the edge restarted (its ``gen`` is not ours), writes it over jsonrpcs
(:mod:`callpark.edge.routes` says how a table is swapped in without a half-written moment).
When etcd cannot be read the edge keeps its last table; when the edge cannot be reached the
next cycle tries again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from callpark.edge import rpc as jsonrpc
from callpark.edge.routes import ROUTES_HTABLE, Route, routes
from callpark.errors import StoreError, ValidationError
from callpark.store.kv import KV
from callpark.store.ownership import read_routing
from callpark.store.records import RecordDecoder

log = logging.getLogger(__name__)


class RouteSync:
    """One edge's table writer; :meth:`run` loops until :meth:`stop`."""

    def __init__(self, kv: KV, rpc_endpoint: str, set_ids: Mapping[str, int], *, interval_s: float = 0.25) -> None:
        self.kv = kv
        self.rpc = rpc_endpoint
        self.set_ids = dict(set_ids)
        self.interval_s = interval_s
        self.decoder = RecordDecoder()
        self.generation = 0
        self.table: list[Route] | None = None
        self.synced_at = 0.0  # monotonic time the edge last held what etcd says
        self._stop = threading.Event()

    def cycle(self) -> str:
        """Read etcd, push the table if needed; returns what happened (for logs and tests)."""
        try:
            _, config, owners = read_routing(self.kv, self.decoder)
        except StoreError as exc:
            return f"etcd unreadable ({exc}); the edge keeps its table"
        backups = {name: pool.backup for name, pool in config.pools.items()}
        table, skipped = routes(config.ranges, {r: o.pool for r, o in owners.items()}, backups, self.set_ids)
        for line in skipped:
            log.warning("%s", line)
        try:
            if table == self.table and self._edge_generation() == self.generation:
                self.synced_at = time.monotonic()
                return "unchanged"
            self._push(table)
        except jsonrpc.RpcError as exc:
            return f"edge unreachable over jsonrpcs ({exc}); retrying"
        self.table, self.synced_at = table, time.monotonic()
        return f"pushed {len(table)} route(s), generation {self.generation}"

    def run(self) -> None:
        last = ""
        while not self._stop.is_set():
            said = self.cycle()
            if said != last and said != "unchanged":
                log.info("%s", said)
            last = said
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()

    def _edge_generation(self) -> int:
        return self._get_int("gen")

    def _get_int(self, key: str) -> int:
        """An integer of the routes htable; 0 when the key does not exist (a fresh edge)."""
        try:
            reply = jsonrpc.call(self.rpc, "htable.get", ROUTES_HTABLE, key)
        except jsonrpc.RpcError as exc:
            if "doesn't exist" in str(exc):
                return 0
            raise
        item = reply.get("item", {}) if isinstance(reply, dict) else {}
        value = item.get("value") if isinstance(item, dict) else None
        return value if isinstance(value, int) else 0

    def _push(self, table: list[Route]) -> None:
        old = self._edge_generation()
        new = max(old, self.generation) + 1
        for index, route in enumerate(table):
            jsonrpc.call(self.rpc, "htable.sets", ROUTES_HTABLE, f"r{new}.{index}", route.row())
        jsonrpc.call(self.rpc, "htable.seti", ROUTES_HTABLE, f"n{new}", len(table))
        jsonrpc.call(self.rpc, "htable.seti", ROUTES_HTABLE, "gen", new)  # the swap: one write
        self.generation = new
        if old:
            self._drop(old)

    def _drop(self, generation: int) -> None:
        """Delete an old generation's rows (best effort: a leftover row is never read)."""
        try:
            for index in range(self._get_int(f"n{generation}")):
                jsonrpc.call(self.rpc, "htable.delete", ROUTES_HTABLE, f"r{generation}.{index}")
            jsonrpc.call(self.rpc, "htable.delete", ROUTES_HTABLE, f"n{generation}")
        except jsonrpc.RpcError as exc:
            log.debug("old route generation %d not deleted: %s", generation, exc)


def parse_sets(values: list[str]) -> dict[str, int]:
    """``POOL=SET`` pairs (the edge's dispatcher set of each pool) as a dict; one-line errors."""
    sets: dict[str, int] = {}
    for value in values:
        pool, sep, number = value.partition("=")
        if not sep or not pool or not number.isdigit() or int(number) < 1:
            raise ValidationError("edge-set", f"--set {value!r}: expected POOL=SET with SET a dispatcher set id >= 1")
        sets[pool] = int(number)
    if not sets:
        raise ValidationError("edge-set", "at least one --set POOL=SET is needed")
    return sets
