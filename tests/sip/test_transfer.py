"""Transfers and redirects between real phone processes (the flows the park node relies on)."""

from __future__ import annotations

from callpark.sip.message import parse_name_addr, parse_replaces
from tests.sip.helpers import PhoneFactory, assert_talking, connect


def test_blind_transfer(make_phone: PhoneFactory) -> None:
    """B REFERs A to C: A ends up talking to C; B's leg is gone."""
    alice = make_phone("alice")
    bob = make_phone("bob", auto_answer=True)
    carol = make_phone("carol", auto_answer=True)
    a_b, b_a = connect(alice, bob)

    since_a, since_b, since_c = alice.mark(), bob.mark(), carol.mark()
    bob.blind_transfer(b_a, carol.uri)
    request = alice.wait_for("transfer_request", call=a_b, since=since_a)
    assert request["accepted"] and request["target"] == carol.uri
    a_c = request["new_call"]
    alice.wait_state(a_c, "CONFIRMED", since=since_a)
    c_a = carol.wait_incoming(since=since_c)
    assert carol.wait_for("incoming", call=c_a)["referred_by"] == "sip:bob@127.0.0.1"  # no port
    carol.wait_state(c_a, "CONFIRMED", since=since_c)

    final = bob.wait_event(lambda e: e["event"] == "transfer_status" and e["final"], since=since_b)
    assert final["code"] == 200
    bob.wait_state(b_a, "DISCONNECTED", since=since_b)
    alice.wait_state(a_b, "DISCONNECTED", since=since_a)
    assert bob.calls() == []
    assert [c["call"] for c in alice.calls()] == [a_c]
    assert alice.call_info(a_c)["transferred_from"] == a_b
    alice.wait_for("media_state", call=a_c, active=True, since=since_a)
    carol.wait_for("media_state", call=c_a, active=True, since=since_c)
    assert_talking(alice, a_c, carol, c_a, 900)


def test_attended_transfer_with_replaces(make_phone: PhoneFactory) -> None:
    """B talks to A and C, then REFERs A to C's Contact with Replaces of the B-C dialog."""
    alice = make_phone("alice")
    bob = make_phone("bob", auto_answer=True)
    carol = make_phone("carol", auto_answer=True)
    a_b, b_a = connect(alice, bob)
    b_c, c_b = connect(bob, carol)
    b_c_info = bob.call_info(b_c)

    since_a, since_b, since_c = alice.mark(), bob.mark(), carol.mark()
    refer_to = bob.attended_transfer(b_a, b_c)
    # Refer-To is built from C's Contact (port kept), not from the port-less remote URI.
    target = parse_name_addr(refer_to).sip_uri()
    assert (target.user, target.port) == ("carol", carol.sip_port)
    replaces = parse_replaces(target.uri_header("Replaces") or "")
    assert replaces.call_id == b_c_info["call_id"]
    assert (replaces.to_tag, replaces.from_tag) == (b_c_info["remote_tag"], b_c_info["local_tag"])

    a_c = alice.wait_for("transfer_request", call=a_b, since=since_a)["new_call"]
    alice.wait_state(a_c, "CONFIRMED", since=since_a)
    replaced = carol.wait_for("replaced", call=c_b, since=since_c)
    c_a = replaced["new_call"]
    carol.wait_state(c_a, "CONFIRMED", since=since_c)
    carol.wait_state(c_b, "DISCONNECTED", since=since_c)
    bob.wait_state(b_c, "DISCONNECTED", since=since_b)
    bob.wait_state(b_a, "DISCONNECTED", since=since_b)
    alice.wait_state(a_b, "DISCONNECTED", since=since_a)
    assert bob.calls() == []
    assert [c["call"] for c in alice.calls()] == [a_c]
    assert [c["call"] for c in carol.calls()] == [c_a]
    assert carol.call_info(c_a)["referred_by"] == "sip:bob@127.0.0.1"
    alice.wait_for("media_state", call=a_c, active=True, since=since_a)
    carol.wait_for("media_state", call=c_a, active=True, since=since_c)
    assert_talking(carol, c_a, alice, a_c, 1100)


def test_redirect_302_is_followed(make_phone: PhoneFactory) -> None:
    """R answers 302 with C's Contact; A follows it and talks to C. With redirects refused, 302 ends it."""
    alice = make_phone("alice")
    redirector = make_phone("rita")
    carol = make_phone("carol", auto_answer=True)

    since_a, since_c = alice.mark(), carol.mark()
    a_call = alice.call(redirector.uri)
    r_call = redirector.wait_incoming()
    redirector.reject_with_redirect(r_call, carol.contact)
    assert redirector.wait_state(r_call, "DISCONNECTED")["code"] == 302
    redirected = alice.wait_for("redirected", call=a_call, since=since_a)
    assert redirected["accepted"] and redirected["contact"] == carol.contact
    assert redirected["target"] == "<sip:carol@127.0.0.1>"  # pjsua prints it without the port
    alice.wait_state(a_call, "CONFIRMED", since=since_a)
    c_call = carol.wait_incoming(since=since_c)
    carol.wait_state(c_call, "CONFIRMED", since=since_c)
    assert alice.call_info(a_call)["remote_contact"] == f"<sip:carol@127.0.0.1:{carol.sip_port}>"
    alice.hangup(a_call)
    carol.wait_state(c_call, "DISCONNECTED", since=since_c)

    alice.set_accept_redirects(False)
    since_a, since_r = alice.mark(), redirector.mark()
    a_call = alice.call(redirector.uri)
    r_call = redirector.wait_incoming(since=since_r)
    redirector.reject_with_redirect(r_call, carol.contact)
    alice.wait_for("redirected", call=a_call, accepted=False, since=since_a)
    assert alice.wait_state(a_call, "DISCONNECTED", since=since_a)["code"] != 200
    assert carol.calls() == []
