"""The node's member key, bound to the node's etcd lease (a :class:`LeaseSession`).

A node serves (parks, retrieves, writes) only while ``is_valid()``: the session's
self-fencing deadline (:mod:`callpark.store.session`) makes the node stop before etcd can
expire its lease and hand its calls to another node.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from callpark.errors import CallparkError, StoreError
from callpark.store.kv import KV, Compare, Put, absent
from callpark.store.records import member_bytes
from callpark.store.schema import Keys
from callpark.store.session import LeaseSession, LeaseTimings

log = logging.getLogger(__name__)


class DuplicateNode(CallparkError):
    """Another live process already registered this node name (split-brain guard)."""


class Membership:
    """Holds ``members/<pool>/<node>`` bound to a lease that a thread keeps alive."""

    def __init__(
        self,
        kv: KV,
        *,
        pool: str,
        node: str,
        timings: LeaseTimings,
        on_rejoin: Callable[[], None] | None = None,
        on_renew: Callable[[float], None] | None = None,
    ) -> None:
        self.kv = kv
        self.pool = pool
        self.node = node
        self.timings = timings.validate()
        self.key = Keys.member(pool, node)
        self.session = LeaseSession(kv, ttl_s=timings.ttl_s, safety_s=timings.safety_s)
        self._info: dict[str, Any] = {}
        self._published: dict[str, Any] | None = None  # what the member key holds, as far as we know
        self._lock = threading.Lock()
        self._on_rejoin = on_rejoin
        self._on_renew = on_renew
        self.renewals = 0
        self.rejoins = 0

    @property
    def lease(self) -> int:
        """The node's lease id (0 before :meth:`join`)."""
        return self.session.lease

    def is_valid(self) -> bool:
        """True while the node may serve (its self-fencing deadline has not passed)."""
        return self.session.is_valid()

    def remaining_s(self) -> float:
        """Seconds of validity left."""
        return self.session.remaining_s()

    def join(self, info: dict[str, Any]) -> None:
        """Grant a lease and create the member key; refuse if the name is live elsewhere."""
        self._info = dict(info)
        sent = time.monotonic()
        lease = self.session.grant()
        result = self.kv.txn([absent(self.key)], [Put(self.key, self._encode(), lease=lease)])
        if not result.succeeded:
            self.session.revoke(lease)
            raise DuplicateNode(
                f"node {self.node!r} is already registered in pool {self.pool!r} by a live process; "
                "pick another --name or stop the other node"
            )
        with self._lock:
            self._published = dict(self._info)
        self.session.bind(lease, sent)

    def start(self) -> None:
        """Start keeping the lease alive (re-registering if it expires)."""
        self.session.keep_alive(self.timings.keepalive_s, on_renewed=self._renewed, on_expired=self._rejoin)

    def update(self, **info: Any) -> None:
        """Change fields of the member key (slots, ready); a no-op when etcd already has them.

        A write that fails is retried by the next call (found by the chaos suite: a node whose
        "ready" update timed out right after a partition healed stayed not-ready for good).
        """
        with self._lock:
            self._info = {**self._info, **info}
            if self._info == self._published:
                return
            lease, wanted = self.lease, dict(self._info)
        try:
            result = self.kv.txn(
                [Compare(self.key, "lease", "==", lease)], [Put(self.key, self._encode(), lease=lease)]
            )
        except StoreError as exc:
            log.warning("could not update member key: %s", exc)
            return
        if result.succeeded:
            with self._lock:
                self._published = wanted

    def stop(self, *, revoke: bool = True) -> None:
        """Stop the keepalive and (by default) revoke the lease, which deletes the member key."""
        self.session.stop(self.timings.request_timeout_s * 3)
        if revoke and self.lease:
            try:
                self.session.revoke()
            except StoreError as exc:
                log.warning("could not revoke lease: %s", exc)

    def _encode(self) -> bytes:
        return member_bytes(self.pool, self.node, self._info)

    def _renewed(self, round_trip_s: float) -> None:
        self.renewals += 1
        if self._on_renew is not None:
            self._on_renew(round_trip_s)

    def _rejoin(self) -> None:
        log.warning("lease %x expired; re-registering node %s", self.lease, self.node)
        try:
            self.join(self._info)
            self.rejoins += 1
            if self._on_rejoin is not None:
                self._on_rejoin()
        except (StoreError, DuplicateNode) as exc:
            log.warning("re-registration failed: %s", exc)
