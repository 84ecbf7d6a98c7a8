"""Controller leader election: a lease-bound key created if absent; its create revision
is the fencing token every leader write compares.

The lease and its self-fencing deadline are a :class:`~callpark.store.session.LeaseSession`,
renewed once per controller loop.
"""

from __future__ import annotations

import logging
import os
import time

from callpark.errors import StoreError
from callpark.store.kv import KV, Compare, Delete, Put, absent
from callpark.store.records import leader_bytes
from callpark.store.schema import Keys
from callpark.store.session import LeaseSession

log = logging.getLogger(__name__)


class Leadership:
    """Campaign for, keep and give up the controller leadership."""

    def __init__(self, kv: KV, name: str, *, ttl_s: int, safety_s: float) -> None:
        self.kv = kv
        self.name = name
        self.session = LeaseSession(kv, ttl_s=ttl_s, safety_s=safety_s)
        self.token = 0

    @property
    def lease(self) -> int:
        """The leader lease id (0 before the first campaign)."""
        return self.session.lease

    def is_leader(self) -> bool:
        """True while we hold the key and our local deadline (monotonic) has not passed."""
        return self.token != 0 and self.session.is_valid()

    def guard(self) -> Compare:
        """The compare that holds only while our leader key (our token) exists."""
        return Compare(Keys.LEADER, "create", "==", self.token)

    def campaign(self) -> bool:
        """Try to become leader (create-if-absent); True when we are."""
        if self.is_leader():
            return True
        sent = time.monotonic()
        lease = self.session.ensure()
        value = leader_bytes(self.name, os.getpid(), time.time())
        result = self.kv.txn([absent(Keys.LEADER)], [Put(Keys.LEADER, value, lease=lease)])
        if not result.succeeded:
            entry = self.kv.get(Keys.LEADER)
            if entry is None or not lease or entry.lease != lease:
                self.token = 0
                return False
            # The key is bound to our own live lease: we lost track of our leadership (a renewal
            # failed during etcd quorum loss, and etcd reset the lease's TTL on its leader change),
            # yet our campaigns kept the key alive, so nobody could lead. Found by the chaos suite.
            self.token = entry.create_revision
            self.session.confirm(sent)
            log.warning("controller %s resumes the leadership it still holds (token %d)", self.name, self.token)
            return True
        self.token = result.revision
        self.session.confirm(sent)
        log.info("controller %s is leader (token %d)", self.name, self.token)
        return True

    def renew(self) -> bool:
        """Keep the lease alive; False (and no longer leader) if it is gone."""
        if not self.token:
            return False
        sent = time.monotonic()
        try:
            alive = self.session.refresh()
        except StoreError as exc:
            log.warning("leader lease renewal failed: %s", exc)
            return self.is_leader()
        entry = self.kv.get(Keys.LEADER) if alive else None
        if not alive or entry is None or entry.create_revision != self.token:
            log.warning("controller %s lost the leadership", self.name)
            self.token = 0
            return False
        self.session.confirm(sent)
        return True

    def resign(self) -> None:
        """Delete our leader key and revoke the lease (best effort)."""
        if self.token:
            try:
                self.kv.txn([self.guard()], [Delete(Keys.LEADER)])
                self.session.revoke()
            except StoreError as exc:
                log.warning("could not resign cleanly: %s", exc)
        self.token = 0
