"""Records that expire by themselves: ``history/`` and ``events/`` written under bucket leases.

Nothing scans and deletes old records. A writer attaches each record to the lease of the
current *bucket*: a lease granted lazily with TTL ``keep_s + bucket_s`` and used for
``bucket_s`` seconds after its grant, then replaced by a fresh one. The lease is never kept
alive, so etcd deletes every record of a bucket when the bucket's lease runs out: a record
lives between ``keep_s`` and ``keep_s + bucket_s`` seconds. A writer holds at most
``keep_s / bucket_s + 1`` leases at a time (history: 1 h kept in 10 min buckets, 7 leases
per node).

Unknown outcomes: a grant that times out may have created a lease nobody uses; it carries
no keys and expires by itself. A write under a lease etcd has already dropped (the process
was paused past the lease's end) fails with a :class:`~callpark.errors.StoreError`; the
bucket is forgotten so the caller's retry gets a fresh lease.

etcd 3.4 restarts a lease's TTL when the etcd leader changes (without lease checkpointing),
so a record can outlive ``keep_s + bucket_s`` by one TTL per leader change: still bounded.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from callpark.store.kv import KV

HISTORY_KEEP_S = 3600.0
HISTORY_BUCKET_S = 600.0
EVENTS_KEEP_S = 7 * 86400.0
EVENTS_BUCKET_S = 6 * 3600.0


class BucketLeases:
    """Hands out the lease of the current bucket for records that must expire after ``keep_s``."""

    def __init__(self, kv: KV, *, keep_s: float, bucket_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if keep_s <= 0 or bucket_s <= 0:
            raise ValueError(f"keep_s and bucket_s must be > 0 (got {keep_s}, {bucket_s})")
        self.kv = kv
        self.ttl_s = math.ceil(keep_s + bucket_s)
        self.bucket_s = bucket_s
        self._clock = clock
        self._lock = threading.Lock()
        self._lease = 0
        self._granted_at = -math.inf

    def lease(self) -> int:
        """The current bucket's lease id, granting a new one when the bucket is over.

        Raises :class:`~callpark.errors.StoreError` when etcd cannot grant one.
        """
        with self._lock:
            now = self._clock()
            if self._lease == 0 or now - self._granted_at >= self.bucket_s:
                self._lease = self.kv.grant_lease(self.ttl_s)
                self._granted_at = now
            return self._lease

    def forget(self) -> None:
        """Drop the cached lease (a write under it failed): the next :meth:`lease` grants anew."""
        with self._lock:
            self._lease = 0
