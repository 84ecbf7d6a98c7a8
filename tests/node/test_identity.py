"""Node identity is pool/node: namesakes in two pools never take each other's calls
(real etcd, real node processes, real phones)."""

from __future__ import annotations

import time

from callpark.lab.phone.flows import blind_park
from callpark.model import admin
from tests.node.conftest import POOL, ParkLab


def test_a_restarted_namesake_in_another_pool_leaves_the_calls_with_their_holder(lab: ParkLab) -> None:
    lab.configure()
    lab.admin.change(lambda s: admin.new_pool(s, "pool-b", "site-b"))
    a = lab.node("n1")  # pool-a/n1
    b = lab.node("n1", pool="pool-b")  # pool-b/n1
    parker, alice = lab.phone("parker"), lab.phone("alice", auto_answer=True)
    blind_park(parker, alice, a.park_uri())
    before = lab.wait_parked("alice")
    assert before["holder"]["node"] == "n1"
    b.stop()  # pool-b/n1 restarts
    lab.nodes.remove(b)
    lab.node("n1", pool="pool-b")
    time.sleep(3.0)  # several recovery and scan cycles of the new process
    after = lab.parked().get(before["orbit"])
    assert after is not None, f"the call was taken from pool-a/n1: {lab.history(before['park_id'])}"
    assert after["park_id"] == before["park_id"]
    assert after["holder"] == before["holder"], after  # still pool-a/n1's, not adopted
    assert after["dialog"]["call_id"] == before["dialog"]["call_id"]  # no INVITE/Replaces was sent
    assert not any(c.get("replaces") for c in alice.calls()), alice.calls()
    assert lab.history(before["park_id"]) is None
    assert before["holder"].get("pool", POOL) == POOL
