"""Re-homing a range (``orbit set NAME --pool OTHER``) with real nodes: service moves, parked calls stay."""

from __future__ import annotations

from callpark.waiting import wait_until
from tests.conftest import Cli
from tests.dr.conftest import DrLab
from tests.dr.test_failover import POOL_B_NODES, retrieve


def test_a_re_homed_range_is_served_by_its_new_pool_and_its_parked_call_stays(dr: DrLab) -> None:
    cluster = dr.start()
    cli = Cli(cluster.endpoints)
    parker, retriever = dr.phone("parker"), dr.phone("carol")
    alice, bob = dr.phone("alice", auto_answer=True), dr.phone("bob", auto_answer=True)
    on_a = dr.park(parker, alice, "7001")  # directed park on a-park, served by pool-a
    assert on_a["holder"]["node"].startswith("pool-a-")
    out = cli.ok("orbit", "set", "a-park", "--pool", "pool-b")
    assert "re-homing it to pool-b: the failover controller moves its owner to pool-b" in out, out
    assert "1 call(s) parked on it stay with their holders" in out
    wait_until(lambda: dr.owners()["a-park"] == ("pool-b", 2), timeout=15, what="the controller to re-home a-park")
    on_b = dr.park(parker, bob, "7005")  # the same range now parks on pool-b
    assert on_b["holder"]["node"] in POOL_B_NODES and on_b["range"] == "a-park"
    assert dr.parked()[on_a["orbit"]]["holder"]["node"] == on_a["holder"]["node"], "the parked call stayed"
    retrieve(dr, retriever, on_b["orbit"], bob)
    retriever.hangup_all()
    retrieve(dr, retriever, on_a["orbit"], alice)


def test_a_range_added_while_the_cluster_runs_is_parked_on_and_retrieved_through_the_edge(dr: DrLab) -> None:
    cluster = dr.start()
    cli = Cli(cluster.endpoints)
    parker, retriever = dr.phone("parker"), dr.phone("carol")
    dave = dr.phone("dave", auto_answer=True)
    cli.ok("orbit", "new", "b-more", "--start", "7500", "--end", "7519", "--pool", "pool-b")
    wait_until(lambda: "b-more" in dr.owners(), timeout=5, what="the controller to assign the new range")
    assert cluster.edge is not None
    edge = cluster.edge
    wait_until(
        lambda: any(row.endswith("|pool-b|b-more") for row in edge.routes()),
        timeout=1.0,
        what="the edge routing the new range within a second of its owner",
    )
    on_new = dr.park(parker, dave, "7505")  # directed park: the edge routes 7505 by the live table
    assert on_new["holder"]["node"] in POOL_B_NODES and on_new["range"] == "b-more"
    retrieve(dr, retriever, "7505", dave)
