"""Prometheus metrics of one SIP edge, served by its sidecar (``callpark edge-sync --metrics-port``).

Kamailio keeps the edge's refusal counters (:data:`~callpark.edge.config.EDGE_COUNTERS`); the
sidecar reads them over jsonrpcs at each scrape and exports them with its own view of the
routing table:

- ``callpark_edge_up``: 1 when the edge answered jsonrpcs at this scrape;
- ``callpark_edge_refused_total{reason}``: every refused attack by kind (flood, relay, auth...),
  and ``replaces_ended``: takeovers of callers who had hung up (declined, not an attack);
- ``callpark_edge_routes``: rows of the live routing table; ``callpark_edge_routes_age_seconds``:
  how long ago the edge last held what etcd says (grows while etcd or the edge is unreachable).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from callpark.edge import rpc as jsonrpc
from callpark.edge.config import COUNTER_GROUP, EDGE_COUNTERS


class EdgeCollector(Collector):
    """Reads the edge's counters at scrape time; ``routes()`` gives (rows, synced-at monotonic)."""

    def __init__(self, rpc_endpoint: str, routes: Callable[[], tuple[int, float]]) -> None:
        self.rpc = rpc_endpoint
        self.routes = routes

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        up = GaugeMetricFamily("callpark_edge_up", "1 when the SIP edge answered jsonrpcs at this scrape")
        refused = CounterMetricFamily(
            "callpark_edge_refused", "requests the SIP edge refused, by kind of attack", labels=["reason"]
        )
        try:
            for name in EDGE_COUNTERS:
                refused.add_metric([name], float(jsonrpc.call(self.rpc, "cnt.get", COUNTER_GROUP, name)))
            up.add_metric([], 1.0)
        except (jsonrpc.RpcError, TypeError, ValueError):
            up.add_metric([], 0.0)
            refused = CounterMetricFamily(refused.name, refused.documentation, labels=["reason"])
        rows, synced_at = self.routes()
        yield up
        yield refused
        yield GaugeMetricFamily("callpark_edge_routes", "rows of the edge's live orbit routing table", value=rows)
        age = time.monotonic() - synced_at if synced_at else float("inf")
        yield GaugeMetricFamily(
            "callpark_edge_routes_age_seconds",
            "seconds since the edge last held the routing table etcd says (inf: never)",
            value=age,
        )


def edge_registry(rpc_endpoint: str, routes: Callable[[], tuple[int, float]]) -> CollectorRegistry:
    """A registry with the edge's metrics (served by the sidecar)."""
    registry = CollectorRegistry()
    registry.register(EdgeCollector(rpc_endpoint, routes))
    return registry
