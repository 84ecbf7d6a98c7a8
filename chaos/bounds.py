"""Every deadline of a chaos run, derived from the cluster's configured timings.

Nothing here is tuned to a quiet machine: each bound is a sum of the configured timings that
the awaited thing depends on (lease TTL, keepalive, etcd request time-out, controller loop,
grace and TTL, ring time), plus :data:`PROCESS_START_S` where a process must start. The
numbers are in seconds *before* ``CALLPARK_TIMEOUT_MULTIPLIER``: :func:`callpark.waiting.wait_until`
applies it, and :meth:`Bounds.scaled` does for the waits that are not ``wait_until``.
"""

from __future__ import annotations

from dataclasses import dataclass

from callpark.deployment import Timings
from callpark.waiting import timeout_multiplier

# Starting a park node (spawning its pjsua2 workers), a controller or an etcd member: no
# configured timing covers it. Measured 3-5 s on a quiet 2-core machine; three times that.
PROCESS_START_S = 15.0
ETCD_ELECTION_S = 1.0  # --election-timeout of the local etcd members (callpark/lab/etcd.py)


@dataclass(frozen=True)
class Bounds:
    """Deadlines for one cluster's timings."""

    t: Timings

    @staticmethod
    def scaled(seconds: float) -> float:
        return seconds * timeout_multiplier()

    @property
    def lease_expiry_s(self) -> float:
        """A silent node's lease is gone: its TTL, one keepalive it may just have sent, one etcd round."""
        return self.t.lease_ttl_s + self.t.keepalive_s + self.t.etcd_timeout_s

    @property
    def leader_s(self) -> float:
        """A controller leads again after its leader died: the leader key's TTL, then a campaign."""
        t = self.t
        return t.controller_ttl_s + t.controller_grace_s + 2 * t.controller_loop_s + t.etcd_timeout_s

    @property
    def failover_s(self) -> float:
        """A dead pool's ranges move: its leases expire, the controller waits its grace and acts."""
        return self.lease_expiry_s + self.leader_s

    @property
    def etcd_s(self) -> float:
        """etcd elects a leader and answers again (two elections: one may split)."""
        return 2 * ETCD_ELECTION_S + 2 * self.t.etcd_timeout_s

    @property
    def whole_s(self) -> float:
        """After a heal, everything is whole again: a process restarted, etcd healthy, stale member
        keys expired, a controller leading, every node rejoined and ready (its store's retries and
        fail-fast windows included), and the ranges moved back."""
        rejoin = 4 * (self.t.etcd_timeout_s + self.t.keepalive_s)
        return PROCESS_START_S + self.etcd_s + self.failover_s + self.lease_expiry_s + rejoin

    @property
    def worker_respawn_s(self) -> float:
        """A killed worker is replaced (the supervisor's loop notices and spawns one)."""
        return PROCESS_START_S + 2 * self.t.keepalive_s

    @property
    def call_settle_s(self) -> float:
        """A parked call ends once nothing holds it up: a takeover, one ringback, one write retried."""
        return self.failover_s + self.t.ring_time_s + 4 * self.t.etcd_timeout_s

    def proof_s(self, window_s: float) -> float:
        """How long a fault may take to show its effect before it counts as not happened."""
        return window_s + self.failover_s + self.t.etcd_timeout_s
