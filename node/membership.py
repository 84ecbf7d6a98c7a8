"""The node's etcd lease and member key, with a local monotonic self-fencing deadline.

A node serves (parks, retrieves, writes) only while ``is_valid()``: the deadline is
the send time of the last successful keepalive plus TTL minus a safety margin, so
the node stops before etcd can expire its lease and hand its calls to another node.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from callpark.errors import CallparkError, StoreError, ValidationError
from callpark.store.etcd import Keys
from callpark.store.kv import KV, Compare, Put, absent

log = logging.getLogger(__name__)


class DuplicateNode(CallparkError):
    """Another live process already registered this node name (split-brain guard)."""


@dataclass(frozen=True)
class LeaseTimings:
    """Lease TTL, keepalive interval and safety margin, validated together."""

    ttl_s: int = 10
    keepalive_s: float = 2.0
    safety_s: float = 2.0
    request_timeout_s: float = 1.0

    def validate(self) -> LeaseTimings:
        if self.ttl_s < 3:
            raise ValidationError("timing-ttl", f"lease TTL {self.ttl_s}s is below etcd's practical minimum of 3s")
        if self.keepalive_s <= 0 or self.safety_s <= 0 or self.request_timeout_s <= 0:
            raise ValidationError("timing-positive", "keepalive, safety margin and request timeout must be > 0")
        if self.safety_s < self.request_timeout_s:
            raise ValidationError(
                "timing-safety",
                f"safety margin {self.safety_s}s must cover one etcd request ({self.request_timeout_s}s)",
            )
        if 2 * self.keepalive_s + self.request_timeout_s + self.safety_s > self.ttl_s:
            raise ValidationError(
                "timing-keepalive",
                f"two keepalives ({2 * self.keepalive_s}s) plus a request ({self.request_timeout_s}s) plus the "
                f"safety margin ({self.safety_s}s) must fit inside the lease TTL ({self.ttl_s}s)",
            )
        return self


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
        self.lease = 0
        self._valid_until = 0.0
        self._info: dict[str, Any] = {}
        self._published: dict[str, Any] | None = None  # what the member key holds, as far as we know
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_rejoin = on_rejoin
        self._on_renew = on_renew
        self.renewals = 0
        self.rejoins = 0

    def is_valid(self) -> bool:
        return time.monotonic() < self._valid_until

    def remaining_s(self) -> float:
        return max(0.0, self._valid_until - time.monotonic())

    def join(self, info: dict[str, Any]) -> None:
        """Grant a lease and create the member key; refuse if the name is live elsewhere."""
        self._info = dict(info)
        sent = time.monotonic()
        lease = self.kv.grant_lease(self.timings.ttl_s)
        result = self.kv.txn([absent(self.key)], [Put(self.key, self._encode(), lease=lease)])
        if not result.succeeded:
            self.kv.revoke_lease(lease)
            raise DuplicateNode(
                f"node {self.node!r} is already registered in pool {self.pool!r} by a live process; "
                "pick another --name or stop the other node"
            )
        with self._lock:
            self.lease = lease
            self._published = dict(self._info)
            self._valid_until = sent + self.timings.ttl_s - self.timings.safety_s

    def start(self) -> None:
        self._thread = threading.Thread(target=self._keepalive_loop, name="lease-keepalive", daemon=True)
        self._thread.start()

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
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timings.request_timeout_s * 3)
        if revoke and self.lease:
            try:
                self.kv.revoke_lease(self.lease)
            except StoreError as exc:
                log.warning("could not revoke lease: %s", exc)
        self._valid_until = 0.0

    def _encode(self) -> bytes:
        return json.dumps({"v": 1, "node": self.node, "pool": self.pool, **self._info}).encode()

    def _keepalive_loop(self) -> None:
        while not self._stop.wait(self.timings.keepalive_s):
            sent = time.monotonic()
            try:
                ttl = self.kv.refresh_lease(self.lease)
            except StoreError as exc:
                log.warning("lease keepalive failed (%.1fs of validity left): %s", self.remaining_s(), exc)
                continue
            if ttl > 0:
                with self._lock:
                    self._valid_until = sent + self.timings.ttl_s - self.timings.safety_s
                self.renewals += 1
                if self._on_renew is not None:
                    self._on_renew(time.monotonic() - sent)
                continue
            log.warning("lease %x expired; re-registering node %s", self.lease, self.node)
            try:
                self.join(self._info)
                self.rejoins += 1
                if self._on_rejoin is not None:
                    self._on_rejoin()
            except (StoreError, DuplicateNode) as exc:
                log.warning("re-registration failed: %s", exc)
