"""SIP security with real calls: trusted peers, orbit-scan limit, safe retrieve, digest auth.

Real etcd, real ``callpark node`` processes, real pjsua2 phones and a real Kamailio edge on
loopback. Distinct sources are distinct loopback addresses (127.0.0.2, 127.0.0.3, ...).
"""

from __future__ import annotations

import re
from typing import Any

from callpark.edge.credentials import DigestAuth, ha1
from callpark.lab.phone import Phone
from callpark.lab.phone.flows import blind_park, connected_call, hears_music, talking
from callpark.netutil import LOOPBACK
from tests.edge.uac import Uac
from tests.node.conftest import ParkLab
from tests.node.helpers import behind_the_edge, check_retrieved


def uri(user: str) -> str:
    return f"sip:{user}@{LOOPBACK}"


def refused(phone: Phone, target: str) -> dict[str, Any]:
    """``phone`` calls ``target``; the DISCONNECTED event of that call, which never connected."""
    since = phone.mark()
    handle = phone.call(target)
    event = phone.wait_state(handle, "DISCONNECTED", since=since, timeout=10)
    states = [e["state"] for e in phone.events("call_state", since=since) if e["call"] == handle]
    assert "CONFIRMED" not in states, f"{phone.user}'s call to {target} connected"
    return event


def retrieve(phone: Phone, target: str) -> str:
    since = phone.mark()
    handle = phone.call(target)
    phone.wait_state(handle, "CONFIRMED", since=since, timeout=10)
    return handle


def parked_message(parker: Phone, since: int) -> dict[str, Any]:
    return parker.wait_event(lambda e: e["event"] == "message", since=since, timeout=10, what="orbit MESSAGE")


def retrieve_uri_of(message: dict[str, Any]) -> str:
    found = re.search(r"retrieve-uri=(\S+)", message["body"])
    assert found, message["body"]
    assert message["x_headers"]["X-Callpark-Retrieve-Uri"] == f"<{found.group(1)}>"
    return found.group(1)


def test_requests_from_untrusted_peers_get_403_and_are_counted(lab: ParkLab) -> None:
    lab.configure()
    node = lab.node(extra=["--trusted-peers", "127.0.0.1/32"])
    stranger = lab.phone("stranger", host="127.0.0.2")
    event = refused(stranger, node.park_uri())
    assert (event["code"], event["reason"]) == (403, "Forbidden: untrusted peer")
    event = refused(stranger, node.orbit_uri("7000"))
    assert event["code"] == 403
    assert lab.parked() == {}
    assert node.metric("callpark_untrusted_rejected_total", pool="pool-a") == 2
    assert node.metric("callpark_parks_total", result="ok") == 0
    # a trusted peer (127.0.0.1) still parks
    parker, alice = lab.phone("parker"), lab.phone("alice", auto_answer=True)
    blind_park(parker, alice, node.park_uri())
    assert lab.wait_parked("alice")["orbit"] == "7000"
    assert node.metric("callpark_untrusted_rejected_total", pool="pool-a") == 2


def test_an_orbit_scan_through_the_edge_is_limited_per_source_without_hurting_others(lab: ParkLab) -> None:
    node, parker, alice = behind_the_edge(
        lab, node_args={"extra": ["--orbit-scan-burst", "3", "--orbit-scan-per-minute", "1"]}
    )
    carol = lab.phone("carol", via_edge=True, host="127.0.0.3")
    blind_park(parker, alice, uri("park"), caller_uri=uri("alice"))
    orbit = lab.wait_parked("alice")["orbit"]
    # one mistyped orbit blocks nobody
    assert refused(carol, uri("7009"))["code"] == 404
    edge = (LOOPBACK, lab.edge_port)
    with Uac(edge, "mallory", host="127.0.0.2") as mallory:
        # the node sees only the edge; the edge's X-Callpark-Source names mallory, whatever she claims
        forged = [("X-Callpark-Source", "127.0.0.3")]
        for miss in ("7001", "7002", "7003"):
            result = mallory.invite(uri(miss), headers=forged)
            assert result.status == 404, miss
        blocked = mallory.invite(uri(orbit), headers=forged)
        assert blocked.status == 480 and blocked.final is not None
        assert blocked.final.reason == "Too Many Unknown Orbits"
        assert int(blocked.final.header("Retry-After") or 0) == 60
    assert lab.parked()[orbit]["state"] == "parked", "a limited source must not reach the parked call"
    assert hears_music(alice, connected_call(alice, remote_contains="park@"))
    # carol (another source, one miss so far) retrieves the call
    retrieve(carol, uri(orbit))
    assert talking(
        alice, connected_call(alice, remote_contains="carol@"), carol, connected_call(carol, remote_contains="alice@")
    )
    assert node.metric("callpark_orbit_scan_rejected_total", pool="pool-a") == 1
    assert node.metric("callpark_retrievals_total", result="not-found") == 4
    assert node.metric("callpark_retrievals_total", result="ok") == 1


