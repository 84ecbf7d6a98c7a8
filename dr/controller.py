"""The failover controller: leader-elected, one decision per cycle from one snapshot.

Each cycle reads one consistent snapshot (one etcd revision), decides, acts and
returns one sentence saying what it did and why (logged, and the oracle of the unit
tests). Ownership of orbit ranges changes only here, each move one transaction
guarded by the leader's token and the owner keys' revisions (epoch + 1), with an
event recorded in the same transaction.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from callpark.dr.leader import Leadership
from callpark.errors import CallparkError, StoreError
from callpark.model.pools import FailbackPolicy
from callpark.store.expiry import EVENTS_BUCKET_S, EVENTS_KEEP_S, BucketLeases
from callpark.store.kv import KV, Compare, Delete, Op, Put, unchanged
from callpark.store.ownership import DrSnapshot, read_snapshot
from callpark.store.records import Owner, RecordDecoder, Request, move_event_bytes, refusal_event_bytes, request_bytes
from callpark.store.schema import Keys
from callpark.store.session import ControllerTimings

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ControllerConfig(ControllerTimings):
    """A named controller's timings (:class:`ControllerTimings`), validated together at start-up."""

    name: str


class ControllerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.leader = Gauge("callpark_controller_leader", "1 when this controller leads", ["name"], registry=r)
        self.pool_up = Gauge("callpark_pool_up", "1 when the pool has a ready member", ["pool"], registry=r)
        self.range_epoch = Gauge("callpark_range_owner_epoch", "Epoch of a range's owner", ["range"], registry=r)
        self.range_owner = Gauge(
            "callpark_range_owner", "1 for the pool that owns a range", ["range", "pool"], registry=r
        )
        self.failovers = Counter("callpark_failovers_total", "Ownership moves by kind", ["kind", "pool"], registry=r)
        self.failover_duration = Histogram(
            "callpark_failover_duration_seconds",
            "From a pool first seen down to its ranges moved",
            buckets=(0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60),
            registry=r,
        )
        self.cycles = Counter("callpark_controller_cycles_total", "Controller cycles", ["name", "role"], registry=r)
        self.errors = Counter("callpark_controller_errors_total", "Failed cycles", ["name", "kind"], registry=r)
        self.loop = Histogram("callpark_controller_loop_seconds", "Duration of one cycle", ["name"], registry=r)
        self.parked = Gauge("callpark_parked_calls_by_owner", "Parked calls per owning pool", ["pool"], registry=r)


