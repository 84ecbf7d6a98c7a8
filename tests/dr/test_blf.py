"""Busy lamp field with real processes: a raw-UDP BLF watcher subscribed at the real Kamailio
edge, real etcd, real nodes and pjsua2 phones. The lamp lights when a call is parked on the
orbit, goes dark when it is retrieved, and stays lit through a pool kill and takeover (the
backup pool's node publishes again) until the retrieval there."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from callpark.lab.blf import BlfWatcher
from callpark.lab.phone import Phone
from callpark.lab.phone.flows import connected_call
from callpark.netutil import LOOPBACK
from callpark.waiting import wait_until
from tests.conftest import Cli
from tests.dr.conftest import DrLab

POOL_B_NODES = ("pool-b-n1", "pool-b-n2")
ORBIT = "7015"


@contextlib.contextmanager
def lamp(dr: DrLab, orbit: str) -> Iterator[BlfWatcher]:
    """A BLF key on ``orbit``, subscribed and showing its first (idle) state."""
    with BlfWatcher((LOOPBACK, dr.c.edge_port), f"sip:{orbit}@{LOOPBACK}") as watcher:
        reply = watcher.subscribe()
        assert reply is not None and reply.status_code == 200, reply
        first = watcher.wait_state("terminated", timeout=10)  # idle: the edge's dummy dialog
        assert first.subscription_state.startswith("active")
        yield watcher


def press_key(retriever: Phone, target: str, caller: Phone) -> None:
    """What pressing a lit BLF key does: dial the lamp's remote target, which retrieves."""
    since = retriever.mark()
    handle = retriever.call(target)
    retriever.wait_state(handle, "CONFIRMED", since=since, timeout=15)
    connected_call(caller, remote_contains=f"{retriever.user}@")


def test_lamp_lights_at_park_and_goes_dark_at_retrieve(dr: DrLab) -> None:
    dr.start()
    parker, caller, retriever = dr.phone("parker"), dr.phone("alice", auto_answer=True), dr.phone("carol")
    with lamp(dr, ORBIT) as watcher:
        since = watcher.mark()
        record = dr.park(parker, caller, target=ORBIT)
        lit = watcher.wait_state("confirmed", dialog_id=record["park_id"], since=since, timeout=10)
        (dialog,) = lit.dialogs
        assert dialog.remote_target == f"sip:{ORBIT}@{LOOPBACK}", "the key dials the orbit"
        since = watcher.mark()
        press_key(retriever, dialog.remote_target, caller)
        watcher.wait_state("terminated", dialog_id=record["park_id"], since=since, timeout=10)
        # a parked caller who gives up darkens the lamp too
        retriever.hangup_all()
        bob = dr.phone("bob", auto_answer=True)
        since = watcher.mark()
        again = dr.park(parker, bob, target=ORBIT)
        watcher.wait_state("confirmed", dialog_id=again["park_id"], since=since, timeout=10)
        since = watcher.mark()
        bob.hangup_all()
        watcher.wait_state("terminated", dialog_id=again["park_id"], since=since, timeout=10)


def test_lamp_stays_lit_through_a_pool_kill_and_goes_dark_after_retrieval(dr: DrLab) -> None:
    cluster = dr.start()
    parker, caller, retriever = dr.phone("parker"), dr.phone("alice", auto_answer=True), dr.phone("carol")
    with lamp(dr, ORBIT) as watcher:
        since = watcher.mark()
        record = dr.park(parker, caller, target=ORBIT)
        park_id = record["park_id"]
        lit = watcher.wait_state("confirmed", dialog_id=park_id, since=since, timeout=10)
        for node in cluster.nodes["pool-a"]:
            node.kill9()
        wait_until(
            lambda: (
                dr.parked().get(ORBIT, {}).get("holder", {}).get("node") in POOL_B_NODES
                and dr.parked()[ORBIT]["dialog"]["call_id"] != record["dialog"]["call_id"]
            ),
            timeout=30,
            what="pool-b to take the call over",
        )
        # the new holder publishes (from its claim on, maybe before the INVITE/Replaces is done):
        # a NOTIFY after the first lit one, still lit for the same park; pool-a is dead
        lit_at = watcher.notifies.index(lit)
        watcher.wait_state("confirmed", dialog_id=park_id, since=lit_at + 1, timeout=15)
        states = [n.state for n in watcher.since(lit_at)]
        assert "terminated" not in states, f"the lamp went dark during the takeover: {states}"
        since = watcher.mark()
        press_key(retriever, f"sip:{ORBIT}@{LOOPBACK}", caller)
        # pool-b's terminated beats pool-a's stale (never withdrawn) confirmed of the same dialog
        watcher.wait_state("terminated", dialog_id=park_id, since=since, timeout=10)


def test_lamp_stays_lit_while_a_drain_moves_the_call(dr: DrLab) -> None:
    cluster = dr.start()
    parker, caller, retriever = dr.phone("parker"), dr.phone("alice", auto_answer=True), dr.phone("carol")
    with lamp(dr, ORBIT) as watcher:
        since = watcher.mark()
        record = dr.park(parker, caller, target=ORBIT)
        lit = watcher.wait_state("confirmed", dialog_id=record["park_id"], since=since, timeout=10)
        lit_at = watcher.notifies.index(lit)
        node = record["holder"]["node"]
        assert "drained" in Cli(cluster.endpoints).ok("dr", "drain", "--node", f"pool-a/{node}")
        assert dr.parked()[ORBIT]["holder"]["node"] != node
        # the new holder publishes (a NOTIFY after the first lit one); the old one never withdraws
        watcher.wait_state("confirmed", dialog_id=record["park_id"], since=lit_at + 1, timeout=10)
        states = [n.state for n in watcher.since(lit_at)]
        assert "terminated" not in states, f"the lamp went dark during the drain: {states}"
        since = watcher.mark()
        press_key(retriever, f"sip:{ORBIT}@{LOOPBACK}", caller)
        watcher.wait_state("terminated", dialog_id=record["park_id"], since=since, timeout=10)
