"""The park node supervisor: the node's only etcd client and the brain of its workers.

It holds the node's lease and member key, spawns and watches pjsua2 workers, decides
every park and retrieval (orbit allocation, redirects, refusals), runs the ringback
timers from the deadlines in etcd, has a dead worker's calls taken over by a sibling,
and serves /metrics, /healthz, /readyz and a JSON view of its parked calls.

:class:`Supervisor` composes the node's parts and runs the loop; the jobs live in
:mod:`~callpark.node.workers` (processes and channels), :mod:`~callpark.node.dispatch`
(worker messages), :mod:`~callpark.node.decisions` (park and retrieve), :mod:`~callpark.node.calls`
(held records and frees), :mod:`~callpark.node.ringback`, :mod:`~callpark.node.takeover`
(takeovers and the drain scan) and :mod:`~callpark.node.views` (ranges, owners, music).

Threads: the loop (:meth:`Supervisor.run`), one reader per worker, the membership
keepalive and the HTTP server. Each module's docstring says which lock guards what; the
three locks (calls, allocation, config) never nest.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from typing import Any

from callpark.errors import StoreError
from callpark.httpapi import NodeHttp
from callpark.model.orbits import OrbitRange
from callpark.node.adminapi import drain_actions
from callpark.node.blf import Lamps
from callpark.node.calls import HeldCalls
from callpark.node.config import NodeConfig
from callpark.node.context import NodeContext
from callpark.node.decisions import Decisions
from callpark.node.dispatch import Dispatcher
from callpark.node.membership import DuplicateNode, Membership
from callpark.node.metrics import InstrumentedKV, NodeMetrics
from callpark.node.notify import ParkerNotices
from callpark.node.ringback import Ringback
from callpark.node.takeover import Takeovers
from callpark.node.views import ClusterView
from callpark.node.workers import WorkerPool
from callpark.ratelimit import ScanLimiter
from callpark.store.admin import AdminStore
from callpark.store.kv import KV
from callpark.store.parking import ParkTable
from callpark.store.records import NodeId, ParkedCall, RecordDecoder

log = logging.getLogger(__name__)

CYCLE_S = 0.1


class Supervisor:
    """Runs one park node: ``start()``, then ``run()`` until ``stop()``."""

    def __init__(self, config: NodeConfig, kv: KV) -> None:
        self.config = config.validate()
        self.me = NodeId(config.pool, config.name, secrets.token_hex(8))  # a new incarnation per start
        self.metrics = NodeMetrics(config.pool, config.name)
        self.kv: KV = InstrumentedKV(kv, self.metrics)
        self.decoder = RecordDecoder(self.metrics.registry)  # malformed etcd records: reported, skipped
        self.admin = AdminStore(self.kv, decoder=self.decoder)
        self.membership = Membership(
            self.kv,
            pool=config.pool,
            node=config.name,
            timings=config.timings,
            on_rejoin=self._on_rejoin,
            on_renew=lambda s: self.metrics.lease_renew.labels(str(self.me)).observe(s),
        )
        self.table = ParkTable(
            self.kv, node=config.name, pool=config.pool, member_key=self.membership.key, decoder=self.decoder
        )
        self.trusted = config.peers()
        self.scan = ScanLimiter(config.scan_limit)
        self.http: NodeHttp | None = None
        self._stop = threading.Event()
        self._last_cycle = time.monotonic()
        self._next_join = 0.0
        self._compose()

    def _compose(self) -> None:
        """Build the node's parts; the workers reach the dispatcher and the view late, by lambda."""
        ctx = NodeContext(
            self.config, self.kv, self.table, self.metrics, self.decoder, self.membership.is_valid, self.me
        )
        self.calls = HeldCalls(ctx)
        self.workers = WorkerPool(
            ctx,
            self.trusted,
            on_message=lambda w, msg: self.dispatcher.on_message(w, msg),
            music_path=lambda: self.view.music_path,
        )
        self.view = ClusterView(ctx, self.admin, self.workers, self.calls)
        self.decisions = Decisions(
            ctx, calls=self.calls, facts=self.view, pick_worker=self.workers.pick, scan=self.scan
        )
        self.ringback = Ringback(ctx, self.calls, self.workers, settings=lambda: self.view.settings)
        self.takeovers = Takeovers(ctx, calls=self.calls, view=self.view, workers=self.workers)
        self.notices = ParkerNotices(ctx, on_timeout_uri=lambda: self.view.settings.on_timeout_uri)
        self.dispatcher = Dispatcher(
            ctx,
            calls=self.calls,
            decisions=self.decisions,
            ringback=self.ringback,
            takeovers=self.takeovers,
            notices=self.notices,
        )
        self.lamps = Lamps(ctx, self.calls)  # BLF: publishes the held calls' dialog state to the edge

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Join the cluster, start the workers and HTTP.

        With etcd unreachable (a node booting before etcd has quorum) the node starts fenced:
        not ready, answering 503 like a fenced node, and :meth:`_cycle` joins and recovers its
        calls once etcd answers. Only a refusal (no such pool, a live node of the same name) raises.
        """
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.view.refresh_config(force=True)
        except StoreError as exc:
            log.warning("etcd unreachable at start (%s): starting fenced, retrying", exc)
        self.http = NodeHttp(
            self.config.host,
            self.config.http_port,
            registry=self.metrics.registry,
            healthy=self.healthy,
            ready=self.ready,
            api={"/api/parked": self.parked_view, "/api/node": self.node_view},
            admin_token=self.config.admin_token,
            actions=drain_actions(self.kv, self.config.pool, self.config.name),
            private=frozenset({"/api/parked"}),  # callers, parkers and park ids: admin token only
            tls=self.config.http_tls,
        )
        self._join_at_start()
        self.http.start()
        self.workers.start()
        self.takeovers.retry()  # our calls of before a restart
        self.lamps.start()
        self.membership.update(**self._member_info(ready=self.ready()[0]))
        log.info(
            "node %s of pool %s started (%s): %d workers, http %s",
            self.config.name,
            self.config.pool,
            self.ready()[1],
            len(self.workers.handles),
            self.http.port,
        )

    def _join_at_start(self) -> None:
        """Join, waiting out a crashed predecessor's member key (its lease runs for up to one TTL
        after a kill -9); a key still renewed after that belongs to a live process of our name,
        which refuses the start (:class:`DuplicateNode`)."""
        t = self.config.timings
        deadline = time.monotonic() + t.ttl_s + 2 * t.keepalive_s
        while True:
            try:
                self._join(at_start=True)
                return
            except DuplicateNode:
                if time.monotonic() >= deadline or self._stop.is_set():
                    raise
                log.warning("node name %s is still registered; waiting for that lease to end", self.config.name)
                self._next_join = 0.0
                self._stop.wait(t.keepalive_s)

    def _join(self, *, at_start: bool = False) -> None:
        """Register the member key and start the keepalive; a no-op once joined or while etcd fails.

        A live process of our name refuses the start; met later (after a fenced start, the key
        of our own previous process not yet expired) it is retried like an unreachable etcd.
        """
        now = time.monotonic()
        if self.membership.lease or now < self._next_join:
            return
        self._next_join = now + self.config.timings.keepalive_s
        try:
            self.membership.join(self._member_info(ready=False))
        except DuplicateNode:
            if at_start:
                raise
            log.warning("node name %s is still registered; retrying", self.config.name)
            return
        except StoreError as exc:
            log.warning("could not join the cluster (will retry): %s", exc)
            return
        self.table.lease = self.membership.lease
        self.membership.start()

    def run(self) -> None:
        """The supervision loop: workers, ringback deadlines, configuration, gauges."""
        while not self._stop.wait(CYCLE_S):
            self._last_cycle = time.monotonic()
            try:
                self._cycle()
            except Exception:
                log.exception("supervisor cycle failed; please report it as a BUG")

    def stop(self) -> None:
        """Hang up and free every call, stop the workers, leave the cluster."""
        self._stop.set()
        self.workers.stop()
        self.lamps.stop()
        if self.http is not None:
            self.http.stop()
        self.membership.stop(revoke=True)

    def _cycle(self) -> None:
        self._join()
        self.workers.check(on_restarted=self.takeovers.worker_restarted)
        self.view.refresh_config()
        self.takeovers.scan()
        self.takeovers.retry()
        self.calls.retry()
        self.ringback.fire_deadlines()
        self.membership.update(**self._member_info(ready=self.ready()[0]))
        self._set_gauges()

    def _set_gauges(self) -> None:
        self.metrics.parked_calls.labels(self.config.pool, self.config.name).set(len(self.calls))
        self.metrics.lease_remaining.labels(str(self.me)).set(self.membership.remaining_s())
        self.metrics.ready.labels(self.config.pool, self.config.name).set(1 if self.ready()[0] else 0)
        self.metrics.workers_up.labels(str(self.me)).set(self.workers.ready_count())
        self.metrics.orbit_scan_sources.labels(str(self.me)).set(len(self.scan))

    def _on_rejoin(self) -> None:
        """Our lease expired and we re-registered: drop calls that now name another holder."""
        self.table.lease = self.membership.lease
        self.takeovers.release_moved()

    # -- health and views -------------------------------------------------------------------

    def healthy(self) -> tuple[bool, str]:
        """``/healthz``: the loop is turning."""
        stalled = time.monotonic() - self._last_cycle
        if stalled > self.config.timings.ttl_s:
            return False, f"supervisor loop stalled for {stalled:.1f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """``/readyz``: the node parks and retrieves (valid lease, not draining, a worker, a range)."""
        if not self.membership.is_valid():
            return False, "fenced: etcd lease not renewed"
        if self.view.draining:
            return False, f"draining: {len(self.calls)} parked call(s) left"
        up = self.workers.ready_count()
        if up == 0:
            return False, "no worker ready"
        if not self.view.all_ranges:
            return False, "no CallPark range is configured"
        return True, f"ready: {up}/{len(self.workers.handles)} workers, serving {len(self.view.ranges)} range(s)"

    def parked_view(self) -> list[dict[str, Any]]:
        """``/api/parked``: this node's calls by orbit."""
        now = time.time()
        with self.calls.lock:
            calls = [h.call for h in self.calls.held.values()]
        return [c.summary(now) for c in sorted(calls, key=lambda c: c.orbit)]

    def node_view(self) -> dict[str, Any]:
        """``/api/node``: the node, its lease, workers and ranges."""
        return {
            "node": self.config.name,
            "pool": self.config.pool,
            "ready": self.ready()[0],
            "lease_remaining_s": round(self.membership.remaining_s(), 2),
            "workers": [
                {
                    "index": w.index,
                    "sip": w.sip(self.config.host),
                    "free": w.free_slots,
                    "pid": w.process.pid if w.process is not None and w.process.is_running() else None,
                }
                for w in self.workers.handles
            ],
            "ranges": [r.name for r in self.view.ranges],
        }

    def _member_info(self, *, ready: bool) -> dict[str, Any]:
        host = self.config.host
        return {
            "ready": ready,
            "draining": self.view.draining,
            "parked": len(self.calls),
            "http": f"{host}:{self.http.port if self.http else 0}",
            "workers": [{"index": w.index, "sip": w.sip(host), "free": w.free_slots} for w in self.workers.handles],
            "pid": os.getpid(),
            "incarnation": self.me.incarnation,  # tells this process from the node's previous ones
        }

    # -- kept for callers written before the split (tests/test_hostile_records.py) --------------

    def _refresh_config(self, force: bool = False) -> None:
        self.view.refresh_config(force)

    @property
    def _ranges(self) -> list[OrbitRange]:
        return self.view.ranges


__all__ = ["NodeConfig", "ParkedCall", "Supervisor"]
