"""history/ and events/ expire by themselves: bucket leases in real etcd, no scans."""

from __future__ import annotations

import pytest

from callpark.errors import StoreError
from callpark.node.membership import Membership
from callpark.store.etcd import EtcdStore
from callpark.store.expiry import HISTORY_BUCKET_S, HISTORY_KEEP_S, BucketLeases
from callpark.store.kv import Put
from callpark.store.memkv import MemoryKV
from callpark.store.records import Outcome
from callpark.store.schema import Keys
from callpark.waiting import wait_until
from tests.node.test_parking_table import member, park, table

__all__ = ["member"]  # the real-etcd member fixture of the parking-table tests


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingKV(MemoryKV):
    def __init__(self) -> None:
        super().__init__()
        self.grants: list[int] = []

    def grant_lease(self, ttl_s: int) -> int:
        self.grants.append(ttl_s)
        return super().grant_lease(ttl_s)


def test_one_lease_per_bucket_with_keep_plus_bucket_ttl() -> None:
    kv, clock = CountingKV(), Clock()
    leases = BucketLeases(kv, keep_s=100, bucket_s=10, clock=clock)
    first = leases.lease()
    clock.now = 9.9
    assert leases.lease() == first, "the same bucket shares one lease"
    clock.now = 10.0
    second = leases.lease()
    assert second != first and kv.grants == [110, 110]
    leases.forget()
    assert leases.lease() not in (first, second) and len(kv.grants) == 3


def test_bad_bucket_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="keep_s and bucket_s"):
        BucketLeases(MemoryKV(), keep_s=0, bucket_s=10)


def test_history_keep_is_an_hour_in_ten_minute_buckets() -> None:
    assert (HISTORY_KEEP_S, HISTORY_BUCKET_S) == (3600.0, 600.0)


def test_a_freed_call_leaves_history_that_etcd_deletes_by_itself(etcd: EtcdStore, member: Membership) -> None:
    t = table(etcd, member)
    t.history_leases = BucketLeases(etcd, keep_s=1, bucket_s=1)  # a 2 s lifetime instead of an hour
    held = park(t)
    t.free(held, Outcome.RETRIEVED)
    entry = etcd.get(Keys.history(held.call.park_id))
    assert entry is not None and entry.lease != 0, "history is written under a lease"
    wait_until(lambda: etcd.get(Keys.history(held.call.park_id)) is None, timeout=15, what="history expired")
    assert etcd.get(Keys.lru(held.call.orbit)) is not None, "the orbit's LRU stamp stays (it has no lease)"


def test_a_free_under_a_lease_etcd_dropped_fails_once_then_gets_a_fresh_lease(
    etcd: EtcdStore, member: Membership
) -> None:
    t = table(etcd, member)
    first = park(t)
    t.free(first, Outcome.RETRIEVED)
    etcd.revoke_lease(t.history_leases.lease())  # as if the node slept past the bucket lease's end
    second = park(t)
    with pytest.raises(StoreError):
        t.free(second, Outcome.RETRIEVED)
    assert etcd.get(Keys.parked(second.call.orbit)) is not None, "nothing half-written: the call is still parked"
    t.free(second, Outcome.RETRIEVED)  # the node's owed-write retry
    entry = etcd.get(Keys.history(second.call.park_id))
    assert entry is not None and entry.lease not in (0,)
    assert etcd.get(Keys.parked(second.call.orbit)) is None


def test_prune_history_removes_only_old_lease_less_records(etcd: EtcdStore, member: Membership) -> None:
    from callpark.store.parking import prune_history
    from callpark.store.records import history_bytes

    t = table(etcd, member)
    held = park(t)
    t.free(held, Outcome.RETRIEVED)  # leased: left to expire
    etcd.txn([], [Put(Keys.history("old"), history_bytes(held.call, Outcome.RETRIEVED, "", 0.0, "pool-a/n1"))])
    etcd.txn([], [Put(Keys.history("new"), history_bytes(held.call, Outcome.RETRIEVED, "", 1e12, "pool-a/n1"))])
    assert prune_history(etcd, now=1e9) == 1
    assert etcd.get(Keys.history("old")) is None
    assert etcd.get(Keys.history("new")) is not None and etcd.get(Keys.history(held.call.park_id)) is not None
