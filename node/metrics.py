"""The park node's Prometheus metrics (one registry per supervisor).

Names follow Prometheus conventions and are the contract for dashboards and alerts.
A ``node`` label without a ``pool`` label holds ``pool/node`` (two pools may both have an
``n1``); with a ``pool`` label beside it, the bare name.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from callpark.errors import StoreError
from callpark.store.kv import KV, Compare, Entry, Op, Snapshot, TxnResult

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class NodeMetrics:
    """Every metric a park node exports."""

    def __init__(self, pool: str, node: str) -> None:
        self.registry = CollectorRegistry()
        self.pool = pool
        self.node = node
        self._call_metrics(self.registry)
        self._node_metrics(self.registry)
        self._etcd_metrics(self.registry)
        self._security_metrics(self.registry)

    def _call_metrics(self, r: CollectorRegistry) -> None:
        """Parks, retrievals, ringbacks and ends, per pool."""
        self.parked_calls = Gauge("callpark_parked_calls", "Calls parked on this node", ["pool", "node"], registry=r)
        self.parks = Counter("callpark_parks_total", "Park requests by result", ["pool", "result"], registry=r)
        self.retrievals = Counter(
            "callpark_retrievals_total", "Retrieve requests by result", ["pool", "result"], registry=r
        )
        self.park_latency = Histogram(
            "callpark_park_latency_seconds",
            "Park INVITE received to call answered and recorded",
            ["pool"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retrieve_latency = Histogram(
            "callpark_retrieve_latency_seconds",
            "Retrieve INVITE received to retriever connected",
            ["pool"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ringbacks = Counter("callpark_ringbacks_total", "Ringbacks by outcome", ["pool", "outcome"], registry=r)
        self.timeouts = Counter(
            "callpark_timeouts_total",
            "Calls that exhausted their ringbacks, by outcome",
            ["pool", "outcome"],
            registry=r,
        )
        self.ended = Counter(
            "callpark_parked_calls_ended_total", "Parked calls ended by outcome", ["pool", "outcome"], registry=r
        )
        self.parker_notices = Counter(
            "callpark_parker_notices_total", "Parker notices sent by MESSAGE, by event", ["pool", "event"], registry=r
        )
        self.free_orbits = Gauge(
            "callpark_free_orbits", "Free orbits per CallPark range", ["pool", "range"], registry=r
        )
        self.range_orbits = Gauge("callpark_range_orbits", "Orbits per CallPark range", ["pool", "range"], registry=r)

    def _node_metrics(self, r: CollectorRegistry) -> None:
        """Workers, takeovers and lost calls."""
        self.slots_free = Gauge(
            "callpark_worker_slots_free", "Free call slots per worker", ["node", "worker"], registry=r
        )
        self.workers_up = Gauge("callpark_workers_up", "Workers running and ready", ["node"], registry=r)
        self.worker_restarts = Counter(
            "callpark_worker_restarts_total", "Workers restarted after dying", ["node"], registry=r
        )
        self.takeovers = Counter(
            "callpark_takeovers_total", "Takeovers of parked calls by result", ["pool", "result"], registry=r
        )
        self.lost = Counter("callpark_lost_calls_total", "Parked calls lost, by reason", ["pool", "reason"], registry=r)

    def _etcd_metrics(self, r: CollectorRegistry) -> None:
        """etcd requests, the lease and readiness."""
        self.etcd_latency = Histogram(
            "callpark_etcd_request_seconds", "etcd request latency", ["op"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.etcd_errors = Counter("callpark_etcd_errors_total", "etcd request errors", ["op", "kind"], registry=r)
        self.etcd_inflight = Gauge(
            "callpark_etcd_requests_in_flight", "etcd requests sent and not yet answered", ["op"], registry=r
        )
        self.lease_remaining = Gauge(
            "callpark_lease_remaining_seconds", "Seconds of self-fencing validity left", ["node"], registry=r
        )
        self.lease_renew = Histogram(
            "callpark_lease_renew_seconds", "Lease keepalive round trip", ["node"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.ready = Gauge("callpark_node_ready", "1 when the node parks and retrieves", ["pool", "node"], registry=r)

    def _security_metrics(self, r: CollectorRegistry) -> None:
        """Untrusted peers, orbit scans and worker callback errors."""
        self.untrusted_rejected = Counter(
            "callpark_untrusted_rejected_total",
            "SIP requests refused with 403 because the sending peer is not trusted",
            ["pool"],
            registry=r,
        )
        self.orbit_scan_rejected = Counter(
            "callpark_orbit_scan_rejected_total",
            "Retrievals refused (480) because their source dialled too many orbits where nothing was parked",
            ["pool"],
            registry=r,
        )
        self.orbit_scan_sources = Gauge(
            "callpark_orbit_scan_sources", "Sources the orbit-scan limiter currently tracks", ["node"], registry=r
        )
        self.callback_errors = Counter(
            "callpark_worker_callback_errors_total", "Exceptions caught in worker SIP callbacks", ["node"], registry=r
        )


class InstrumentedKV:
    """A :class:`~callpark.store.kv.KV` wrapper that records latency and errors per operation."""

    def __init__(self, inner: KV, metrics: NodeMetrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def _timed(self, op: str, fn: Any, *args: Any) -> Any:
        started = time.perf_counter()
        inflight = self.metrics.etcd_inflight.labels(op)
        inflight.inc()
        try:
            return fn(*args)
        except StoreError as exc:
            self.metrics.etcd_errors.labels(op, exc.__class__.__name__).inc()
            raise
        finally:
            inflight.dec()
            self.metrics.etcd_latency.labels(op).observe(time.perf_counter() - started)

    def get(self, key: str) -> Entry | None:
        result: Entry | None = self._timed("get", self.inner.get, key)
        return result

    def get_prefix(self, prefix: str, revision: int | None = None) -> Snapshot:
        result: Snapshot = self._timed("get_prefix", self.inner.get_prefix, prefix, revision)
        return result

    def txn(self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        result: TxnResult = self._timed("txn", self.inner.txn, compares, success, failure)
        return result

    def grant_lease(self, ttl_s: int) -> int:
        return int(self._timed("grant_lease", self.inner.grant_lease, ttl_s))

    def refresh_lease(self, lease_id: int) -> int:
        return int(self._timed("refresh_lease", self.inner.refresh_lease, lease_id))

    def revoke_lease(self, lease_id: int) -> None:
        self._timed("revoke_lease", self.inner.revoke_lease, lease_id)

    def unreachable(self) -> bool:
        return self.inner.unreachable()

    def close(self) -> None:
        self.inner.close()
