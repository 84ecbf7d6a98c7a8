"""A node that (re)starts while etcd has no quorum: real etcd, a real node process, real phones."""

from __future__ import annotations

import json
import os
import signal
import time

from callpark.lab.etcd import LocalEtcdCluster
from callpark.lab.phone.flows import blind_park, call_and_answer, hears_music
from callpark.waiting import wait_until
from tests.node.conftest import ParkLab


def test_a_node_restarted_before_etcd_is_back_starts_fenced_then_recovers_its_calls(
    lab: ParkLab, etcd_cluster: LocalEtcdCluster
) -> None:
    lab.configure(attempts=2)  # the deadline passes while the node is away
    first = lab.node()
    parker, alice = lab.phone("parker"), lab.phone("alice", auto_answer=True)
    blind_park(parker, alice, first.park_uri())
    before = lab.wait_parked("alice")
    since_park = parker.mark()
    first.kill9()  # the host crashes...
    lab.nodes.remove(first)
    etcd_cluster.kill(0)  # ...and comes back before etcd has quorum
    try:
        node = lab.node()  # systemd starts it: it must not exit
        status, body = node.get("/readyz")
        assert status == 503 and "fenced" in body, (status, body)
        since = parker.mark()
        refused = parker.call(node.park_uri())
        event = parker.wait_for("call_state", call=refused, state="DISCONNECTED", since=since, timeout=10)
        assert event["code"] == 503, event
    finally:
        etcd_cluster.restart(0)
    # our previous process's member key expires, the node joins and takes its call back
    wait_until(lambda: node.get("/readyz")[0] == 200, timeout=30, what="node ready once etcd is back")

    def recovered() -> dict[str, object] | None:
        record = lab.parked().get(before["orbit"])
        return record if record and record["dialog"]["call_id"] != before["dialog"]["call_id"] else None

    after = wait_until(
        recovered, timeout=20, what=f"the call taken over by the restarted node; etcd holds {lab.parked()}"
    )
    assert after["park_id"] == before["park_id"]
    a_call = wait_until(
        lambda: next((c["call"] for c in alice.calls() if c["state"] == "CONFIRMED" and c.get("replaces")), None),
        timeout=10,
        what="alice's call after the takeover",
    )
    assert hears_music(alice, a_call)
    # the overdue ringback rings the parker once the node holds the call (not "not held here")
    parker.wait_event(lambda e: e["event"] == "incoming", since=since_park, timeout=15, what="the ringback")
    assert json.loads(node.get("/api/node")[1])["ready"] is True


def test_an_attended_park_completed_during_an_etcd_blip_is_recorded_and_survives_a_takeover(
    lab: ParkLab, etcd_cluster: LocalEtcdCluster
) -> None:
    lab.configure()
    node = lab.node()
    parker, alice = lab.phone("parker"), lab.phone("alice", auto_answer=True)
    to_alice = call_and_answer(parker, alice)
    to_park = call_and_answer(parker, alice, node.park_uri())
    orbit = parker.received_header(to_park, "X-Callpark-Orbit")
    assert orbit
    wait_until(lambda: lab.parked()[orbit]["dialog"]["local_tag"], timeout=10, what="the park answered")
    etcd_cluster.pause(0)  # a blip shorter than the lease: the node stays valid
    try:
        parker.attended_transfer(to_alice, to_park)
        time.sleep(2.0)  # the worker reports alice's dialog; its write times out
    finally:
        etcd_cluster.resume(0)
    record = wait_until(
        lambda: (r := lab.parked()[orbit]) and "alice@" in r["caller_uri"] and r,
        timeout=10,
        what="the record names alice's dialog once etcd is back",
    )
    # etcd may apply the write it held while paused before the node hears back: wait until the
    # node itself serves again (owed writes settled) before the crash. A worker killed within the
    # node's fail-fast window is a separate, rarer case (see the closing note of this change).
    wait_until(lambda: node.get("/readyz")[0] == 200, timeout=30, what="node ready once etcd is back")
    # the dialog in etcd is the one a takeover needs: kill the worker, the call survives
    os.kill(int(json.loads(node.get("/api/node")[1])["workers"][0]["pid"]), signal.SIGKILL)
    wait_until(
        lambda: lab.parked()[orbit]["dialog"]["call_id"] != record["dialog"]["call_id"],
        timeout=20,
        what="alice's call taken over by the restarted worker",
    )
    a_call = wait_until(
        lambda: next((c["call"] for c in alice.calls() if c["state"] == "CONFIRMED" and c.get("replaces")), None),
        timeout=10,
        what="alice's call after the takeover",
    )
    assert hears_music(alice, a_call)
    assert lab.history(lab.parked()[orbit]["park_id"]) is None
