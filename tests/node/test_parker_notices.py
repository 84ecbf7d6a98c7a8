"""Parker notices (node/notify.py): the parker is told by MESSAGE what became of its call.

Real pjsua2 phones registered with the Kamailio edge, a real node and etcd. Each test parks
alice by a blind transfer (the parker gets the orbit MESSAGE first), then makes one thing
happen to the call and reads the parker's MESSAGEs: ``X-Callpark-Event`` and the body's
``event=``/``by=`` lines. With ``--parker-notices off`` none is sent.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from callpark.lab.phone import Phone
from callpark.lab.phone.flows import blind_park, connected_call
from callpark.netutil import LOOPBACK
from tests.node.conftest import ParkLab
from tests.node.helpers import behind_the_edge


def uri(user: str) -> str:
    return f"sip:{user}@{LOOPBACK}"


def notices(phone: Phone, since: int) -> list[dict[str, Any]]:
    """The parker notices ``phone`` received since ``since`` (orbit MESSAGEs left out)."""
    return [e for e in phone.events("message", since=since) if "event=" in e["body"]]


def wait_notice(phone: Phone, since: int, event: str, timeout: float = 10) -> dict[str, Any]:
    message = phone.wait_event(
        lambda e: e["event"] == "message" and f"event={event}\r\n" in e["body"],
        since=since,
        timeout=timeout,
        what=f"{event} notice",
    )
    assert message["x_headers"].get("X-Callpark-Event") == event, message["x_headers"]
    assert message["from"].strip("<>").startswith(f"sip:park@{LOOPBACK}"), message["from"]
    return dict(message)


def park_alice(lab: ParkLab, parker: Phone, alice: Phone) -> dict[str, Any]:
    since = parker.mark()
    blind_park(parker, alice, uri("park"), caller_uri=uri("alice"))
    record = lab.wait_parked("alice")
    parker.wait_event(lambda e: e["event"] == "message" and "orbit=" in e["body"], since=since, what="orbit MESSAGE")
    return record


def test_the_parker_is_told_who_retrieved_its_call(lab: ParkLab) -> None:
    node, parker, alice = behind_the_edge(lab)
    carol = lab.phone("carol", via_edge=True)
    record = park_alice(lab, parker, alice)
    since = parker.mark()
    c_since = carol.mark()
    carol.wait_state(carol.call(uri(record["orbit"])), "CONFIRMED", since=c_since, timeout=10)
    message = wait_notice(parker, since, "retrieved")
    assert f"orbit={record['orbit']}" in message["body"] and record["park_id"] in message["body"], message
    assert "by=sip:carol@" in message["body"], message["body"]
    assert lab.wait_outcome(record["park_id"]) == "retrieved"
    assert node.metric("callpark_parker_notices_total", event="retrieved") == 1


def test_the_parker_is_told_when_the_parked_caller_hangs_up(lab: ParkLab) -> None:
    _node, parker, alice = behind_the_edge(lab)
    record = park_alice(lab, parker, alice)
    since = parker.mark()
    alice.hangup(connected_call(alice, remote_contains="park@"))
    message = wait_notice(parker, since, "abandoned")
    assert f"orbit={record['orbit']}" in message["body"], message
    assert lab.wait_outcome(record["park_id"]) == "abandoned"


def test_the_parker_is_told_the_call_went_to_on_timeout_uri(lab: ParkLab) -> None:
    _node, parker, alice = behind_the_edge(
        lab, node_args={"ring_time_s": 2}, timeout="00:00:10", on_timeout_uri=uri("operator")
    )
    lab.phone("operator", via_edge=True, auto_answer=True)
    record = park_alice(lab, parker, alice)
    since = parker.mark()
    message = wait_notice(parker, since, "forwarded", timeout=30)
    assert f"by={uri('operator')}" in message["body"], message["body"]
    assert lab.wait_outcome(record["park_id"]) == "forwarded"


def test_the_parker_is_told_its_call_was_taken_over_after_a_worker_crash(lab: ParkLab) -> None:
    node, parker, alice = behind_the_edge(lab)
    record = park_alice(lab, parker, alice)
    since = parker.mark()
    os.kill(int(json.loads(node.get("/api/node")[1])["workers"][0]["pid"]), signal.SIGKILL)
    message = wait_notice(parker, since, "taken-over", timeout=30)
    assert f"orbit={record['orbit']}" in message["body"] and record["park_id"] in message["body"], message
    assert f"by={node.pool}/n1" in message["body"], message["body"]
    after = lab.parked()[record["orbit"]]
    assert after["park_id"] == record["park_id"] and after["dialog"]["call_id"] != record["dialog"]["call_id"]


def test_with_parker_notices_off_the_parker_gets_only_the_orbit(lab: ParkLab) -> None:
    node, parker, alice = behind_the_edge(lab, node_args={"extra": ["--parker-notices", "off"]})
    bob = lab.phone("bob", via_edge=True, auto_answer=True)
    dave = lab.phone("dave", via_edge=True, auto_answer=True)
    carol = lab.phone("carol", via_edge=True)
    since = parker.mark()
    first = park_alice(lab, parker, alice)
    # retrieved: carol picks alice up
    c_since = carol.mark()
    carol.wait_state(carol.call(uri(first["orbit"])), "CONFIRMED", since=c_since, timeout=10)
    assert lab.wait_outcome(first["park_id"]) == "retrieved"
    # abandoned: bob is parked and hangs up
    b_since = parker.mark()
    blind_park(parker, bob, uri("park"), caller_uri=uri("bob"))
    second = lab.wait_parked("bob")
    parker.wait_event(lambda e: e["event"] == "message" and "orbit=" in e["body"], since=b_since, what="orbit MESSAGE")
    bob.hangup(connected_call(bob, remote_contains="park@"))
    assert lab.wait_outcome(second["park_id"]) == "abandoned"
    # a later orbit MESSAGE (same worker, same path to the parker) arrives after any notice would have
    d_since = parker.mark()
    blind_park(parker, dave, uri("park"), caller_uri=uri("dave"))
    lab.wait_parked("dave")
    parker.wait_event(lambda e: e["event"] == "message" and "orbit=" in e["body"], since=d_since, what="orbit MESSAGE")
    assert notices(parker, since) == [], notices(parker, since)
    assert node.metric("callpark_parker_notices_total", event="retrieved") == 0
    assert node.metric("callpark_parker_notices_total", event="abandoned") == 0
