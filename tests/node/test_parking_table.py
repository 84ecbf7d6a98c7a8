"""Parked-call records in real etcd: allocation, claims, frees and fencing (no SIP)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from callpark.errors import ValidationError
from callpark.model.orbits import OrbitRange
from callpark.node.membership import DuplicateNode, Membership
from callpark.store.etcd import EtcdStore
from callpark.store.kv import KV
from callpark.store.parking import Fenced, LostRace, NoFreeOrbit, OrbitTaken, ParkTable
from callpark.store.records import CallState, Dialog, Holder, Outcome, ParkKind
from callpark.store.schema import Keys
from callpark.store.session import LeaseTimings
from callpark.waiting import wait_until

RANGES = [OrbitRange("r", "7000", "7002", "pool-a")]
DIALOG = Dialog("cid@host", "ltag", "rtag", "sip:a@127.0.0.1:5062", "sip:a@127.0.0.1", True)
HOLDER = Holder("n1", 0, "127.0.0.1:5070")
FAST = LeaseTimings(ttl_s=4, keepalive_s=0.5, safety_s=1.5, request_timeout_s=1.0)


@pytest.fixture
def member(etcd: EtcdStore) -> Iterator[Membership]:
    m = Membership(etcd, pool="pool-a", node="n1", timings=FAST)
    m.join({"ready": True})
    m.start()
    try:
        yield m
    finally:
        m.stop()


def table(kv: KV, m: Membership) -> ParkTable:
    t = ParkTable(kv, node=m.node, pool=m.pool, member_key=m.key)
    t.lease = m.lease
    return t


def park(t: ParkTable, target: str | None = None, now: float | None = None):  # type: ignore[no-untyped-def]
    return t.allocate(
        RANGES,
        target=target,
        holder=HOLDER,
        dialog=DIALOG,
        kind=ParkKind.BLIND,
        caller_uri="sip:a@127.0.0.1",
        parker_uri="sip:p@127.0.0.1",
        timeout_s=90,
        now=now,
    )


def test_least_recently_freed_orbit_first(etcd: EtcdStore, member: Membership) -> None:
    t = table(etcd, member)
    first = [park(t).call.orbit for _ in range(3)]
    assert first == ["7000", "7001", "7002"]  # never-used orbits in order
    with pytest.raises(NoFreeOrbit):
        park(t)
    for orbit, at in (("7001", 100.0), ("7000", 200.0)):
        held = t.get(orbit)
        assert held is not None
        t.free(held, Outcome.RETRIEVED, now=at)
    assert park(t).call.orbit == "7001"  # freed longest ago
    assert park(t).call.orbit == "7000"


def test_record_holds_what_a_takeover_needs(etcd: EtcdStore, member: Membership) -> None:
    t = table(etcd, member)
    held = park(t, now=1000.0)
    again = t.get(held.call.orbit)
    assert again is not None and again.call == held.call
    assert again.call.dialog == DIALOG and again.call.deadline == 1090.0 and again.call.attempts == 0


def test_directed_park(etcd: EtcdStore, member: Membership) -> None:
    t = table(etcd, member)
    assert park(t, target="7002").call.orbit == "7002"
    with pytest.raises(OrbitTaken, match="in use"):
        park(t, target="7002")
    with pytest.raises(OrbitTaken, match="not in a CallPark range"):
        park(t, target="8000")


def test_concurrent_allocations_never_share_an_orbit(etcd: EtcdStore, member: Membership) -> None:
    results: list[str] = []
    errors: list[Exception] = []

    def worker() -> None:
        store = EtcdStore(etcd.endpoints)
        try:
            results.append(park(table(store, member)).call.orbit)
        except NoFreeOrbit as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert sorted(results) == ["7000", "7001", "7002"] and len(errors) == 2


def test_two_claims_on_one_snapshot_exactly_one_wins(etcd: EtcdStore, member: Membership) -> None:
    t = table(etcd, member)
    held = park(t)
    t.claim(held, CallState.RETRIEVING)
    with pytest.raises(LostRace):
        t.claim(held, CallState.RETRIEVING)


def test_free_records_outcome_and_lru_in_one_txn(etcd: EtcdStore, member: Membership) -> None:
    t = table(etcd, member)
    held = park(t)
    t.free(held, Outcome.ABANDONED, "caller hung up")
    assert t.get(held.call.orbit) is None
    hist = t.history(held.call.park_id)
    assert hist is not None and hist["outcome"] == "abandoned"
    assert etcd.get(Keys.lru(held.call.orbit)) is not None
    with pytest.raises(LostRace):
        t.free(held, Outcome.ABANDONED)  # freed exactly once


def test_the_history_names_the_node_as_pool_and_name_and_its_incarnation(etcd: EtcdStore, member: Membership) -> None:
    t = table(etcd, member)
    parked = park(t)
    held = t.update(parked, replace(parked.call, holder=replace(HOLDER, pool="pool-a", incarnation="inc-1")))
    t.free(held, Outcome.LOST, "test")
    hist = t.history(held.call.park_id)
    assert hist is not None and hist["node"] == "pool-a/n1" and hist["incarnation"] == "inc-1", hist


def test_writes_are_fenced_once_the_lease_is_gone(etcd: EtcdStore, member: Membership) -> None:
    t = table(etcd, member)
    held = park(t)
    etcd.revoke_lease(member.lease)
    with pytest.raises(Fenced):
        park(t)
    with pytest.raises(Fenced):
        t.free(held, Outcome.RETRIEVED)
    assert t.get(held.call.orbit) is not None  # the record survives the node


def test_duplicate_node_name_is_refused(etcd: EtcdStore, member: Membership) -> None:
    other = Membership(etcd, pool="pool-a", node="n1", timings=FAST)
    with pytest.raises(DuplicateNode, match="already registered"):
        other.join({})


def test_member_key_renews_and_rejoins_after_expiry(etcd: EtcdStore, member: Membership) -> None:
    wait_until(lambda: member.renewals >= 2, timeout=5, what="two lease renewals")
    old = member.lease
    etcd.revoke_lease(old)
    wait_until(lambda: member.rejoins >= 1 and member.lease != old, timeout=5, what="re-registration")
    entry = etcd.get(member.key)
    assert entry is not None and entry.lease == member.lease


@pytest.mark.parametrize(
    ("timings", "rule"),
    [
        (LeaseTimings(ttl_s=2), "timing-ttl"),
        (LeaseTimings(ttl_s=10, keepalive_s=4, safety_s=2, request_timeout_s=1), "timing-keepalive"),
        (LeaseTimings(ttl_s=10, keepalive_s=1, safety_s=0.5, request_timeout_s=1), "timing-safety"),
        (LeaseTimings(ttl_s=10, keepalive_s=0), "timing-positive"),
    ],
)
def test_timings_are_validated_together(timings: LeaseTimings, rule: str) -> None:
    with pytest.raises(ValidationError) as info:
        timings.validate()
    assert info.value.rule == rule


def test_self_fencing_deadline_passes_before_the_lease_can_expire(etcd_cluster, etcd: EtcdStore) -> None:  # type: ignore[no-untyped-def]
    store = EtcdStore(etcd.endpoints, request_timeout_s=0.5, retry_deadline_s=0.5)
    m = Membership(store, pool="pool-a", node="fence", timings=FAST)
    m.join({})
    m.start()
    try:
        wait_until(m.is_valid, timeout=3, what="valid membership")
        etcd_cluster.pause(0)
        paused_at = time.monotonic()
        try:
            wait_until(lambda: not m.is_valid(), timeout=FAST.ttl_s + 2, what="self-fencing")
        finally:
            etcd_cluster.resume(0)
        # The node stops serving at least safety_s before etcd could expire its lease:
        # the deadline is set from the send time of a renewal made before the pause.
        assert m.session.deadline <= paused_at + FAST.ttl_s - FAST.safety_s
        wait_until(m.is_valid, timeout=10, what="validity back after etcd resumes")
    finally:
        m.stop()
        store.close()


def test_a_member_update_that_failed_is_written_by_the_next_one() -> None:
    """Found by the chaos suite: a 'ready' update lost to an etcd time-out was never retried."""
    import json

    from callpark.errors import StoreUnavailable
    from callpark.store.memkv import MemoryKV

    kv = MemoryKV()
    m = Membership(kv, pool="pool-a", node="n9", timings=FAST)
    m.join({"ready": False})
    real_txn = kv.txn
    fail = {"once": True}

    def flaky_txn(*args, **kwargs):  # type: ignore[no-untyped-def]
        if fail.pop("once", False):
            raise StoreUnavailable("etcd unreachable (test)")
        return real_txn(*args, **kwargs)

    kv.txn = flaky_txn  # type: ignore[method-assign]
    m.update(ready=True)  # lost
    entry = kv.get(Keys.member("pool-a", "n9"))
    assert entry is not None and json.loads(entry.value)["ready"] is False
    m.update(ready=True)  # nothing new asked, but etcd does not have it yet: written now
    entry = kv.get(Keys.member("pool-a", "n9"))
    assert entry is not None and json.loads(entry.value)["ready"] is True
