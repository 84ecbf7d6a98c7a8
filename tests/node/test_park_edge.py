"""Flows through the SIP edge: phones register with Kamailio, nodes send through it.

The parker is reachable only through the registrar (pjsip drops ports from
Referred-By), so the orbit MESSAGE, ringbacks and OnTimeoutURI transfers are tested
here. CallPickupTimeoutThreshold cannot go below Lync's 10 s minimum, so each
ringback test waits at least that long.
"""

from __future__ import annotations

import contextlib
import socket

from callpark.lab.phone.flows import blind_park, connected_call, hears_music, talking
from callpark.netutil import LOOPBACK
from callpark.waiting import wait_until
from tests.node.conftest import ParkLab
from tests.node.helpers import behind_the_edge, check_retrieved

DOMAIN_URI = "sip:{user}@" + LOOPBACK


def uri(user: str) -> str:
    return DOMAIN_URI.format(user=user)


def test_blind_park_via_the_edge_messages_the_orbit_and_any_phone_retrieves(lab: ParkLab) -> None:
    node, parker, alice = behind_the_edge(lab, workers=2)
    carol = lab.phone("carol", via_edge=True)
    since = parker.mark()
    blind_park(parker, alice, uri("park"), caller_uri=uri("alice"))
    record = lab.wait_parked("alice")
    message = parker.wait_event(lambda e: e["event"] == "message", since=since, timeout=10, what="orbit MESSAGE")
    assert f"orbit={record['orbit']}" in message["body"] and record["park_id"] in message["body"]
    assert hears_music(alice, connected_call(alice, remote_contains="park@"))
    # retrieval through the edge reaches the holder (302 from a non-holder is followed)
    c_since = carol.mark()
    handle = carol.call(uri(record["orbit"]))
    carol.wait_state(handle, "CONFIRMED", since=c_since, timeout=10)
    check_retrieved(lab, node, alice, carol, record["park_id"], "ok")


def test_ringback_answered_hands_the_caller_to_the_parker(lab: ParkLab) -> None:
    node, parker, alice = behind_the_edge(lab, node_args={"ring_time_s": 5}, timeout="00:00:10")
    blind_park(parker, alice, uri("park"), caller_uri=uri("alice"))
    record = lab.wait_parked("alice")
    parker.set_auto_answer(200)
    p_call = connected_call(parker, remote_contains="alice@", timeout=25)
    a_call = connected_call(alice, remote_contains="parker@")
    assert talking(alice, a_call, parker, p_call)
    assert lab.wait_outcome(record["park_id"]) == "rang-back"
    assert node.metric("callpark_ringbacks_total", outcome="answered") == 1


def test_unanswered_ringback_goes_to_on_timeout_uri(lab: ParkLab) -> None:
    node, parker, alice = behind_the_edge(
        lab, node_args={"ring_time_s": 2}, timeout="00:00:10", on_timeout_uri=uri("operator")
    )
    operator = lab.phone("operator", via_edge=True, auto_answer=True)
    blind_park(parker, alice, uri("park"), caller_uri=uri("alice"))
    record = lab.wait_parked("alice")
    # the parker's phone rings (it does not answer); after the ring time the call moves on
    parker.wait_event(lambda e: e["event"] == "incoming", timeout=25, what="ringback to the parker")
    a_call = connected_call(alice, remote_contains="operator@", timeout=20)
    o_call = connected_call(operator, remote_contains="alice@")
    assert talking(alice, a_call, operator, o_call)
    assert lab.wait_outcome(record["park_id"]) == "forwarded"
    assert node.metric("callpark_ringbacks_total", outcome="no-answer") == 1
    assert node.metric("callpark_timeouts_total", outcome="forwarded") == 1


