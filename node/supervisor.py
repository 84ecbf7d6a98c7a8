"""The park node supervisor: the node's only etcd client and the brain of its workers.

It holds the node's lease and member key, spawns and watches pjsua2 workers, decides
every park and retrieval (orbit allocation, redirects, refusals), runs the ringback
timers from the deadlines in etcd, has a dead worker's calls taken over by a sibling,
and serves /metrics, /healthz, /readyz and a JSON view of its parked calls.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from callpark.admintoken import AdminToken
from callpark.errors import CallparkError, StoreDataError, StoreError
from callpark.httpapi import NodeHttp
from callpark.model.orbits import OrbitRange, RangeType
from callpark.model.settings import DEFAULTS, CpsSettings
from callpark.netutil import free_port, free_port_block
from callpark.node.adminapi import drain_actions
from callpark.node.membership import Membership
from callpark.node.metrics import InstrumentedKV, NodeMetrics
from callpark.node.protocol import REASON_FENCED, REASON_STATE_UNAVAILABLE, Channel, ChannelClosed, Message
from callpark.peers import DEFAULT_TRUSTED_PEERS, TrustedPeers, host_of, is_ip
from callpark.procs import ManagedProcess
from callpark.ratelimit import ScanLimit, ScanLimiter
from callpark.store import admin
from callpark.store import music as mohstore
from callpark.store.kv import KV
from callpark.store.parking import Fenced, Held, LostRace, NoFreeOrbit, OrbitTaken, OwnershipChanged, ParkTable
from callpark.store.records import (
    CallState,
    Dialog,
    Holder,
    Outcome,
    Owner,
    ParkedCall,
    ParkKind,
    RecordDecoder,
    RecordKind,
    parse_members,
    parse_stamp,
)
from callpark.store.schema import Keys
from callpark.store.session import LeaseTimings
from callpark.waiting import wait_until

log = logging.getLogger(__name__)

MAX_CALLS_PER_WORKER = 4  # pjsua2 wheel's compile-time PJSUA_MAX_CALLS
MAX_WORKERS = 256  # 3 parked calls each: 768 per node; about 15 MB of memory per worker
RTP_PORTS_PER_WORKER = 16
CONFIG_REFRESH_S = 2.0
SCAN_S = 0.5
CYCLE_S = 0.1

END_REASONS = {
    "caller-hangup": Outcome.ABANDONED,
    "retrieved": Outcome.RETRIEVED,
    "rang-back": Outcome.RANG_BACK,
    "forwarded": Outcome.FORWARDED,
    "disconnected": Outcome.DISCONNECTED,
    "failed": Outcome.ABANDONED,
}


SLOW_HANDLER_S = 0.5  # a worker message handled slower than this delays that worker's next requests


@dataclass(frozen=True)
class NodeConfig:
    """How one park node runs (validated at start-up)."""

    pool: str
    name: str
    run_dir: Path
    workers: int = 2
    host: str = "127.0.0.1"
    http_port: int = 0
    edge: str | None = None
    domain: str = "callpark.test"
    ring_time_s: float = 20.0
    timings: LeaseTimings = field(default_factory=LeaseTimings)
    worker_log_level: str = "WARNING"
    sip_port_base: int = 0  # worker i listens on base+i; 0: free ports picked at start
    rtp_port_base: int = 0  # worker i uses base + i*RTP_PORTS_PER_WORKER ...; 0: picked at start
    trusted_peers: tuple[str, ...] = DEFAULT_TRUSTED_PEERS  # the --edge host is always added
    scan_limit: ScanLimit = field(default_factory=ScanLimit)
    admin_token: AdminToken | None = None  # None: the HTTP API is read-only

    def validate(self) -> NodeConfig:
        TrustedPeers.parse(self.trusted_peers, where="--trusted-peers")
        self.scan_limit.validate()
        if not 1 <= self.workers <= MAX_WORKERS:
            raise CallparkError(f"--workers must be 1 to {MAX_WORKERS}, not {self.workers}")
        if not 1.0 <= self.ring_time_s <= 300.0:
            raise CallparkError(f"--ring-time must be 1 to 300 seconds, not {self.ring_time_s}")
        self.timings.validate()
        sip_top = self.sip_port_base + self.workers - 1
        if self.sip_port_base and (self.sip_port_base < 1024 or sip_top > 65535):
            raise CallparkError(f"--sip-port-base {self.sip_port_base}: worker ports must be 1024 to 65535")
        rtp_top = self.rtp_port_base + self.workers * RTP_PORTS_PER_WORKER - 1
        if self.rtp_port_base and (self.rtp_port_base < 1024 or rtp_top > 65535):
            raise CallparkError(f"--rtp-port-base {self.rtp_port_base}: RTP ports must be 1024 to 65535")
        return self


@dataclass
class WorkerHandle:
    """One worker process as the supervisor sees it."""

    index: int
    sip_port: int
    rtp_port: int
    process: ManagedProcess | None = None
    channel: Channel | None = None
    free_slots: int = 0
    ready: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False
    generation: int = 0

    def sip(self, host: str) -> str:
        return f"{host}:{self.sip_port}"

    def send(self, op: str, **fields: Any) -> bool:
        if self.channel is None:
            return False
        try:
            self.channel.send(op, **fields)
            return True
        except ChannelClosed:
            return False


class Supervisor:
    """Runs one park node: ``start()``, then ``run()`` until ``stop()``."""

    def __init__(self, config: NodeConfig, kv: KV) -> None:
        self.config = config.validate()
        self.metrics = NodeMetrics(config.pool, config.name)
        self.kv: KV = InstrumentedKV(kv, self.metrics)
        self.decoder = RecordDecoder(self.metrics.registry)  # malformed etcd records: reported, skipped
        self.admin = admin.AdminStore(self.kv, decoder=self.decoder)
        self.membership = Membership(
            self.kv,
            pool=config.pool,
            node=config.name,
            timings=config.timings,
            on_rejoin=self._on_rejoin,
            on_renew=lambda s: self.metrics.lease_renew.labels(config.name).observe(s),
        )
        self.table = ParkTable(
            self.kv, node=config.name, pool=config.pool, member_key=self.membership.key, decoder=self.decoder
        )
        self.workers: list[WorkerHandle] = []
        self.held: dict[str, Held] = {}
        self._pending_free: dict[str, tuple[str, Outcome, str]] = {}  # orbit -> (park id, outcome, detail)
        self._pending: dict[tuple[int, str], float] = {}
        self._lock = threading.RLock()
        # One allocation at a time: concurrent parks would all try the same least recently
        # freed orbit, and every loser pays a failed txn plus a liveness read, then retries.
        self._alloc_lock = threading.Lock()
        self._stop = threading.Event()
        self._ranges: list[OrbitRange] = []
        self._settings: CpsSettings = DEFAULTS
        self._music_sha: str | None = "unset"
        self._music_path: Path | None = None
        self._last_refresh = 0.0
        self._last_cycle = time.monotonic()
        self._last_prune = 0.0
        self._last_scan = 0.0
        self._config_lock = threading.Lock()
        self._draining = False
        self._owner_pool: dict[str, str] = {}
        self._all_ranges: list[OrbitRange] = []
        self._live_nodes: dict[str, bool] = {}
        self.http: NodeHttp | None = None
        self.trusted = TrustedPeers.parse(config.trusted_peers).with_host(config.edge)
        self.scan = ScanLimiter(config.scan_limit)

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Join the cluster, start the workers and HTTP; returns when the node is ready."""
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        self._refresh_config(force=True)
        self.http = NodeHttp(
            self.config.host,
            self.config.http_port,
            registry=self.metrics.registry,
            healthy=self.healthy,
            ready=self.ready,
            api={"/api/parked": self.parked_view, "/api/node": self.node_view},
            admin_token=self.config.admin_token,
            actions=drain_actions(self.kv, self.config.pool, self.config.name),
        )
        self.membership.join(self._member_info(ready=False))
        self.table.lease = self.membership.lease
        self.membership.start()
        self.http.start()
        for index in range(self.config.workers):
            sip = self.config.sip_port_base + index if self.config.sip_port_base else free_port(udp_too=True)
            rtp = (
                self.config.rtp_port_base + index * RTP_PORTS_PER_WORKER
                if self.config.rtp_port_base
                else free_port_block(RTP_PORTS_PER_WORKER)
            )
            handle = WorkerHandle(index, sip, rtp)
            self.workers.append(handle)
            self._spawn(handle)
        for handle in self.workers:
            wait_until(functools.partial(self._worker_ready, handle), timeout=20, what=f"worker {handle.index} ready")
        self._recover_own_calls()
        self.membership.update(**self._member_info(ready=True))
        log.info(
            "node %s of pool %s ready: %d workers, http %s",
            self.config.name,
            self.config.pool,
            len(self.workers),
            self.http.port,
        )

    def _worker_ready(self, handle: WorkerHandle) -> bool:
        if handle.process is not None:
            handle.process.check_running()
        return handle.ready.is_set()

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
        for handle in self.workers:
            handle.stopping = True
            handle.send("shutdown")
        deadline = time.monotonic() + 5
        for handle in self.workers:
            if handle.process is not None:
                while handle.process.is_running() and time.monotonic() < deadline:
                    time.sleep(0.02)
                handle.process.stop(timeout=2)
            if handle.channel is not None:
                handle.channel.close()
        if self.http is not None:
            self.http.stop()
        self.membership.stop(revoke=True)

    # -- health ---------------------------------------------------------------------------

    def healthy(self) -> tuple[bool, str]:
        stalled = time.monotonic() - self._last_cycle
        if stalled > self.config.timings.ttl_s:
            return False, f"supervisor loop stalled for {stalled:.1f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if not self.membership.is_valid():
            return False, "fenced: etcd lease not renewed"
        if self._draining:
            return False, f"draining: {len(self.held)} parked call(s) left"
        up = sum(1 for w in self.workers if w.ready.is_set())
        if up == 0:
            return False, "no worker ready"
        if not self._all_ranges:
            return False, "no CallPark range is configured"
        return True, f"ready: {up}/{len(self.workers)} workers, serving {len(self._ranges)} range(s)"

    def parked_view(self) -> list[dict[str, Any]]:
        now = time.time()
        with self._lock:
            calls = [h.call for h in self.held.values()]
        return [c.summary(now) for c in sorted(calls, key=lambda c: c.orbit)]

    def node_view(self) -> dict[str, Any]:
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
                for w in self.workers
            ],
            "ranges": [r.name for r in self._ranges],
        }

    # -- workers ----------------------------------------------------------------------------

    def _spawn(self, handle: WorkerHandle) -> None:
        parent, child = socket.socketpair()
        handle.generation += 1
        handle.ready.clear()
        handle.free_slots = 0
        handle.channel = Channel(parent)
        argv = [
            sys.executable,
            "-m",
            "callpark.node.worker",
            "--fd",
            str(child.fileno()),
            "--index",
            str(handle.index),
            "--node",
            self.config.name,
            "--host",
            self.config.host,
            "--sip-port",
            str(handle.sip_port),
            "--rtp-port",
            str(handle.rtp_port),
            "--domain",
            self.config.domain,
            "--log-level",
            self.config.worker_log_level,
            "--trusted-peers",
            str(self.trusted),
        ]
        if self.config.edge:
            argv += ["--proxy", self.config.edge]
        if self._music_path is not None:
            argv += ["--music", str(self._music_path)]
        log_path = self.config.run_dir / f"worker{handle.index}.log"
        handle.process = ManagedProcess(
            f"{self.config.name}/worker{handle.index}", argv, log_path=log_path, pass_fds=[child.fileno()]
        ).start()
        child.close()
        generation = handle.generation
        threading.Thread(
            target=self._read_worker, args=(handle, generation), name=f"worker{handle.index}-reader", daemon=True
        ).start()

    def _read_worker(self, handle: WorkerHandle, generation: int) -> None:
        channel = handle.channel
        assert channel is not None
        while True:
            try:
                msg = channel.receive()
            except ChannelClosed:
                break
            if handle.generation != generation:
                break
            started = time.monotonic()
            try:
                self._on_message(handle, msg)
                took = time.monotonic() - started
                if took > SLOW_HANDLER_S:
                    log.warning("handling %s from worker %d took %.2fs", msg.get("op"), handle.index, took)
            except Exception:
                log.exception(
                    "handling %s from worker %d failed; please report it as a BUG", msg.get("op"), handle.index
                )
        handle.ready.clear()

    def _check_workers(self) -> None:
        for handle in self.workers:
            if handle.stopping or handle.process is None or handle.process.is_running():
                continue
            code = handle.process.returncode()
            log.warning("worker %d died (exit %s); restarting it and taking its calls over", handle.index, code)
            self.metrics.worker_restarts.labels(self.config.name).inc()
            handle.process.stop()
            if handle.channel is not None:
                handle.channel.close()
            self._spawn(handle)
            try:
                wait_until(functools.partial(self._worker_ready, handle), timeout=20, what="restarted worker")
            except Exception as exc:  # noqa: BLE001 - retried on the next cycle
                log.error("worker %d did not come back: %s", handle.index, exc)
                continue
            orphans = [h for h in list(self.held.values()) if h.call.holder.worker == handle.index]
            for held in orphans:
                self._take_over(held)

    def _take_over(self, held: Held) -> None:
        if not held.call.dialog.supports_replaces:
            # INVITE/Replaces to a UA without it would ring it as a new call: never do that
            self._lose(held, "caller without Replaces support")
            return
        target = self._pick_worker(need=1)
        if target is None:
            self._lose(held, "no free worker slot for takeover")
            return
        with self._lock:
            for attempt in range(2):
                try:
                    held = self.table.update(held, held.call.with_state(CallState.PARKED))
                    break
                except LostRace:
                    fresh = self.table.refresh(held) if attempt == 0 else None
                    if fresh is None or fresh.call.holder.node != self.config.name:
                        log.warning("orbit %s is no longer ours to take over", held.call.orbit)
                        self.held.pop(held.call.orbit, None)
                        return
                    held = fresh
                except (Fenced, StoreError) as exc:
                    log.warning("cannot claim orbit %s for takeover: %s", held.call.orbit, exc)
                    return
            self.held[held.call.orbit] = held
        target.send(
            "takeover",
            orbit=held.call.orbit,
            park_id=held.call.park_id,
            dialog=_dialog_json(held.call.dialog),
            music=self._settings.enable_music_on_hold,
        )

    def _pick_worker(self, need: int, exclude: int | None = None) -> WorkerHandle | None:
        """The ready worker with the most free slots, if it has ``need`` plus one spare."""
        ready = [w for w in self.workers if w.ready.is_set() and w.index != exclude]
        best = max(ready, key=lambda w: w.free_slots, default=None)
        if best is None or best.free_slots < need + 1:
            return None
        return best

    # -- messages from workers ----------------------------------------------------------------

    def _on_message(self, w: WorkerHandle, msg: Message) -> None:
        op = msg["op"]
        if op == "ready":
            w.free_slots = int(msg.get("slots", MAX_CALLS_PER_WORKER))
            w.ready.set()
        elif op == "slots":
            w.free_slots = int(msg["free"])
            self.metrics.slots_free.labels(self.config.name, str(w.index)).set(w.free_slots)
        elif op == "park":
            self._handle_park(w, msg)
        elif op == "retrieve":
            self._handle_retrieve(w, msg)
        elif op == "answered":
            self._handle_answered(w, msg)
        elif op == "redialog":
            self._handle_redialog(w, msg)
        elif op == "ended":
            self._handle_ended(w, msg)
        elif op == "ringback_result":
            self._handle_ringback_result(w, msg)
        elif op == "takeover_result":
            self._handle_takeover_result(w, msg)
        elif op == "untrusted":
            self.metrics.untrusted_rejected.labels(self.config.pool).inc()
            log.debug("worker %d refused %s from untrusted peer %s", w.index, msg.get("what"), msg.get("peer"))
        elif op == "callback_error":
            self.metrics.callback_errors.labels(self.config.name).inc()
            log.error("worker %d callback error: %s", w.index, msg.get("error"))
        elif op == "log":
            log.log(int(msg.get("level", logging.INFO)), "worker %d: %s", w.index, msg.get("message"))
        else:
            log.warning("worker %d sent unknown op %r", w.index, op)

    def _reject(self, w: WorkerHandle, req: Any, code: int, reason: str, warning: str, **extra: Any) -> None:
        w.send("reply", req=req, action="reject", code=code, reason=reason, warning=warning, **extra)

    def _source(self, msg: Message) -> str:
        """The address a request really came from: the edge's X-Callpark-Source, else the peer.

        The header is believed only from the edge's own address (``--edge``, host and port);
        the edge removes any copy arriving from outside before adding its own.
        """
        peer = str(msg.get("peer") or "")
        origin = msg.get("origin")
        if origin and self.config.edge and peer == self.config.edge:
            candidate = str(origin).strip()
            if is_ip(candidate):
                return candidate
        return host_of(peer) if peer else "unknown"

    def retrieve_uri(self, orbit: str, park_id: str, w: WorkerHandle) -> str:
        """Lync's safe-retrieve URI: the orbit with its park id, addressed like the parker dials."""
        host = host_of(self.config.edge) if self.config.edge else w.sip(self.config.host)
        user = orbit.replace("*", "%2A").replace("#", "%23")
        return f"sip:{user}@{host};park-id={park_id}"

    def _handle_park(self, w: WorkerHandle, msg: Message, *, retried: bool = False) -> None:
        req = msg["req"]
        pool = self.config.pool
        if not self.membership.is_valid():
            self.metrics.parks.labels(pool, "fenced").inc()
            return self._reject(w, req, 503, REASON_FENCED, "park node fenced: etcd lease not renewed")
        if self.kv.unreachable():
            # Fail fast so the edge tries the next node or the backup pool at once, instead of
            # every park waiting out etcd time-outs until the lease runs out (found by the chaos
            # suite: 10 s to park again with the primary pool cut from etcd).
            self.metrics.parks.labels(pool, "etcd-unreachable").inc()
            return self._reject(w, req, 503, REASON_STATE_UNAVAILABLE, "etcd unreachable: last request failed")
        if self._draining:
            self.metrics.parks.labels(pool, "draining").inc()
            return self._reject(w, req, 503, "Park node draining", "35012 Parking server is in draining mode")
        if int(msg.get("free", w.free_slots)) < 1:
            other = self._pick_worker(need=1, exclude=w.index)
            if other is None:
                self.metrics.parks.labels(pool, "no-slot").inc()
                return self._reject(w, req, 503, "No free call slot", "no free call slot on this park node")
            self.metrics.parks.labels(pool, "redirected").inc()
            target = msg.get("target", "park")
            w.send("reply", req=req, action="redirect", contact=f"sip:{target}@{other.sip(self.config.host)}")
            return None
        target = msg.get("target") or "park"
        elsewhere = self._owner_elsewhere(None if target == "park" else str(target))
        if self.kv.unreachable():  # found out while looking for the owner
            self.metrics.parks.labels(pool, "etcd-unreachable").inc()
            return self._reject(w, req, 503, REASON_STATE_UNAVAILABLE, "etcd unreachable: owners unknown")
        if elsewhere is not None:
            self.metrics.parks.labels(pool, "redirected-to-owner").inc()
            w.send("reply", req=req, action="redirect", contact=f"sip:{target}@{elsewhere}")
            return None
        referred_by = msg.get("referred_by")
        kind = ParkKind.DIRECTED if target != "park" else (ParkKind.BLIND if referred_by else ParkKind.ATTENDED)
        dialog = Dialog(
            call_id=str(msg.get("call_id", "")),
            local_tag="",
            remote_tag=str(msg.get("remote_tag", "")),
            remote_contact=str(msg.get("contact", "")),
            remote_uri=str(msg.get("from_uri", "")),
            supports_replaces=bool(msg.get("supports_replaces", False)),
        )
        try:
            with self._alloc_lock:
                if not self.membership.is_valid() or self.kv.unreachable():
                    # went bad while this park queued behind another
                    self.metrics.parks.labels(pool, "etcd-unreachable").inc()
                    return self._reject(w, req, 503, REASON_STATE_UNAVAILABLE, "etcd unreachable while queued")
                held = self.table.allocate(
                    self._ranges,
                    target=None if target == "park" else target,
                    holder=Holder(self.config.name, w.index, w.sip(self.config.host)),
                    dialog=dialog,
                    kind=kind,
                    caller_uri=str(msg.get("from_uri", "")),
                    parker_uri=referred_by if kind != ParkKind.ATTENDED else str(msg.get("from_uri", "")),
                    timeout_s=self._settings.call_pickup_timeout_s,
                )
        except OwnershipChanged:
            if retried:
                self.metrics.parks.labels(pool, "ownership-changed").inc()
                return self._reject(w, req, 503, "Ownership changing", "range ownership is moving; retry")
            self._refresh_config(force=True)
            return self._handle_park(w, msg, retried=True)
        except NoFreeOrbit as exc:
            self.metrics.parks.labels(pool, "no-orbit").inc()
            return self._reject(w, req, 486, "No more available orbits", f"35002 No more available orbits: {exc}")
        except OrbitTaken as exc:
            self.metrics.parks.labels(pool, "orbit-taken").inc()
            return self._reject(w, req, 486, "Orbit not available", f"35006 Cannot park: {exc}")
        except Fenced:
            self.metrics.parks.labels(pool, "fenced").inc()
            return self._reject(w, req, 503, REASON_FENCED, "park node fenced: etcd lease lost")
        except StoreError as exc:
            self.metrics.parks.labels(pool, "etcd-error").inc()
            return self._reject(w, req, 503, REASON_STATE_UNAVAILABLE, f"etcd unavailable: {exc}")
        with self._lock:
            self.held[held.call.orbit] = held
            self._pending[(w.index, str(msg["call"]))] = time.perf_counter() - float(msg.get("age_s", 0.0))
        w.send(
            "reply",
            req=req,
            action="answer",
            orbit=held.call.orbit,
            park_id=held.call.park_id,
            retrieve_uri=self.retrieve_uri(held.call.orbit, held.call.park_id, w),
            music=self._settings.enable_music_on_hold,
        )
        return None

    def _handle_retrieve(self, w: WorkerHandle, msg: Message) -> None:
        req, orbit, pool = msg["req"], str(msg["orbit"]), self.config.pool
        if not self.membership.is_valid():
            self.metrics.retrievals.labels(pool, "fenced").inc()
            return self._reject(w, req, 503, REASON_FENCED, "park node fenced: etcd lease not renewed")
        if self.kv.unreachable():
            self.metrics.retrievals.labels(pool, "etcd-unreachable").inc()
            return self._reject(w, req, 503, REASON_STATE_UNAVAILABLE, "etcd unreachable: last request failed")
        source = self._source(msg)
        wait = self.scan.retry_after(source)
        if wait:
            self.metrics.retrievals.labels(pool, "scan-limited").inc()
            self.metrics.orbit_scan_rejected.labels(pool).inc()
            return self._reject(
                w,
                req,
                480,
                "Too Many Unknown Orbits",
                f"{source} dialled too many orbits where nothing is parked; retry in {wait}s",
                retry_after=wait,
            )
        try:
            held = self.table.get(orbit)
        except StoreError as exc:
            self.metrics.retrievals.labels(pool, "etcd-error").inc()
            return self._reject(w, req, 503, REASON_STATE_UNAVAILABLE, f"etcd unavailable: {exc}")
        if held is None:
            # a miss: nothing parked here (a directed park costs a token too, see ratelimit.py)
            self.scan.miss(source)
            if msg.get("referred_by") and any(r.contains(orbit) for r in self._all_ranges):
                # a directed park (a transfer to a free orbit); sent on if another pool owns it
                return self._handle_park(w, {**msg, "target": orbit})
            self.metrics.retrievals.labels(pool, "not-found").inc()
            return self._reject(w, req, 404, "Orbit not found", f"35000 Orbit not found: nothing is parked on {orbit}")
        call = held.call
        wanted = msg.get("park_id")
        if wanted and wanted != call.park_id:
            self.scan.miss(source)
            self.metrics.retrievals.labels(pool, "stale-park-id").inc()
            return self._reject(
                w, req, 404, "Parked call gone", "35010 Could not safe retrieve: another call is on the orbit"
            )
        if call.holder.node != self.config.name and call.holder.node not in self._live_nodes:
            self.metrics.retrievals.labels(pool, "holder-gone").inc()
            return self._reject(
                w, req, 480, "Parked call being taken over", f"holder {call.holder.node} is gone; retry in a moment"
            )
        if call.holder.node != self.config.name or call.holder.worker != w.index:
            self.metrics.retrievals.labels(pool, "redirected").inc()
            safe = f";park-id={wanted}" if wanted else ""  # the holder checks it again
            w.send("reply", req=req, action="redirect", contact=f"sip:{orbit}@{call.holder.sip}{safe}")
            return None
        try:
            with self._lock:
                claimed = self.table.claim(held, CallState.RETRIEVING)
                self.held[orbit] = claimed
                self._pending[(w.index, str(msg["call"]))] = time.perf_counter() - float(msg.get("age_s", 0.0))
        except (LostRace, Fenced, StoreError) as exc:
            self.metrics.retrievals.labels(pool, "lost-race").inc()
            return self._reject(w, req, 486, "Orbit busy", f"Orbit {orbit} is being retrieved or rung back ({exc})")
        self.metrics.retrievals.labels(pool, "ok").inc()
        w.send(
            "reply",
            req=req,
            action="connect",
            orbit=orbit,
            replaces=bool(call.dialog.supports_replaces and msg.get("supports_replaces")),
        )
        return None

    def _handle_answered(self, w: WorkerHandle, msg: Message) -> None:
        orbit = str(msg["orbit"])
        dialog = Dialog.from_json(msg["dialog"])
        started = self._pending.pop((w.index, str(msg.get("call"))), None)
        held = self._mutate(orbit, lambda c: replace(c, dialog=dialog))
        if started is not None:
            self.metrics.park_latency.labels(self.config.pool).observe(time.perf_counter() - started)
        self.metrics.parks.labels(self.config.pool, "ok").inc()
        if held is not None and held.call.kind != ParkKind.ATTENDED and held.call.parker_uri:
            w.send(
                "notify",
                uri=held.call.parker_uri,
                orbit=orbit,
                park_id=held.call.park_id,
                retrieve_uri=self.retrieve_uri(orbit, held.call.park_id, w),
                text=f"Parked {held.call.caller_uri} on orbit {orbit} (park id {held.call.park_id})",
            )

    def _handle_redialog(self, w: WorkerHandle, msg: Message) -> None:
        """An attended park completed: the caller replaced the parker's dialog."""
        dialog = Dialog.from_json(msg["dialog"])
        self._mutate(str(msg["orbit"]), lambda c: replace(c, dialog=dialog, caller_uri=dialog.remote_uri))

    def _handle_ended(self, w: WorkerHandle, msg: Message) -> None:
        orbit = msg.get("orbit")
        reason = str(msg.get("reason", "failed"))
        started = self._pending.pop((w.index, str(msg.get("call"))), None)
        if reason == "retrieved" and started is not None:
            self.metrics.retrieve_latency.labels(self.config.pool).observe(time.perf_counter() - started)
        if orbit is None:
            return
        with self._lock:
            held = self.held.get(str(orbit))
        if held is None or held.call.holder.worker != w.index:
            return
        outcome = END_REASONS.get(reason, Outcome.ABANDONED)
        self._free(held, outcome, reason)

    def _handle_ringback_result(self, w: WorkerHandle, msg: Message) -> None:
        orbit, result = str(msg["orbit"]), str(msg["result"])
        self.metrics.ringbacks.labels(self.config.pool, result).inc()
        if result == "answered":
            return  # the worker hands the caller over and reports ``ended rang-back``
        held = self._mutate(orbit, lambda c: replace(c, attempts=c.attempts + 1))
        if held is None:
            return
        call = held.call
        if call.attempts >= self._settings.max_call_pickup_attempts:
            uri = self._settings.on_timeout_uri
            if uri:
                self._mutate(orbit, lambda c: c.with_state(CallState.FORWARDING))
                self.metrics.timeouts.labels(self.config.pool, "forwarded").inc()
                w.send("forward", orbit=orbit, uri=uri)
            else:
                self.metrics.timeouts.labels(self.config.pool, "disconnected").inc()
                w.send("disconnect", orbit=orbit)
            return
        timeout = self._settings.call_pickup_timeout_s
        self._mutate(orbit, lambda c: replace(c, state=CallState.PARKED, deadline=time.time() + timeout))

    def _handle_takeover_result(self, w: WorkerHandle, msg: Message) -> None:
        orbit = str(msg["orbit"])
        with self._lock:
            held = self.held.get(orbit)
        if held is None:
            return
        if msg.get("ok"):
            dialog = Dialog.from_json(msg["dialog"])
            holder = Holder(self.config.name, w.index, w.sip(self.config.host))
            self._mutate(orbit, lambda c: replace(c, holder=holder, dialog=dialog, state=CallState.PARKED))
            self.metrics.takeovers.labels(self.config.pool, "ok").inc()
        else:
            self.metrics.takeovers.labels(self.config.pool, "failed").inc()
            self._lose(held, str(msg.get("reason", "takeover failed")))

    # -- record changes -------------------------------------------------------------------------

    def _mutate(self, orbit: str, change: Any) -> Held | None:
        """Apply ``change`` to the held record, re-reading once if our cached revision is stale."""
        with self._lock:
            held = self.held.get(orbit)
            for _ in range(2):
                if held is None:
                    return None
                try:
                    held = self.table.update(held, change(held.call))
                    self.held[orbit] = held
                    return held
                except LostRace:
                    held = self.table.refresh(held)
                    if held is None or held.call.holder.node != self.config.name:
                        self.held.pop(orbit, None)
                        return None
                except (Fenced, StoreError) as exc:
                    log.warning("could not update orbit %s: %s", orbit, exc)
                    return None
            return None

    def _free(self, held: Held, outcome: Outcome, detail: str) -> None:
        with self._lock:
            current = self.held.get(held.call.orbit, held)
            if self.kv.unreachable():
                # do not hold up this worker's next requests with a write that will time out
                self._pending_free[held.call.orbit] = (held.call.park_id, outcome, detail)
                return
            for _ in range(2):
                try:
                    self.table.free(current, outcome, detail)
                    break
                except LostRace:
                    refreshed = self.table.refresh(current)
                    if refreshed is None or refreshed.call.holder.node != self.config.name:
                        # gone, or taken over by another node: never free what is not ours
                        self.held.pop(held.call.orbit, None)
                        return
                    current = refreshed
                except (Fenced, StoreError) as exc:
                    # The call is over; retry recording it every cycle (found by the chaos suite:
                    # a free lost to etcd quorum loss left the orbit parked, then rang back).
                    log.warning("could not free orbit %s (will retry): %s", held.call.orbit, exc)
                    self._pending_free[held.call.orbit] = (held.call.park_id, outcome, detail)
                    return
            self.held.pop(held.call.orbit, None)
            self._pending_free.pop(held.call.orbit, None)
        self.metrics.ended.labels(self.config.pool, outcome.value).inc()

    def _retry_frees(self) -> None:
        """Record the ends of calls whose free failed (etcd unreachable or indeterminate)."""
        if not self._pending_free or not self.membership.is_valid() or self.kv.unreachable():
            return
        for orbit, (park_id, outcome, detail) in list(self._pending_free.items()):
            with self._lock:
                held = self.held.get(orbit)
            try:
                current = self.table.refresh(held) if held is not None else None
            except StoreError:
                return
            if (
                held is None
                or current is None
                or current.call.park_id != park_id
                or current.call.holder.node != self.config.name  # taken over: never free what is not ours
            ):
                with self._lock:  # already recorded (an indeterminate txn that applied) or not ours
                    self._pending_free.pop(orbit, None)
                    if held is not None and held.call.park_id == park_id:
                        self.held.pop(orbit, None)
                continue
            with self._lock:
                self.held[orbit] = current
            self._free(current, outcome, detail)

    def _lose_orphan(self, held: Held, reason: str) -> None:
        """Record an orphan we cannot take over as lost: claim it first, so exactly one node does."""
        me = Holder(self.config.name, 0, self.workers[0].sip(self.config.host) if self.workers else "")
        try:
            claimed = self.table.take_over(held, me, timeout_s=self._settings.call_pickup_timeout_s)
        except (LostRace, Fenced, StoreError):
            return
        with self._lock:
            self.held[claimed.call.orbit] = claimed
        self._lose(claimed, reason)

    def _lose(self, held: Held, reason: str) -> None:
        log.warning("parked call on orbit %s lost: %s", held.call.orbit, reason)
        self.metrics.lost.labels(self.config.pool, reason.split(":")[0][:40]).inc()
        self._free(held, Outcome.LOST, reason)

    # -- the loop ---------------------------------------------------------------------------------

    def _cycle(self) -> None:
        self._check_workers()
        self._refresh_config()
        self._scan()
        self._retry_frees()
        self._fire_deadlines()
        now = time.monotonic()
        if now - self._last_prune > 60:
            self._last_prune = now
            try:
                self.table.prune_history()
            except StoreError as exc:
                log.debug("history prune skipped: %s", exc)
        self.membership.update(**self._member_info(ready=self.ready()[0]))
        self.metrics.parked_calls.labels(self.config.pool, self.config.name).set(len(self.held))
        self.metrics.lease_remaining.labels(self.config.name).set(self.membership.remaining_s())
        self.metrics.ready.labels(self.config.pool, self.config.name).set(1 if self.ready()[0] else 0)
        self.metrics.workers_up.labels(self.config.name).set(sum(1 for w in self.workers if w.ready.is_set()))
        self.metrics.orbit_scan_sources.labels(self.config.name).set(len(self.scan))

    def _fire_deadlines(self) -> None:
        if not self.membership.is_valid():
            return
        now = time.time()
        with self._lock:
            due = [
                h
                for h in self.held.values()
                if h.call.state == CallState.PARKED
                and h.call.deadline <= now
                and h.call.orbit not in self._pending_free
            ]
        for held in due:
            handle = self.workers[held.call.holder.worker] if held.call.holder.worker < len(self.workers) else None
            if handle is None or not handle.ready.is_set():
                continue
            try:
                with self._lock:
                    claimed = self.table.claim(held, CallState.RINGING)
                    self.held[held.call.orbit] = claimed
            except (LostRace, Fenced, StoreError) as exc:
                log.info("ringback for orbit %s skipped: %s", held.call.orbit, exc)
                continue
            if not claimed.call.parker_uri:
                self._handle_ringback_result(handle, {"orbit": held.call.orbit, "result": "failed"})
                continue
            handle.send(
                "ringback",
                orbit=held.call.orbit,
                parker_uri=claimed.call.parker_uri,
                ring_time_s=self.config.ring_time_s,
            )

    def _refresh_config(self, force: bool = False) -> None:
        with self._config_lock:
            self._refresh_config_locked(force)

    def _refresh_config_locked(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_refresh < CONFIG_REFRESH_S:
            return
        self._last_refresh = now
        try:
            state = self.admin.state()
        except (StoreError, CallparkError) as exc:
            if force and not self.workers:
                raise
            log.warning("configuration refresh failed: %s", exc)
            return
        if self.config.pool not in state.pools:
            if force and not self.workers:
                raise CallparkError(f"pool {self.config.pool!r} does not exist (create it with 'callpark pool new')")
            log.error("pool %s no longer exists", self.config.pool)
            self._ranges = []
            return
        owners = self._read_owners()
        if owners is not None:
            self.table.owners = owners
        mine = []
        for rng in state.ranges.values():
            owner_pool = self._owner_pool.get(rng.name, rng.pool)
            if rng.type == RangeType.CALL_PARK and owner_pool == self.config.pool:
                mine.append(rng)
        self._ranges = sorted(mine, key=lambda r: r.name)
        self._all_ranges = [r for r in state.ranges.values() if r.type == RangeType.CALL_PARK]
        self._settings = state.effective(self.config.pool)[1]
        meta = state.moh.get(self.config.pool)
        sha = meta.sha256 if meta else None
        if sha != self._music_sha:
            try:
                _, data = mohstore.fetch(self.admin, self.config.pool)
            except StoreDataError as exc:  # chunks missing or not matching: keep the music we play
                self.decoder.report(RecordKind.CONFIG, exc.key, 0, exc.problem)
                data = b""
            if data:
                path = self.config.run_dir / f"moh-{sha or 'default'}.wav"
                path.write_bytes(data)
                self._music_sha, self._music_path = sha, path
                for handle in self.workers:
                    handle.send("music", path=str(path))
        taken = {o for o in self.held}
        self.metrics.free_orbits.clear()  # only the ranges our pool serves now
        self.metrics.range_orbits.clear()
        for rng in self._ranges:
            self.metrics.range_orbits.labels(self.config.pool, rng.name).set(rng.size)
            try:
                used = sum(
                    1 for k in self.kv.get_prefix("/callpark/v1/parked/").entries if rng.contains(k.rsplit("/", 1)[1])
                )
            except StoreError:
                used = sum(1 for o in taken if rng.contains(o))
            self.metrics.free_orbits.labels(self.config.pool, rng.name).set(rng.size - used)

    def _owner_elsewhere(self, orbit: str | None) -> str | None:
        """A worker (host:port) of the pool that owns what this park needs, when not us.

        After a failover a pool's nodes may still receive its park and orbit requests
        (the edge routes by home pool); they send them on to the owning pool.
        """
        needs_other = not self._ranges if orbit is None else not any(r.contains(orbit) for r in self._ranges)
        if needs_other:
            # before sending a park away, make sure our view of ownership is current
            self._refresh_owners()
            if not self.kv.unreachable():
                self._refresh_config(force=True)
        if orbit is None:
            if self._ranges:
                return None
            owner = next(iter(sorted(set(self._owner_pool.values()) - {self.config.pool})), None)
        else:
            rng = next((r for r in self._all_ranges if r.contains(orbit)), None)
            if rng is None or any(r.name == rng.name for r in self._ranges):
                return None
            owner = self._owner_pool.get(rng.name, rng.pool)
        if owner is None or owner == self.config.pool:
            return None
        try:
            members = self.kv.get_prefix(f"{Keys.MEMBERS}{owner}/").entries
        except StoreError:
            return None
        best: tuple[int, str] | None = None
        for member in parse_members(members, self.decoder).get(owner, []):
            if not member.ready or member.draining:
                continue
            for worker in member.info.get("workers", []):
                free = int(worker.get("free", 0))
                if free >= 2 and (best is None or free > best[0]):
                    best = (free, str(worker["sip"]))
        return None if best is None else best[1]

    def _refresh_owners(self) -> bool:
        """Re-read owner records; True when any changed since the last read."""
        before = dict(self.table.owners)
        owners = self._read_owners()
        if owners is None:
            return False
        self.table.owners = owners
        return owners != before

    def _read_owners(self) -> dict[str, tuple[int, int, str]] | None:
        try:
            entries = self.kv.get_prefix(Keys.OWNERS).entries
        except StoreError as exc:
            log.warning("could not read range owners: %s", exc)
            return None
        owners: dict[str, tuple[int, int, str]] = {}
        pools: dict[str, str] = {}
        for entry in entries.values():
            owner = self.decoder.decode(
                RecordKind.OWNER, entry, functools.partial(Owner.from_entry, mod_revision=entry.mod_revision)
            )
            if owner is not None:
                owners[owner.range] = (owner.mod_revision, owner.epoch, owner.pool)
                pools[owner.range] = owner.pool
        self._owner_pool = pools
        return owners

    def _scan(self) -> None:
        """Take over calls whose holder is gone or draining, on ranges our pool owns; drain."""
        now = time.monotonic()
        if now - self._last_scan < SCAN_S:
            return
        self._last_scan = now
        try:
            members = self.kv.get_prefix(Keys.MEMBERS).entries
            drain = self.kv.get(Keys.DRAIN + f"{self.config.pool}/{self.config.name}")
            parked = self.table.all_parked()
        except StoreError as exc:
            log.debug("takeover scan skipped: %s", exc)
            return
        self._draining = drain is not None and self.decoder.decode(RecordKind.DRAIN, drain, parse_stamp) is not None
        if self._refresh_owners():
            self._last_refresh = 0.0  # ownership moved: recompute our ranges now
        live = {m.node: m.draining for ms in parse_members(members, self.decoder).values() for m in ms}
        self._live_nodes = live
        if self._draining or not self.membership.is_valid():
            return
        owned = {r.name for r in self._ranges}
        for held in parked:
            call = held.call
            holder = call.holder.node
            if holder == self.config.name or call.range not in owned:
                continue
            if holder in live and not live[holder]:
                continue  # alive and not draining: it keeps its calls
            if not call.dialog.supports_replaces:
                self._lose_orphan(held, "caller without Replaces support")
                continue
            target = self._pick_worker(need=1)
            if target is None:
                log.warning("cannot take over orbit %s: no free worker slot", call.orbit)
                return
            try:
                claimed = self.table.take_over(
                    held,
                    Holder(self.config.name, target.index, target.sip(self.config.host)),
                    timeout_s=self._settings.call_pickup_timeout_s,
                )
            except (LostRace, Fenced, StoreError) as exc:
                log.info("orbit %s not taken over here: %s", call.orbit, exc)
                continue
            why = "draining" if holder in live else "gone"
            log.warning("taking over orbit %s from %s (%s) on worker %d", call.orbit, holder, why, target.index)
            with self._lock:
                self.held[call.orbit] = claimed
            target.free_slots -= 1
            target.send(
                "takeover",
                orbit=call.orbit,
                park_id=call.park_id,
                dialog=_dialog_json(call.dialog),
                music=self._settings.enable_music_on_hold,
            )

    def _recover_own_calls(self) -> None:
        """After a restart: records that still name this node are ours to take over."""
        try:
            mine = [h for h in self.table.all_parked() if h.call.holder.node == self.config.name]
        except StoreError as exc:
            log.warning("could not read parked calls: %s", exc)
            return
        for held in mine:
            with self._lock:
                self.held[held.call.orbit] = held
            self._take_over(held)

    def _on_rejoin(self) -> None:
        """Our lease expired and we re-registered: drop calls that now name another holder."""
        self.table.lease = self.membership.lease
        with self._lock:
            for orbit, held in list(self.held.items()):
                try:
                    current = self.table.refresh(held)
                except StoreError:
                    continue
                if current is None or current.call.holder != held.call.holder:
                    log.warning("orbit %s now belongs to another holder; releasing it locally", orbit)
                    self.held.pop(orbit, None)
                    if 0 <= held.call.holder.worker < len(self.workers):
                        self.workers[held.call.holder.worker].send("release", orbit=orbit)

    def _member_info(self, *, ready: bool) -> dict[str, Any]:
        return {
            "ready": ready,
            "draining": self._draining,
            "parked": len(self.held),
            "http": f"{self.config.host}:{self.http.port if self.http else 0}",
            "workers": [{"index": w.index, "sip": w.sip(self.config.host), "free": w.free_slots} for w in self.workers],
            "pid": os.getpid(),
        }


def _dialog_json(dialog: Dialog) -> dict[str, Any]:
    return {
        "call_id": dialog.call_id,
        "local_tag": dialog.local_tag,
        "remote_tag": dialog.remote_tag,
        "remote_contact": dialog.remote_contact,
        "remote_uri": dialog.remote_uri,
        "supports_replaces": dialog.supports_replaces,
    }


__all__ = ["NodeConfig", "ParkedCall", "Supervisor"]
