"""What the chaos checker reads from records names a node as ``pool/name`` (issue 12: two pools
both have an ``n1``). Real etcd, records written by the node's own parking table."""

from __future__ import annotations

import json

from callpark.model.orbits import OrbitRange
from callpark.node.membership import Membership
from callpark.store.etcd import EtcdStore
from callpark.store.parking import ParkTable
from callpark.store.records import Dialog, Holder, Outcome, ParkKind
from callpark.store.schema import Keys
from callpark.store.session import LeaseTimings

FAST = LeaseTimings(ttl_s=4, keepalive_s=0.5, safety_s=1.5, request_timeout_s=1.0)


def test_a_call_end_names_its_node_as_pool_and_name(etcd: EtcdStore) -> None:
    m = Membership(etcd, pool="pool-a", node="n1", timings=FAST)
    m.join({"ready": True, "incarnation": "i1"})
    m.start()
    try:
        table = ParkTable(etcd, node=m.node, pool=m.pool, member_key=m.key)  # as node/supervisor.py builds it
        table.lease = m.lease
        held = table.allocate(
            [OrbitRange("r", "7000", "7002", "pool-a")],
            target=None,
            holder=Holder("n1", 0, "127.0.0.1:5070", "pool-a", "i1"),
            dialog=Dialog("cid@host", "ltag", "rtag", "sip:a@127.0.0.1:5062", "sip:a@127.0.0.1", True),
            kind=ParkKind.BLIND,
            caller_uri="sip:a@127.0.0.1",
            parker_uri="sip:p@127.0.0.1",
            timeout_s=90,
        )
        parked = json.loads(etcd.get(Keys.parked(held.call.orbit)).value)  # type: ignore[union-attr]
        assert parked["holder"]["pool"] == "pool-a" and parked["holder"]["incarnation"] == "i1"
        table.free(held, Outcome.ABANDONED, "caller-hangup")
        ended = json.loads(etcd.get(Keys.history(held.call.park_id)).value)  # type: ignore[union-attr]
        assert ended["node"] == "pool-a/n1", ended
    finally:
        m.stop()