def test_each_unanswered_ringback_rearms_the_timer_then_the_call_is_disconnected(lab: ParkLab) -> None:
    node, parker, alice = behind_the_edge(lab, node_args={"ring_time_s": 2}, timeout="00:00:10", attempts=2)
    blind_park(parker, alice, uri("park"), caller_uri=uri("alice"))
    first = lab.wait_parked("alice")
    orbit = first["orbit"]

    def rearmed() -> dict[str, object] | None:
        record = lab.parked().get(orbit)
        return record if record and record["attempts"] == 1 and record["state"] == "parked" else None

    second = wait_until(rearmed, timeout=25, what="first ringback unanswered and the timer re-armed")
    assert float(second["deadline"]) >= float(first["deadline"]) + 10  # type: ignore[arg-type]
    assert second["park_id"] == first["park_id"]
    a_call = connected_call(alice, remote_contains="park@")
    alice.wait_for("call_state", call=a_call, state="DISCONNECTED", timeout=25)
    assert lab.wait_outcome(first["park_id"]) == "disconnected"
    assert node.metric("callpark_ringbacks_total", outcome="no-answer") == 2
    assert node.metric("callpark_timeouts_total", outcome="disconnected") == 1


def test_the_edge_keeps_its_internal_source_header_away_from_phones(lab: ParkLab) -> None:
    """X-Callpark-Source is for the nodes only: not on the orbit MESSAGE, not on a phone's call."""
    _, parker, alice = behind_the_edge(lab)
    since = parker.mark()
    a_since = alice.mark()
    handle = blind_park(parker, alice, uri("park"), caller_uri=uri("alice"))
    assert handle
    incoming = alice.wait_event(lambda e: e["event"] == "incoming", since=a_since, timeout=10, what="parker's call")
    assert "X-Callpark-Source" not in incoming["x_headers"], incoming["x_headers"]
    lab.wait_parked("alice")
    message = parker.wait_event(lambda e: e["event"] == "message", since=since, timeout=10, what="orbit MESSAGE")
    assert "X-Callpark-Source" not in message["x_headers"], message["x_headers"]
    assert "X-Callpark-Orbit" in message["x_headers"] or "orbit=" in message["body"]


def test_the_orbit_message_comes_from_the_deployments_sip_domain(lab: ParkLab) -> None:
    """One SIP domain per deployment: the lab's edge serves 127.0.0.1, so the orbit MESSAGE
    must come from sip:park@127.0.0.1 (a reply to sip:park@callpark.test got 478 from the edge)."""
    _, parker, alice = behind_the_edge(lab)
    since = parker.mark()
    blind_park(parker, alice, uri("park"), caller_uri=uri("alice"))
    lab.wait_parked("alice")
    message = parker.wait_event(lambda e: e["event"] == "message", since=since, timeout=10, what="orbit MESSAGE")
    assert message["from"].strip("<>").startswith(f"sip:park@{LOOPBACK}"), message["from"]


def test_parker_and_on_timeout_uri_outside_the_sip_domain_are_never_called(lab: ParkLab) -> None:
    """Toll fraud: the parker URI comes from Referred-By, so anyone can name any target. A park
    whose Referred-By is at 127.0.0.9 (outside the deployment's domain 127.0.0.1; loopback only,
    nothing leaves the machine) is refused (403, counted), and an OnTimeoutURI there is never
    dialled either: the call is hung up. A UDP socket on 127.0.0.9:5060 catches anything sent there."""
    outside = "127.0.0.9"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as trap:
        trap.bind((outside, 5060))
        trap.settimeout(0.2)
        lab.configure(on_timeout_uri=f"sip:operator@{outside}")
        node = lab.node(edge=True, ring_time_s=2)
        lab.start_edge()
        parker = lab.phone("parker", domain=outside)
        alice = lab.phone("alice", auto_answer=True)
        since = alice.mark()
        blind_park(parker, alice, node.park_uri())
        event = alice.wait_event(
            lambda e: e["event"] == "call_state" and e["state"] == "DISCONNECTED" and "park@" in e["remote_uri"],
            since=since,
            timeout=10,
            what="alice's refused park",
        )
        assert event["code"] == 403, event
        assert lab.parked() == {}
        assert node.metric("callpark_parks_total", result="foreign-parker") == 1
        # an in-domain parker nobody answers: ringbacks fail, then OnTimeoutURI (outside) is skipped
        inside = lab.phone("parker2")
        bob = lab.phone("bob", auto_answer=True)
        blind_park(inside, bob, node.park_uri())
        record = lab.wait_parked("bob")
        assert lab.wait_outcome(record["park_id"], timeout=60) == "disconnected"
        caught = []
        with contextlib.suppress(TimeoutError):
            while True:
                caught.append(trap.recv(65535).decode(errors="replace").split("\r\n", 1)[0])
        assert caught == [], f"the node sent requests outside its SIP domain: {caught}"
