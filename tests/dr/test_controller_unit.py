"""Controller decisions on the in-memory store, asserted by the sentence each cycle returns."""

from __future__ import annotations

import json

import pytest

from callpark.dr.controller import Controller, ControllerConfig, request
from callpark.errors import StoreError, ValidationError
from callpark.model import admin
from callpark.model.orbits import OrbitRange
from callpark.model.pools import FailbackPolicy
from callpark.store.admin import AdminStore
from callpark.store.kv import Delete, Put
from callpark.store.memkv import MemoryKV
from callpark.store.ownership import events, read_snapshot
from callpark.store.schema import Keys


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def setup_kv(*, failback: FailbackPolicy = FailbackPolicy.MANUAL) -> MemoryKV:
    kv = MemoryKV()
    store = AdminStore(kv)
    store.change(lambda s: admin.new_pool(s, "a", "site-a", failback=failback, failback_hold_down_s=30))
    store.change(lambda s: admin.new_pool(s, "b", "site-b", backup="a"))
    store.change(lambda s: admin.new_range(s, OrbitRange("a-park", "7000", "7099", "a")))
    store.change(lambda s: admin.new_range(s, OrbitRange("a-star", "*7100", "*7199", "a")))
    store.change(lambda s: admin.new_range(s, OrbitRange("b-park", "7200", "7299", "b")))
    return kv


def member(kv: MemoryKV, pool: str, node: str, *, ready: bool = True) -> None:
    kv.txn(
        [], [Put(Keys.member(pool, node), json.dumps({"v": 1, "node": node, "pool": pool, "ready": ready}).encode())]
    )


def controller(kv: MemoryKV, clock: Clock, name: str = "c1") -> Controller:
    return Controller(kv, ControllerConfig(name=name, loop_s=0.5, grace_s=2.0, ttl_s=6, safety_s=1.5), clock=clock)


def owners(kv: MemoryKV) -> dict[str, tuple[str, int]]:
    snap = read_snapshot(kv)
    return {r: (o.pool, o.epoch) for r, o in snap.owners.items()}


def test_first_cycle_assigns_ranges_to_their_home_pools() -> None:
    kv, clock = setup_kv(), Clock()
    member(kv, "a", "n1")
    member(kv, "b", "n2")
    c = controller(kv, clock)
    said = c.run_cycle()
    assert said.startswith("leader c1 (token ") and "assigned 3 new range(s) to their home pools" in said
    assert owners(kv) == {"a-park": ("a", 1), "a-star": ("a", 1), "b-park": ("b", 1)}
    assert c.run_cycle().endswith("pools a up, b up; no action")


def test_pool_down_past_grace_moves_all_its_ranges_in_one_step() -> None:
    kv, clock = setup_kv(), Clock()
    member(kv, "b", "n2")
    c = controller(kv, clock)
    c.run_cycle()  # owners
    assert c.run_cycle().endswith("pools a DOWN, b up; no action")  # grace not over
    clock.now += 2.5
    said = c.run_cycle()
    assert "failover: moved a-park, a-star to b (epochs [2])" in said
    assert "pool a has had no ready member for 2.5s (grace 2.0s)" in said
    assert owners(kv) == {"a-park": ("b", 2), "a-star": ("b", 2), "b-park": ("b", 1)}
    [event] = events(kv)
    assert (event["kind"], event["pool"], event["to"], event["ranges"]) == ("failover", "a", "b", ["a-park", "a-star"])
    assert c.run_cycle().endswith("pools a DOWN, b up; no action")  # nothing left to move: idempotent


def test_no_failover_when_the_backup_is_down_too() -> None:
    kv, clock = setup_kv(), Clock()
    c = controller(kv, clock)
    c.run_cycle()
    clock.now += 5
    said = c.run_cycle()
    assert "pool a is down and its backup b is down too; no failover possible" in said
    assert owners(kv)["a-park"] == ("a", 1)


def test_a_standby_does_not_act_and_takes_over_when_the_leader_key_goes() -> None:
    kv, clock = setup_kv(), Clock()
    member(kv, "b", "n2")
    leader, standby = controller(kv, clock, "c1"), controller(kv, clock, "c2")
    leader.run_cycle()
    assert standby.run_cycle().startswith("standby c2: c1 leads")
    kv.revoke_lease(leader.leadership.lease)  # the leader died: its lease expired
    clock.now += 3
    said = standby.run_cycle()
    assert said.startswith("leader c2")
    # the deposed leader's writes are fenced by its token
    leader.leadership.session.deadline = float("inf")  # it still believes it leads
    assert not leader._commit([], [Put(Keys.owner("a-park"), b"{}")])


