"""Draining a live node: real etcd, two real node processes, real phones."""

from __future__ import annotations

import time

from callpark.lab.phone.flows import blind_park, connected_call
from callpark.store.kv import Put
from callpark.store.records import encode, stamp_bytes
from callpark.store.schema import Keys
from callpark.waiting import wait_until
from tests.node.conftest import POOL, ParkLab, corrupt


def test_a_draining_node_keeps_a_caller_without_replaces_and_its_peer_takes_the_rest(lab: ParkLab) -> None:
    lab.configure()
    n1 = lab.node("n1")
    n2 = lab.node("n2")
    parker = lab.phone("parker")
    alice, bob = lab.phone("alice", auto_answer=True), lab.phone("bob", auto_answer=True)
    blind_park(parker, alice, n1.park_uri())
    blind_park(parker, bob, n1.park_uri())
    moving, staying = lab.wait_parked("alice"), lab.wait_parked("bob")
    # bob's phone does not support Replaces (as a caller without it would have told the node)
    staying["dialog"]["supports_replaces"] = False
    corrupt(lab.store, staying["orbit"], encode({k: v for k, v in staying.items() if k != "v"}))
    lab.store.txn([], [Put(Keys.drain(POOL, "n1"), stamp_bytes(time.time()))])

    def moved() -> bool:
        record = lab.parked().get(moving["orbit"])
        return bool(
            record and record["holder"]["node"] == "n2" and record["dialog"]["call_id"] != moving["dialog"]["call_id"]
        )

    wait_until(moved, timeout=20, what="alice's call moved to n2")
    time.sleep(1.5)  # three more takeover scans of n2
    kept = lab.parked().get(staying["orbit"])
    assert kept is not None and kept["holder"]["node"] == "n1", kept
    assert lab.history(staying["park_id"]) is None, "a caller that cannot move is not lost"
    assert n2.metric("callpark_lost_calls_total") == 0
    # bob is still parked on n1 and his hang-up ends the call there
    bob.hangup(connected_call(bob, remote_contains="park@"))
    assert lab.wait_outcome(staying["park_id"]) == "abandoned"
