"""Account with a registrar and an outbound proxy (a fake UDP responder stands in for Kamailio)."""

from __future__ import annotations

from callpark.sip.message import contact_uri, parse_message
from callpark.waiting import wait_until
from tests.sip.fake_sip import FakeSipServer
from tests.sip.helpers import PhoneFactory


def test_register_unregister_and_outbound_proxy(make_phone: PhoneFactory) -> None:
    with FakeSipServer(other_code=480) as edge:
        alice = make_phone("alice", registrar=edge.hostport, proxy=edge.hostport)
        assert edge.received("REGISTER") == []  # nothing before register()
        state = alice.register()
        assert state["active"] and state["code"] == 200
        register = parse_message(edge.received("REGISTER")[0])
        assert register.start_line == f"REGISTER sip:{edge.hostport} SIP/2.0"
        assert register.header("To") == "<sip:alice@127.0.0.1>"  # the AOR: pjsip prints no port in To
        assert contact_uri(register.header("Contact") or "").port == alice.sip_port
        assert alice.command("status")["reg_active"] is True

        # Calls go through the outbound proxy whatever the target.
        since = alice.mark()
        call = alice.call("sip:7001@park.example")
        assert alice.wait_state(call, "DISCONNECTED", since=since)["code"] == 480
        invite = parse_message(wait_until(lambda: edge.received("INVITE"), timeout=5, what="INVITE at proxy")[0])
        assert invite.start_line == "INVITE sip:7001@park.example SIP/2.0"
        assert invite.header("Route") == f"<sip:{edge.hostport};lr>"

        # A MESSAGE to an AOR goes to the proxy too.
        alice.send_message("sip:bob@park.example", "hi")
        wait_until(lambda: edge.received("MESSAGE"), timeout=5, what="MESSAGE at proxy")

        state = alice.unregister()
        assert not state["active"]
        assert len(edge.received("REGISTER")) >= 2
