"""Controller leader election: a lease-bound key created if absent; its create revision
is the fencing token every leader write compares.
"""

from __future__ import annotations

import json
import logging
import os
import time

from callpark.errors import StoreError
from callpark.store.etcd import Keys
from callpark.store.kv import KV, Compare, Delete, Put, absent

log = logging.getLogger(__name__)


class Leadership:
    """Campaign for, keep and give up the controller leadership."""

    def __init__(self, kv: KV, name: str, *, ttl_s: int, safety_s: float) -> None:
        self.kv = kv
        self.name = name
        self.ttl_s = ttl_s
        self.safety_s = safety_s
        self.lease = 0
        self.token = 0
        self._valid_until = 0.0

    def is_leader(self) -> bool:
        """True while we hold the key and our local deadline (monotonic) has not passed."""
        return self.token != 0 and time.monotonic() < self._valid_until

    def guard(self) -> Compare:
        """The compare that holds only while our leader key (our token) exists."""
        return Compare(Keys.LEADER, "create", "==", self.token)

    def campaign(self) -> bool:
        """Try to become leader (create-if-absent); True when we are."""
        if self.is_leader():
            return True
        sent = time.monotonic()
        if not self.lease or self.kv.refresh_lease(self.lease) <= 0:
            self.lease = self.kv.grant_lease(self.ttl_s)
        value = json.dumps({"name": self.name, "pid": os.getpid(), "since": time.time()}).encode()
        result = self.kv.txn([absent(Keys.LEADER)], [Put(Keys.LEADER, value, lease=self.lease)])
        if not result.succeeded:
            entry = self.kv.get(Keys.LEADER)
            if entry is None or not self.lease or entry.lease != self.lease:
                self.token = 0
                return False
            # The key is bound to our own live lease: we lost track of our leadership (a renewal
            # failed during etcd quorum loss, and etcd reset the lease's TTL on its leader change),
            # yet our campaigns kept the key alive, so nobody could lead. Found by the chaos suite.
            self.token = entry.create_revision
            self._valid_until = sent + self.ttl_s - self.safety_s
            log.warning("controller %s resumes the leadership it still holds (token %d)", self.name, self.token)
            return True
        self.token = result.revision
        self._valid_until = sent + self.ttl_s - self.safety_s
        log.info("controller %s is leader (token %d)", self.name, self.token)
        return True

    def renew(self) -> bool:
        """Keep the lease alive; False (and no longer leader) if it is gone."""
        if not self.token:
            return False
        sent = time.monotonic()
        try:
            ttl = self.kv.refresh_lease(self.lease)
        except StoreError as exc:
            log.warning("leader lease renewal failed: %s", exc)
            return self.is_leader()
        entry = self.kv.get(Keys.LEADER) if ttl > 0 else None
        if ttl <= 0 or entry is None or entry.create_revision != self.token:
            log.warning("controller %s lost the leadership", self.name)
            self.token = 0
            return False
        self._valid_until = sent + self.ttl_s - self.safety_s
        return True

    def resign(self) -> None:
        if self.token:
            try:
                self.kv.txn([self.guard()], [Delete(Keys.LEADER)])
                self.kv.revoke_lease(self.lease)
            except StoreError as exc:
                log.warning("could not resign cleanly: %s", exc)
        self.token = 0
