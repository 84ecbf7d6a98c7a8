"""A caller who hangs up while its holder is dead is not connected again by the takeover.

Real etcd, two real nodes behind the real edge, real phones. The holder is killed (-9, workers
too) and the parked caller hangs up at once: its BYE reaches the edge, which relays it to the
dead worker and waits (user_timeout, 20 s here). The surviving node takes the record over
within that time (lease TTL 6 s). pjsip accepts an INVITE/Replaces of a dialog whose BYE is unanswered, so
the takeover used to connect the caller again and later rang its parker back (found by the
chaos suite, smoke-lifecycle). The edge declines the Replaces of a dialog it saw a BYE end
(603), and the node records the park as abandoned.
"""

from __future__ import annotations

from callpark.edge.config import EdgeTimers
from callpark.lab.phone.flows import blind_park
from callpark.netutil import LOOPBACK
from callpark.waiting import wait_until
from tests.node.conftest import ParkLab

BYE_PATIENCE = EdgeTimers(user_timeout_ms=20_000)  # the BYE to the dead worker stays unanswered throughout


def test_a_caller_who_hung_up_while_its_holder_was_dead_stays_hung_up(lab: ParkLab) -> None:
    lab.configure(timeout="00:00:10")
    n1 = lab.node("n1", edge=True)
    n2 = lab.node("n2", edge=True)
    lab.start_edge(timers=BYE_PATIENCE)
    parker = lab.phone("parker", via_edge=True, auto_answer=True)
    alice = lab.phone("alice", via_edge=True, auto_answer=True)
    blind_park(parker, alice, f"sip:park@{LOOPBACK}", caller_uri=f"sip:alice@{LOOPBACK}")
    record = lab.wait_parked("alice")
    holder, survivor = (n1, n2) if record["holder"]["node"] == "n1" else (n2, n1)
    holder.kill9()  # the host crashes; its workers leave without BYE
    lab.nodes.remove(holder)
    before = {str(c["call"]) for c in alice.calls()}
    alice.hangup_all()  # the BYE goes to the edge, which waits for the dead worker
    history = wait_until(lambda: lab.history(record["park_id"]), timeout=30, what="the park's outcome")
    again = [c for c in alice.calls() if str(c["call"]) not in before and c.get("state") != "DISCONNECTED"]
    assert not again, f"alice, who hung up, has a call again: {again}"
    assert history["outcome"] == "abandoned", history
    assert "hung up" in str(history["detail"]), history
    assert history["node"] == f"{survivor.pool}/{survivor.name}", history
    assert survivor.metric("callpark_takeovers_total", result="caller-gone") == 1