def test_planned_failover_then_manual_failback_on_request() -> None:
    kv, clock = setup_kv(), Clock()
    member(kv, "a", "n1")
    member(kv, "b", "n2")
    c = controller(kv, clock)
    c.run_cycle()
    key = request(kv, "failover", "a")
    assert "planned-failover: moved a-park, a-star to b" in c.run_cycle()
    assert kv.get(key) is None and owners(kv)["a-star"] == ("b", 2)
    assert c.run_cycle().endswith("no action")  # manual failback policy: stays on b
    request(kv, "failback", "a")
    assert "failback: moved a-park, a-star to a (epochs [3])" in c.run_cycle()
    assert owners(kv) == {"a-park": ("a", 3), "a-star": ("a", 3), "b-park": ("b", 1)}


def test_requests_that_cannot_be_served_are_refused_with_a_reason() -> None:
    kv, clock = setup_kv(), Clock()
    member(kv, "a", "n1")
    c = controller(kv, clock)
    c.run_cycle()
    key = request(kv, "failover", "a")
    assert "refused planned failover of a: backup b has no ready member" in c.run_cycle()
    assert kv.get(key) is None
    assert events(kv)[-1]["kind"] == "refused"
    request(kv, "failover", "nope")
    assert "does not exist or has no backup" in c.run_cycle()


def test_automatic_failback_after_the_hold_down() -> None:
    kv, clock = setup_kv(failback=FailbackPolicy.AUTO), Clock()
    member(kv, "b", "n2")
    c = controller(kv, clock)
    c.run_cycle()
    clock.now += 3
    assert "failover" in c.run_cycle()
    member(kv, "a", "n1")  # the primary comes back
    assert c.run_cycle().endswith("no action")
    clock.now += 31
    said = c.run_cycle()
    assert "failback: moved a-park, a-star to a" in said and "hold-down 30s" in said


def test_owner_records_follow_range_removal() -> None:
    kv, clock = setup_kv(), Clock()
    member(kv, "a", "n1")
    c = controller(kv, clock)
    c.run_cycle()
    AdminStore(kv).change(lambda s: admin.remove_range(s, "a-star"))
    assert "dropped owners of removed range(s) a-star" in c.run_cycle()
    assert "a-star" not in owners(kv)


def test_malformed_owner_and_member_records_are_skipped() -> None:
    kv, clock = setup_kv(), Clock()
    member(kv, "b", "n2")
    kv.txn([], [Put(Keys.owner("a-park"), b"{not json"), Put(Keys.member("a", "bad"), b"[1,2]")])
    snap = read_snapshot(kv)
    # a member key whose value is malformed still proves its lease is alive, but is never ready
    assert "a-park" not in snap.owners and not snap.ready_members("a")
    assert [(m.node, m.ready, m.info) for m in snap.members["a"]] == [("bad", False, {})]
    kv.txn([], [Delete(Keys.owner("a-park"))])
    assert "assigned" in controller(kv, clock).run_cycle()


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"loop_s": 3.0, "ttl_s": 6}, "timing-loop"),
        ({"ttl_s": 2}, "timing-ttl"),
        ({"safety_s": 0.5, "request_timeout_s": 1.0}, "timing-safety"),
        ({"loop_s": 0}, "timing-positive"),
    ],
)
def test_controller_timings_are_validated_together(kwargs: dict[str, float], rule: str) -> None:
    with pytest.raises(ValidationError) as info:
        ControllerConfig(name="c", **kwargs).validate()  # type: ignore[arg-type]
    assert info.value.rule == rule


def test_a_leader_that_lost_track_of_its_key_resumes_it_instead_of_blocking_everyone() -> None:
    """Found by chaos smoke-etcd: after quorum loss the old leader's key stayed alive on its lease,
    the old leader thought it was standby, and no controller led any more."""
    from callpark.dr.leader import Leadership
    from callpark.store.memkv import MemoryKV

    kv = MemoryKV()
    first = Leadership(kv, "controller-1", ttl_s=4, safety_s=1.0)
    assert first.campaign()
    token = first.token
    first.token = 0  # a renewal failed while etcd had no quorum
    other = Leadership(kv, "controller-2", ttl_s=4, safety_s=1.0)
    assert not other.campaign()  # the key is still there: controller-2 may not lead
    assert first.campaign() and first.token == token and first.is_leader()


