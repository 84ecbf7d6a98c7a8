"""Takeovers: node identity is pool/node, takeovers respect worker capacity, and a holder that
rejoins before the claim keeps its call (real etcd through FaultKV, in-process nodes)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from callpark.model.orbits import OrbitRange
from callpark.node.membership import Membership
from callpark.node.takeover import Takeovers
from callpark.node.views import ClusterView
from callpark.store.etcd import EtcdStore
from callpark.store.parking import Held
from callpark.store.schema import Keys
from callpark.store.session import LeaseTimings
from tests.node.faults import FaultKV, puts
from tests.node.test_decisions import POOL, Node, make_node
from tests.node.test_lifecycle import listen, park, parked


@pytest.fixture
def kv(etcd: EtcdStore) -> FaultKV:
    return FaultKV(etcd)


def takeovers_of(node: Node) -> Takeovers:
    view = cast(ClusterView, node.facts)
    return Takeovers(node.calls.ctx, calls=node.calls, view=view, workers=node.workers)


# -- 1. identity: pool/node, not the bare name ----------------------------------------------------------


def test_a_restarted_node_never_adopts_the_calls_of_its_namesake_in_another_pool(tmp_path: Path, kv: FaultKV) -> None:
    a = make_node(tmp_path / "a", kv, name="n1", pool=POOL)
    orbit = park(a)
    b = make_node(tmp_path / "b", kv, name="n1", pool="pool-b")  # pool-b/n1, just restarted
    sent = listen(b.w0)
    b_takeovers = takeovers_of(b)
    assert b_takeovers.recover_own_calls()
    assert sent.ops("takeover") == [] and orbit not in b.calls.held
    record = parked(a, orbit)
    assert record is not None and record["holder"]["pool"] == POOL and record["holder"]["node"] == "n1"
    a.member.stop(revoke=True)  # pool-a/n1 restarts: its new incarnation does adopt it
    a_again = make_node(tmp_path / "a2", kv, name="n1", pool=POOL)
    a_sent = listen(a_again.w0)
    listen(a_again.w1)
    assert takeovers_of(a_again).recover_own_calls()
    assert [m["orbit"] for m in a_sent.ops("takeover")] == [orbit]
    again = parked(a_again, orbit)
    assert again is not None and again["holder"]["incarnation"] == "n1-incarnation"


# -- 2. takeover capacity -----------------------------------------------------------------------------------


class FakeWorkers:
    """Workers that hold at most 4 calls and answer takeovers as the real ones do."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.held: dict[int, list[str]] = {h.index: [] for h in node.workers.handles}
        self.sent = {h.index: listen(h) for h in node.workers.handles}
        self.seen = {h.index: 0 for h in node.workers.handles}
        for h in node.workers.handles:
            h.free_slots = 4

    def answer(self, takeovers: Takeovers) -> int:
        """Answer every takeover sent since the last call; returns how many."""
        answered = 0
        for h in self.node.workers.handles:
            msgs = self.sent[h.index].ops("takeover")
            for msg in msgs[self.seen[h.index] :]:
                answered += 1
                result: dict[str, Any] = {"op": "takeover_result", "orbit": msg["orbit"]}
                if len(self.held[h.index]) >= 4:
                    result.update(ok=False, full=True, reason="full: no free call slot")
                else:
                    self.held[h.index].append(msg["orbit"])
                    h.free_slots = 4 - len(self.held[h.index])  # the worker's "slots" report
                    result.update(ok=True, dialog=msg["dialog"])
                takeovers.handle_result(h, result)
            self.seen[h.index] = len(msgs)
        return answered


def test_orphans_beyond_one_workers_room_are_spread_and_none_is_lost(tmp_path: Path, kv: FaultKV) -> None:
    before = make_node(tmp_path / "old", kv, name="n1")
    before.facts.ranges = [OrbitRange("r", "7000", "7009", POOL)]
    orbits = [park(before, call=f"c{i}") for i in range(5)]
    before.member.stop(revoke=True)  # the node dies; its records still name pool-a/n1
    node = make_node(tmp_path / "new", kv, name="n1")  # restarted: 2 workers of 4 slots
    node.facts.ranges = before.facts.ranges
    workers = FakeWorkers(node)
    takeovers = takeovers_of(node)
    assert takeovers.recover_own_calls()
    for _ in range(10):
        workers.answer(takeovers)
        takeovers.retry()
    workers.answer(takeovers)
    histories = [node.decisions.table.history(node.calls.held[o].call.park_id) for o in orbits if o in node.calls.held]
    assert all(h is None for h in histories)
    assert sorted(o for held in workers.held.values() for o in held) == sorted(orbits)  # all held, none lost
    assert all(len(held) <= 3 for held in workers.held.values())  # one slot kept spare
    for orbit in orbits:
        record = parked(node, orbit)
        assert record is not None and record["state"] == "parked" and orbit in workers.held[record["holder"]["worker"]]
    assert not takeovers.retake and not node.calls.moving


