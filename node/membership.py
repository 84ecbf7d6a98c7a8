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

from callpark.errors import CallparkError, StoreError, StoreIndeterminate
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
        self._published: bytes | None = None  # what the member key held when last read back
        self._checked_at = 0.0  # monotonic time until which that read-back is trusted
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
        try:
            applied = self.kv.txn([absent(self.key)], [Put(self.key, self._encode(), lease=lease)]).succeeded
        except StoreIndeterminate:
            applied = self._read_back(lease) is not None  # our lease on the key: our write applied
        if not applied:
            self.session.revoke(lease)
            raise DuplicateNode(
                f"node {self.node!r} is already registered in pool {self.pool!r} by a live process; "
                "pick another --name or stop the other node"
            )
        with self._lock:
            self._published = None  # read back by the next update
        self.session.bind(lease, sent)

    def start(self) -> None:
        """Start keeping the lease alive (re-registering if it expires)."""
        self.session.keep_alive(self.timings.keepalive_s, on_renewed=self._renewed, on_expired=self._rejoin)

    def update(self, **info: Any) -> None:
        """Change fields of the member key (slots, ready) until etcd holds what the node is.

        What etcd holds is known only from reading it back (found in review: a "ready: false"
        write that timed out having applied left the key not ready for good, because the node
        compared with what it had meant to write). A read-back is trusted for one keepalive
        interval; any failed or unknown write forgets it, so the next call reads again.
        """
        with self._lock:
            self._info = {**self._info, **info}
            lease, wanted = self.lease, member_bytes(self.pool, self.node, self._info)
            if not lease or (self._published == wanted and time.monotonic() < self._checked_at):
                return
        try:
            held = self._read_back(lease)
            if held != wanted:
                self.kv.txn([Compare(self.key, "lease", "==", lease)], [Put(self.key, wanted, lease=lease)])
                held = self._read_back(lease)
        except StoreError as exc:
            log.warning("could not update member key: %s", exc)
            held = None
        with self._lock:
            self._published = held
            self._checked_at = time.monotonic() + self.timings.keepalive_s

    def _read_back(self, lease: int) -> bytes | None:
        """What the member key holds under ``lease`` (None: absent or bound to another lease)."""
        entry = self.kv.get(self.key)
        return entry.value if entry is not None and entry.lease == lease else None

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