class LeaselessKV(MemoryKV):
    """A store whose event-lease grants fail (etcd trouble): failovers must not wait for one."""

    def grant_lease(self, ttl_s: int) -> int:
        if ttl_s > 3600:  # the leader's own lease is seconds long; the event bucket lease days
            raise StoreError("lease grant timed out")
        return super().grant_lease(ttl_s)


def test_events_are_written_under_an_expiring_lease_that_a_failover_never_waits_for() -> None:
    kv, clock = setup_kv(), Clock()
    member(kv, "b", "n2")
    c = controller(kv, clock)
    c.run_cycle()
    clock.now += 2.5
    assert "failover: moved" in c.run_cycle()
    [entry] = kv.get_prefix(Keys.EVENTS).entries.values()
    assert entry.lease != 0, "events expire by themselves"

    bad = LeaselessKV()
    bad.txn([], [Put(k, e.value) for k, e in setup_kv().get_prefix(Keys.ROOT).entries.items()])
    member(bad, "b", "n2")
    c = controller(bad, clock)
    c.run_cycle()
    clock.now += 2.5
    assert "failover: moved" in c.run_cycle(), "no event lease: the failover still happens"
    [entry] = bad.get_prefix(Keys.EVENTS).entries.values()
    assert entry.lease == 0


def _rehome(kv: MemoryKV, name: str, pool: str) -> None:
    AdminStore(kv).change(lambda s: admin.set_range(s, name, pool=pool))


def test_a_range_whose_home_pool_changes_moves_to_the_new_home() -> None:
    kv, clock = setup_kv(), Clock()
    member(kv, "a", "n1")
    member(kv, "b", "n2")
    c = controller(kv, clock)
    c.run_cycle()
    assert owners(kv)["a-park"] == ("a", 1)
    _rehome(kv, "a-park", "b")
    said = c.run_cycle()
    assert "re-home: moved a-park to b (epochs [2]); home pool of a-park changed to b" in said, said
    assert owners(kv) == {"a-park": ("b", 2), "a-star": ("a", 1), "b-park": ("b", 1)}
    assert events(kv)[-1]["kind"] == "re-home"
    assert c.run_cycle().endswith("no action"), "moved once, then settled"


def test_a_re_home_to_a_pool_that_is_down_goes_to_its_backup_then_fails_back() -> None:
    kv, clock = setup_kv(), Clock()
    member(kv, "a", "n1")
    c = controller(kv, clock)
    c.run_cycle()
    _rehome(kv, "b-park", "a")  # b-park's owner is b (never up); its new home a is up
    assert "re-home: moved b-park to a" in c.run_cycle()
    AdminStore(kv).change(lambda s: admin.set_pool(s, "b", backup="a"))
    kv.txn([], [Delete(Keys.member("a", "n1"))])
    member(kv, "b", "n2")
    _rehome(kv, "a-star", "a")  # unchanged home: nothing to do
    _rehome(kv, "a-park", "b")
    assert "re-home: moved a-park to b" in c.run_cycle()
    assert owners(kv)["a-park"] == ("b", 2)


def test_a_re_home_waits_while_the_new_home_and_its_backup_are_down() -> None:
    kv, clock = setup_kv(), Clock()
    c = controller(kv, clock)
    c.run_cycle()
    _rehome(kv, "a-park", "b")
    said = c.run_cycle()
    assert "re-home of a-park to b waits: b and its backup have no ready member" in said, said
    assert owners(kv)["a-park"] == ("a", 1)
    member(kv, "a", "n1")  # b's backup comes up: the range goes there until b can take it
    assert "re-home: moved a-park to a (epochs [2]); home pool of a-park changed to b" in c.run_cycle()


def test_owner_records_written_before_home_existed_are_read() -> None:
    kv, clock = setup_kv(), Clock()
    member(kv, "a", "n1")
    member(kv, "b", "n2")
    old = json.dumps({"v": 1, "range": "a-park", "pool": "a", "epoch": 1, "reason": "initial: home pool"})
    kv.txn([], [Put(Keys.owner("a-park"), old.encode())])
    c = controller(kv, clock)
    c.run_cycle()
    _rehome(kv, "a-park", "b")
    assert "re-home: moved a-park to b" in c.run_cycle()