@dataclass
class Controller:
    """One controller instance; ``run()`` loops until ``stop()``."""

    kv: KV
    config: ControllerConfig
    metrics: ControllerMetrics = field(default_factory=ControllerMetrics)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.config.validate()
        self.leadership = Leadership(self.kv, self.config.name, ttl_s=self.config.ttl_s, safety_s=self.config.safety_s)
        self._down_since: dict[str, float] = {}
        self._up_since: dict[str, float] = {}
        self._stop = threading.Event()
        self.last_sentence = ""
        self.last_cycle = time.monotonic()
        self.decoder = RecordDecoder(self.metrics.registry)  # malformed records: reported, skipped
        # events/ records expire by themselves after about a week (callpark.store.expiry)
        self.event_leases = BucketLeases(self.kv, keep_s=EVENTS_KEEP_S, bucket_s=EVENTS_BUCKET_S)

    # -- loop ------------------------------------------------------------------------------

    def run(self) -> None:
        next_run = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            self.last_cycle = started
            sentence = self.safe_cycle()
            if sentence != self.last_sentence:
                log.info("%s", sentence)
                self.last_sentence = sentence
            self.metrics.loop.labels(self.config.name).observe(time.monotonic() - started)
            next_run += self.config.loop_s
            delay = next_run - time.monotonic()
            if delay < 0:
                log.warning("controller loop time exceeded by %.2fs, rescheduling immediately", -delay)
                next_run = time.monotonic()
                delay = 0
            self._stop.wait(delay)
        self.leadership.resign()
        self.metrics.leader.labels(self.config.name).set(0)

    def stop(self) -> None:
        self._stop.set()

    def safe_cycle(self) -> str:
        try:
            return self.run_cycle()
        except StoreError as exc:
            self.metrics.errors.labels(self.config.name, "etcd").inc()
            return f"controller {self.config.name}: etcd unavailable ({exc}); nothing done"
        except Exception:
            self.metrics.errors.labels(self.config.name, "bug").inc()
            log.exception("controller cycle failed")
            return "Unexpected exception raised, please report it as a BUG"

    def run_cycle(self) -> str:
        """One decision: campaign or renew, read a snapshot, act, say what happened."""
        name = self.config.name
        if self.leadership.is_leader():
            self.leadership.renew()
        if not self.leadership.is_leader() and not self.leadership.campaign():
            self.metrics.leader.labels(name).set(0)
            for gauge in (
                self.metrics.pool_up,
                self.metrics.range_owner,
                self.metrics.range_epoch,
                self.metrics.parked,
            ):
                gauge.clear()  # a standby's view would be stale: only the leader exports it
            self.metrics.cycles.labels(name, "standby").inc()
            self._down_since.clear()
            self._up_since.clear()
            snap = read_snapshot(self.kv, self.decoder)
            leader = (snap.leader or {}).get("name", "nobody")
            return f"standby {name}: {leader} leads (token {(snap.leader or {}).get('token', '-')}); no action"
        self.metrics.leader.labels(name).set(1)
        self.metrics.cycles.labels(name, "leader").inc()
        snap = read_snapshot(self.kv, self.decoder)
        now = self.clock()
        health = self._track_health(snap, now)
        self._export(snap, health)
        head = f"leader {name} (token {self.leadership.token})"
        for act in (self._init_owners, self._serve_requests, self._re_home, self._fail_over, self._fail_back):
            said = act(snap, health, now)
            if said:
                return f"{head}: {said}"
        up = ", ".join(f"{p} {'up' if ok else 'DOWN'}" for p, ok in sorted(health.items()))
        return f"{head}: pools {up or '(none)'}; no action"

    # -- decisions ---------------------------------------------------------------------------

    def _track_health(self, snap: DrSnapshot, now: float) -> dict[str, bool]:
        health = {}
        for pool in snap.config.pools:
            up = bool(snap.ready_members(pool))
            health[pool] = up
            if up:
                self._down_since.pop(pool, None)
                self._up_since.setdefault(pool, now)
            else:
                self._up_since.pop(pool, None)
                self._down_since.setdefault(pool, now)
        return health

    def _init_owners(self, snap: DrSnapshot, health: dict[str, bool], now: float) -> str | None:
        missing = sorted(r for r in snap.config.ranges if r not in snap.owners)
        stale = sorted(r for r in snap.owners if r not in snap.config.ranges)
        if not missing and not stale:
            return None
        ops: list[Op] = [
            Put(
                Keys.owner(r),
                Owner(r, home := snap.config.ranges[r].pool, 1, reason="initial: home pool", home=home).to_bytes(),
            )
            for r in missing
        ]
        ops += [Delete(Keys.owner(r)) for r in stale]
        compares = [unchanged(Keys.owner(r), 0) for r in missing]
        compares += [unchanged(Keys.owner(r), snap.owners[r].mod_revision) for r in stale]
        if not self._commit(compares, ops):
            return "owner initialisation lost a race; retrying next cycle"
        parts = []
        if missing:
            parts.append(f"assigned {len(missing)} new range(s) to their home pools ({', '.join(missing)})")
        if stale:
            parts.append(f"dropped owners of removed range(s) {', '.join(stale)}")
        return "; ".join(parts)

    def _serve_requests(self, snap: DrSnapshot, health: dict[str, bool], now: float) -> str | None:
        for req in sorted(snap.requests, key=lambda r: r.mod_revision):
            pool = snap.config.pools.get(req.pool)
            if pool is None or pool.backup is None or req.action not in ("failover", "failback"):
                why = f"pool {req.pool!r} does not exist or has no backup, or action {req.action!r} is unknown"
                self._refuse(req, why)
                return f"refused request {req.action} {req.pool}: {why}"
            if req.action == "failover":
                ranges = snap.ranges_owned_by(req.pool)
                target = pool.backup
                if not health.get(target):
                    self._refuse(req, f"backup pool {target} has no ready member")
                    return f"refused planned failover of {req.pool}: backup {target} has no ready member"
                return self._move(snap, ranges, target, "planned-failover", req.pool, "operator request", req)
            ranges = sorted(
                r for r, rng in snap.config.ranges.items() if rng.pool == req.pool and snap.owner_of(r) != req.pool
            )
            if not health.get(req.pool):
                self._refuse(req, f"pool {req.pool} has no ready member")
                return f"refused failback of {req.pool}: it has no ready member"
            return self._move(snap, ranges, req.pool, "failback", req.pool, "operator request", req)
        return None

    def _re_home(self, snap: DrSnapshot, health: dict[str, bool], now: float) -> str | None:
        """Ranges whose home pool changed (``orbit set --pool``) move to the new home.

        To the new home when it has a ready node, else to its backup (the failback rule then
        brings them home); calls already parked stay with their holders, as after a failback.
        """
        moved: dict[str, list[str]] = {}
        for r, rng in sorted(snap.config.ranges.items()):
            owner = snap.owners.get(r)
            then = owner.home_when_written() if owner else None
            if then is not None and then != rng.pool:
                moved.setdefault(rng.pool, []).append(r)
        for home, ranges in sorted(moved.items()):
            backup = snap.config.pools[home].backup if home in snap.config.pools else None
            target = home if health.get(home) else backup if backup and health.get(backup) else None
            if target is None:
                return f"re-home of {', '.join(ranges)} to {home} waits: {home} and its backup have no ready member"
            why = f"home pool of {', '.join(ranges)} changed to {home}"
            return self._move(snap, ranges, target, "re-home", home, why, None)
        return None

    def _fail_over(self, snap: DrSnapshot, health: dict[str, bool], now: float) -> str | None:
        for name, pool in sorted(snap.config.pools.items()):
            since = self._down_since.get(name)
            owned = snap.ranges_owned_by(name)
            if since is None or not owned or now - since < self.config.grace_s:
                continue
            if pool.backup is None:
                return f"pool {name} is down and has no backup pool; its ranges stay unserved"
            if not health.get(pool.backup):
                return f"pool {name} is down and its backup {pool.backup} is down too; no failover possible"
            why = f"pool {name} has had no ready member for {now - since:.1f}s (grace {self.config.grace_s:.1f}s)"
            said = self._move(snap, owned, pool.backup, "failover", name, why, None)
            self.metrics.failover_duration.observe(now - since)
            return said
        return None

    def _fail_back(self, snap: DrSnapshot, health: dict[str, bool], now: float) -> str | None:
        for name, pool in sorted(snap.config.pools.items()):
            if pool.failback != FailbackPolicy.AUTO:
                continue
            up_since = self._up_since.get(name)
            away = sorted(r for r, rng in snap.config.ranges.items() if rng.pool == name and snap.owner_of(r) != name)
            if not away or up_since is None or now - up_since < pool.failback_hold_down_s:
                continue
            why = f"pool {name} healthy for {now - up_since:.0f}s (hold-down {pool.failback_hold_down_s}s)"
            return self._move(snap, away, name, "failback", name, why, None)
        return None

    # -- actions -------------------------------------------------------------------------------

    def _move(
        self, snap: DrSnapshot, ranges: list[str], to_pool: str, kind: str, pool: str, why: str, req: Request | None
    ) -> str:
        if not ranges:
            if req is not None:
                self._refuse(req, "nothing to move")
            return f"{kind} of {pool}: nothing to move ({why})"
        compares = [self.leadership.guard()]
        ops: list[Op] = []
        epochs = {}
        for r in ranges:
            current = snap.owners.get(r)
            epoch = (current.epoch if current else 1) + 1
            epochs[r] = epoch
            compares.append(unchanged(Keys.owner(r), current.mod_revision if current else 0))
            home = snap.config.ranges[r].pool
            ops.append(Put(Keys.owner(r), Owner(r, to_pool, epoch, reason=f"{kind}: {why}", home=home).to_bytes()))
        parked = sum(1 for c in snap.parked if c.range in ranges)
        event = move_event_bytes(
            kind,
            pool=pool,
            to=to_pool,
            ranges=ranges,
            epochs=epochs,
            parked_calls=parked,
            why=why,
            leader=self.config.name,
            token=self.leadership.token,
            request=req.key if req else None,
            at=time.time(),
        )
        ops.append(self._event_put(event))
        if req is not None:
            compares.append(unchanged(req.key, req.mod_revision))
            ops.append(Delete(req.key))
        if not self._commit(compares, ops):
            return f"{kind} of {pool} lost a race (leadership or owners changed); retrying next cycle"
        self.metrics.failovers.labels(kind, pool).inc()
        moved = f"moved {', '.join(ranges)} to {to_pool} (epochs {sorted(set(epochs.values()))})"
        return f"{kind}: {moved}; {why}; {parked} parked call(s) to take over"

    def _refuse(self, req: Request, why: str) -> None:
        event = refusal_event_bytes(
            pool=req.pool, action=req.action, why=why, leader=self.config.name, request=req.key, at=time.time()
        )
        self._commit(
            [self.leadership.guard(), unchanged(req.key, req.mod_revision)],
            [Delete(req.key), self._event_put(event)],
        )

    def _event_put(self, event: bytes) -> Put:
        """The write of an ``events/`` record under the current event lease.

        A failed lease grant must not hold up a failover: the event is then written without
        a lease (kept until an operator prunes it) and the grant is tried again next time.
        """
        try:
            lease = self.event_leases.lease()
        except StoreError as exc:
            log.warning("event lease unavailable (%s); recording the event without expiry", exc)
            lease = 0
        return Put(_event_key(), event, lease=lease)

    def _commit(self, compares: list[Compare], ops: list[Op]) -> bool:
        if self.leadership.token and self.leadership.guard() not in compares:
            compares = [self.leadership.guard(), *compares]
        try:
            return self.kv.txn(compares, ops).succeeded
        except StoreError:
            self.event_leases.forget()  # a lease etcd no longer has fails the whole txn; grant anew
            raise

    def _export(self, snap: DrSnapshot, health: dict[str, bool]) -> None:
        for pool, up in health.items():
            self.metrics.pool_up.labels(pool).set(1 if up else 0)
        for r in snap.config.ranges:
            owner = snap.owners.get(r)
            self.metrics.range_epoch.labels(r).set(owner.epoch if owner else 0)
            for pool in snap.config.pools:
                self.metrics.range_owner.labels(r, pool).set(1 if snap.owner_of(r) == pool else 0)
        for pool in snap.config.pools:
            self.metrics.parked.labels(pool).set(sum(1 for c in snap.parked if snap.owner_of(c.range) == pool))

    def status(self) -> dict[str, Any]:
        return {
            "name": self.config.name,
            "leader": self.leadership.is_leader(),
            "token": self.leadership.token,
            "last": self.last_sentence,
        }


def request(kv: KV, action: str, pool: str) -> str:
    """Ask the leader for a planned failover or a failback; returns the request key."""
    if action not in ("failover", "failback"):
        raise CallparkError(f"unknown DR action {action!r}")
    key = Keys.request(time.time_ns(), action, pool)
    kv.txn([], [Put(key, request_bytes(action, pool, time.time()))])
    return key


def _event_key() -> str:
    return Keys.event(time.time_ns(), uuid.uuid4().hex[:6])