def test_a_stale_retrieve_uri_never_connects_the_call_parked_later_on_the_same_orbit(lab: ParkLab) -> None:
    node, parker, alice = behind_the_edge(lab, workers=2)
    bob = lab.phone("bob", via_edge=True, auto_answer=True)
    carol = lab.phone("carol", via_edge=True)

    since = parker.mark()
    blind_park(parker, alice, uri("7005"), caller_uri=uri("alice"))  # directed park: A on orbit X
    first = lab.wait_parked("alice")
    uri_a = retrieve_uri_of(parked_message(parker, since))
    assert uri_a == f"sip:7005@{LOOPBACK};park-id={first['park_id']}"
    retrieve(carol, uri_a)  # A's URI retrieves A
    assert talking(
        alice, connected_call(alice, remote_contains="carol@"), carol, connected_call(carol, remote_contains="alice@")
    )
    assert lab.wait_outcome(first["park_id"]) == "retrieved"
    carol.hangup(connected_call(carol, remote_contains="alice@"))

    since = parker.mark()
    blind_park(parker, bob, uri("7005"), caller_uri=uri("bob"))  # B on the same orbit X
    second = lab.wait_parked("bob")
    assert second["orbit"] == "7005" and second["park_id"] != first["park_id"]
    uri_b = retrieve_uri_of(parked_message(parker, since))

    event = refused(carol, uri_a)  # A's URI again: B must not be connected
    assert (event["code"], event["reason"]) == (404, "Parked call gone")
    assert lab.parked()["7005"]["park_id"] == second["park_id"]
    assert lab.parked()["7005"]["state"] == "parked"
    assert not any("carol@" in str(c.get("remote_uri")) for c in bob.calls())
    assert hears_music(bob, connected_call(bob, remote_contains="7005@"))

    retrieve(carol, uri_b)  # B's URI retrieves B
    check_retrieved(lab, node, bob, carol, second["park_id"], "stale-park-id")


def test_with_digest_auth_only_authenticated_phones_park_and_retrieve(lab: ParkLab) -> None:
    passwords = {"parker": "parker-pw-81", "alice": "alice-pw-27", "carol": "carol-pw-64"}
    auth = DigestAuth(LOOPBACK, {u: ha1(u, LOOPBACK, p) for u, p in passwords.items()})
    lab.configure()
    node = lab.node(edge=True)
    lab.start_edge(auth=auth)

    def phone(user: str, password: str | None, auth_user: str | None = None, **kw: Any) -> Phone:
        return lab.phone(
            user,
            registrar=lab.edge_address,
            proxy=lab.edge_address,
            auth_user=(auth_user or user) if password else None,
            password=password,
            **kw,
        )

    mallory = phone("mallory", None)
    since = mallory.mark()
    mallory.command("register")
    reg = mallory.wait_event(lambda e: e["event"] == "reg_state", since=since, timeout=5, what="mallory refused")
    assert reg["code"] == 401
    assert refused(mallory, uri("park"))["code"] == 407
    assert refused(mallory, uri("7000"))["code"] == 407
    eve = phone("eve", "guess", auth_user="alice")  # a wrong password
    event = refused(eve, uri("park"))
    assert (event["code"], event["reason"]) == (403, "Forbidden: bad credentials")
    trudy = phone("trudy", passwords["alice"], auth_user="alice")  # alice's password, another identity
    assert refused(trudy, uri("park"))["reason"] == "Forbidden: identity mismatch"
    assert lab.parked() == {}
    assert node.metric("callpark_parks_total", result="ok") == 0

    parker = phone("parker", passwords["parker"])
    alice = phone("alice", passwords["alice"], auto_answer=True)
    carol = phone("carol", passwords["carol"])
    for p in (parker, alice, carol):
        p.register()
    since = parker.mark()
    blind_park(parker, alice, uri("park"), caller_uri=uri("alice"))
    record = lab.wait_parked("alice")
    retrieve_uri_of(parked_message(parker, since))  # the node's MESSAGE passes the edge unchallenged
    retrieve(carol, uri(record["orbit"]))
    assert talking(
        alice, connected_call(alice, remote_contains="carol@"), carol, connected_call(carol, remote_contains="alice@")
    )
    assert lab.wait_outcome(record["park_id"]) == "retrieved"
    for path in lab.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            leaked = [u for u, p in passwords.items() if p.encode() in data]
            assert not leaked, f"{path} contains the password of {leaked}"