def test_a_full_worker_refusal_sends_the_call_to_another_worker_not_to_lost(tmp_path: Path, kv: FaultKV) -> None:
    node = make_node(tmp_path, kv)
    orbit = park(node)
    takeovers = takeovers_of(node)
    sent = {h.index: listen(h) for h in node.workers.handles}
    for h in node.workers.handles:
        h.free_slots = 3
    takeovers.take_over(node.calls.held[orbit])
    first = next(h for h in node.workers.handles if sent[h.index].ops("takeover"))
    takeovers.handle_result(first, {"orbit": orbit, "ok": False, "full": True, "reason": "full: no free call slot"})
    first.free_slots = 0
    assert orbit in node.calls.held and orbit in takeovers.retake  # not lost
    takeovers.retry()
    other = next(h for h in node.workers.handles if h is not first)
    assert [m["orbit"] for m in sent[other.index].ops("takeover")] == [orbit]
    assert node.decisions.table.history(node.calls.held[orbit].call.park_id) is None


# -- 3. the claim compares the old holder's member key --------------------------------------------------


def test_a_holder_that_rejoins_between_the_scan_and_the_claim_keeps_its_call(tmp_path: Path, kv: FaultKV) -> None:
    holder = make_node(tmp_path / "n2", kv, name="n2")
    orbit = park(holder)
    holder.member.stop(revoke=True)  # looks gone to the scan ...
    scanner = make_node(tmp_path / "n1", kv)
    sent = listen(scanner.w0)
    listen(scanner.w1)
    takeovers = takeovers_of(scanner)
    read_parked = scanner.decisions.table.all_parked

    def parked_then_rejoin() -> list[Held]:
        records = read_parked()
        back = Membership(kv, pool=POOL, node="n2", timings=LeaseTimings())
        back.join({"ready": True})  # ... and is back before the claim
        return records

    scanner.decisions.table.all_parked = parked_then_rejoin  # type: ignore[method-assign]
    takeovers.scan()
    record = parked(scanner, orbit)
    assert record is not None and record["holder"]["node"] == "n2"  # the claim failed: LostRace
    assert sent.ops("takeover") == [] and orbit not in scanner.calls.held
    assert kv.get(Keys.member(POOL, "n2")) is not None


# -- 4. an own call waiting for a worker slot gives up; a claim carries the owed dialog ----------------


def test_an_own_call_with_no_worker_slot_is_lost_after_the_pickup_timeout_not_kept_forever(
    tmp_path: Path, kv: FaultKV
) -> None:
    node = make_node(tmp_path, kv)
    orbit = park(node)
    park_id = node.calls.held[orbit].call.park_id
    takeovers = takeovers_of(node)
    for h in node.workers.handles:
        h.free_slots = 0  # every worker full (e.g. restarting), for longer than a caller waits
    now = [1000.0]
    takeovers.clock = lambda: now[0]
    takeovers.take_over(node.calls.held[orbit])
    assert orbit in takeovers.retake and orbit in node.calls.moving
    wait = node.facts.settings.call_pickup_timeout_s
    now[0] += wait / 2
    takeovers.retry()
    assert orbit in takeovers.retake and node.decisions.table.history(park_id) is None  # still waiting
    now[0] += wait
    takeovers.retry()
    history = node.decisions.table.history(park_id)
    assert history is not None and history["outcome"] == "lost", history
    assert orbit not in takeovers.retake and orbit not in node.calls.moving and orbit not in node.calls.held


def test_the_takeover_of_an_own_call_carries_its_owed_dialog_change(tmp_path: Path, kv: FaultKV) -> None:
    node = make_node(tmp_path, kv)
    orbit = park(node)
    held = node.calls.held[orbit]
    new_dialog = replace(held.call.dialog, call_id="after-attended@phone", local_tag="new-tag")
    kv.time_out(puts(Keys.parked(orbit)), applied=False, then_reads_fail=1)  # etcd blip: the write is owed
    node.calls.mutate(orbit, lambda c: replace(c, dialog=new_dialog))
    kv.reads_failing = 0
    assert orbit in node.calls.owed
    sent = {h.index: listen(h) for h in node.workers.handles}
    takeovers_of(node).worker_restarted(node.workers.handles[held.call.holder.worker])  # its worker died
    invites = [m for s in sent.values() for m in s.ops("takeover")]
    assert [m["dialog"]["call_id"] for m in invites] == ["after-attended@phone"]  # not the stale dialog
    record = parked(node, orbit)
    assert record is not None and record["dialog"]["local_tag"] == "new-tag" and orbit not in node.calls.owed
