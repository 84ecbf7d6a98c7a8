"""Park, retrieve, hang-up, capacity and failure handling against a real node (no edge).

Every test: real etcd, a real ``callpark node`` process with pjsua2 workers, real
pjsua2 phones over loopback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from typing import Any

import pytest

from callpark.lab.nodeproc import NodeProcess
from callpark.lab.phone import Phone
from callpark.lab.phone.flows import blind_park, call_and_answer, connected_call, hears_music, talking
from callpark.netutil import LOOPBACK
from callpark.store.schema import Keys
from callpark.waiting import wait_until
from tests.conftest import Cli
from tests.node.conftest import ParkLab, corrupt


def alice_parked(lab: ParkLab, *, workers: int = 1) -> tuple[NodeProcess, Phone, Phone, dict[str, Any]]:
    """A node (default configuration) and alice (auto-answering) blind-parked on its first worker
    by the parker. Returns the node, the parker, alice and alice's parked record."""
    lab.configure()
    node = lab.node(workers=workers)
    parker, alice = lab.phone("parker"), lab.phone("alice", auto_answer=True)
    blind_park(parker, alice, node.park_uri())
    return node, parker, alice, lab.wait_parked("alice")


def test_blind_park_then_retrieve_connects_the_caller_with_audio(lab: ParkLab) -> None:
    lab.configure()
    node = lab.node()
    parker, alice = lab.phone("parker"), lab.phone("alice", auto_answer=True)
    carol = lab.phone("carol")
    blind_park(parker, alice, node.park_uri())
    record = lab.wait_parked("alice")
    assert record["orbit"] == "7000" and record["kind"] == "blind"
    assert record["parker_uri"].startswith("sip:parker@")
    dialog = record["dialog"]
    assert dialog["call_id"] and dialog["local_tag"] and dialog["remote_tag"] and dialog["supports_replaces"]
    assert dialog["remote_contact"].startswith(f"sip:alice@{LOOPBACK}:{alice.sip_port}")
    assert record["deadline"] == pytest.approx(record["parked_at"] + 10)
    a_call = connected_call(alice, remote_contains="park@")
    assert hears_music(alice, a_call), "the parked caller must hear the music on hold"

    since = carol.mark()
    c_call = carol.call(node.orbit_uri("7000"))
    carol.wait_state(c_call, "CONFIRMED", since=since, timeout=10)
    # the node steps out of the media path: alice's call now goes to carol directly
    a_to_c = connected_call(alice, remote_contains="carol@")
    c_to_a = connected_call(carol, remote_contains="alice@")
    assert talking(alice, a_to_c, carol, c_to_a, 1000.0)
    assert talking(carol, c_to_a, alice, a_to_c, 1300.0)
    assert lab.wait_outcome(record["park_id"]) == "retrieved"
    assert "7000" not in lab.parked()
    wait_until(lambda: node.metric("callpark_retrievals_total", result="ok") == 1, timeout=5, what="retrieval metric")
    assert node.metric("callpark_parks_total", result="ok") == 1


def test_the_record_has_our_to_tag_from_its_first_revision(lab: ParkLab) -> None:
    """The allocation writes the whole dialog: a node that dies between the allocation and the
    caller's ACK leaves a call another node can replace (the chaos suite lost one for want of
    the to-tag: "Replaces needs a Call-ID, a to-tag and a from-tag")."""
    _, _, alice, record = alice_parked(lab)
    key = Keys.parked(record["orbit"])
    values = [json.loads(c.entry.value) for c in lab.store.changes(key) if c.kind == "put" and c.entry.key == key]
    puts = [v for v in values if v["park_id"] == record["park_id"]]  # earlier tests parked on this orbit too
    assert puts, "the parked record's history"
    first = puts[0]["dialog"]
    assert first["local_tag"] and first["local_tag"] == record["dialog"]["local_tag"]
    assert first["call_id"] == record["dialog"]["call_id"] and first["remote_tag"] == record["dialog"]["remote_tag"]
    incoming = alice.calls()[0]
    assert incoming["state"] == "CONFIRMED"


def test_music_off_means_silence(lab: ParkLab) -> None:
    lab.configure(music=False)
    node = lab.node()
    parker, alice = lab.phone("parker"), lab.phone("alice", auto_answer=True)
    blind_park(parker, alice, node.park_uri())
    lab.wait_parked("alice")
    a_call = connected_call(alice, remote_contains="park@")
    assert not hears_music(alice, a_call)


def test_directed_park_on_a_chosen_orbit(lab: ParkLab) -> None:
    lab.configure()
    node = lab.node()
    parker, alice = lab.phone("parker"), lab.phone("alice", auto_answer=True)
    blind_park(parker, alice, node.orbit_uri("7005"))
    record = lab.wait_parked("alice")
    assert (record["orbit"], record["kind"]) == ("7005", "directed")


def transfer_refused(transferor: Phone, transferee: Phone, target: str) -> int:
    """transferor calls transferee and REFERs it to ``target`` (keeping the call); the SIP
    status of the transferee's refused INVITE."""
    handle = call_and_answer(transferor, transferee)
    since = transferee.mark()
    transferor.blind_transfer(handle, target, hangup=False)
    event = transferee.wait_event(
        lambda e: e["event"] == "call_state" and e.get("state") == "DISCONNECTED" and e.get("role") == "caller",
        since=since,
        timeout=10,
        what=f"{transferee.user}'s transferred INVITE refused",
    )
    return int(event["code"])


def test_directed_park_outside_the_pool_is_refused(lab: ParkLab) -> None:
    lab.configure()
    node = lab.node()
    parker, alice = lab.phone("parker"), lab.phone("alice", auto_answer=True)
    assert transfer_refused(parker, alice, node.orbit_uri("8000")) == 404
    assert lab.parked() == {}


def test_attended_park_tells_the_orbit_in_the_answer_then_replaces(lab: ParkLab) -> None:
    lab.configure()
    node = lab.node()
    parker, alice, carol = lab.phone("parker"), lab.phone("alice", auto_answer=True), lab.phone("carol")
    to_alice = call_and_answer(parker, alice)
    to_park = call_and_answer(parker, alice, node.park_uri())
    orbit = parker.received_header(to_park, "X-Callpark-Orbit")
    assert orbit == "7000"
    answer = parker.received_message(to_park)
    assert answer is not None and "a=x-callpark-orbit:7000" in answer  # in the body (the SDP) too
    assert parker.received_header(to_park, "X-Callpark-Park-Id")
    parker.attended_transfer(to_alice, to_park)
    record = wait_until(
        lambda: next((r for r in lab.parked().values() if "alice@" in r["caller_uri"]), None),
        timeout=10,
        what="record names alice after the Replaces",
    )
    assert record["orbit"] == "7000" and record["kind"] == "attended"
    assert record["parker_uri"].startswith("sip:parker@")
    since = carol.mark()
    c_call = carol.call(node.orbit_uri("7000"))
    carol.wait_state(c_call, "CONFIRMED", since=since, timeout=10)
    a_to_c = connected_call(alice, remote_contains="carol@")
    c_to_a = connected_call(carol, remote_contains="alice@")
    assert talking(alice, a_to_c, carol, c_to_a)


def test_caller_hanging_up_frees_the_orbit_as_abandoned(lab: ParkLab) -> None:
    _, _, alice, record = alice_parked(lab)
    alice.hangup(connected_call(alice, remote_contains="park@"))
    assert lab.wait_outcome(record["park_id"]) == "abandoned"
    assert lab.parked() == {}


def test_unknown_orbit_and_non_orbit_numbers_get_404(lab: ParkLab) -> None:
    lab.configure()
    node = lab.node()
    carol = lab.phone("carol")
    for uri in (node.orbit_uri("7003"), f"sip:bob@{node.worker_sip()}"):
        since = carol.mark()
        handle = carol.call(uri)
        event = carol.wait_for("call_state", call=handle, state="DISCONNECTED", since=since, timeout=10)
        assert event["code"] == 404, event


def test_orbit_exhaustion_is_refused_with_the_reason(lab: ParkLab) -> None:
    lab.configure(ranges=(("7000", "7000"),))
    node = lab.node(workers=2)
    parker, alice, bob = lab.phone("parker"), lab.phone("alice", auto_answer=True), lab.phone("bob")
    blind_park(parker, alice, node.park_uri())
    lab.wait_parked("alice")
    since = bob.mark()
    handle = bob.call(node.park_uri())
    event = bob.wait_for("call_state", call=handle, state="DISCONNECTED", since=since, timeout=10)
    assert (event["code"], event["reason"]) == (486, "No more available orbits")
    assert node.metric("callpark_parks_total", result="no-orbit") == 1


def test_full_worker_redirects_and_a_full_node_answers_503(lab: ParkLab) -> None:
    lab.configure()
    node = lab.node(workers=1)
    callers = [lab.phone(f"c{i}", auto_answer=True) for i in range(4)]
    # three parked calls fill the worker (one slot stays free for retrievals and ringbacks)
    for phone in callers[:3]:
        since = phone.mark()
        handle = phone.call(node.park_uri())
        phone.wait_state(handle, "CONFIRMED", since=since, timeout=10)
    assert len(lab.parked()) == 3
    since = callers[3].mark()
    handle = callers[3].call(node.park_uri())
    event = callers[3].wait_for("call_state", call=handle, state="DISCONNECTED", since=since, timeout=10)
    assert (event["code"], event["reason"]) == (503, "No free call slot")


def test_a_full_worker_redirects_to_a_sibling(lab: ParkLab) -> None:
    lab.configure()
    node = lab.node(workers=2)
    callers = [lab.phone(f"c{i}") for i in range(4)]
    for phone in callers:
        since = phone.mark()
        handle = phone.call(node.park_uri(0))
        phone.wait_state(handle, "CONFIRMED", since=since, timeout=10)
    holders = sorted(r["holder"]["worker"] for r in lab.parked().values())
    assert holders == [0, 0, 0, 1]
    assert node.metric("callpark_parks_total", result="redirected") == 1


def test_two_retrievers_at_once_exactly_one_gets_the_call(lab: ParkLab) -> None:
    lab.configure()
    node = lab.node(workers=1)
    parker, alice = lab.phone("parker"), lab.phone("alice", auto_answer=True)
    r1, r2 = lab.phone("r1"), lab.phone("r2")
    blind_park(parker, alice, node.park_uri())
    record = lab.wait_parked("alice")
    marks = (r1.mark(), r2.mark())
    calls = (r1.call(node.orbit_uri("7000")), r2.call(node.orbit_uri("7000")))
    results = []
    for phone, handle, since in zip((r1, r2), calls, marks, strict=True):
        event = phone.wait_event(
            lambda e, h=handle: (
                e["event"] == "call_state"  # type: ignore[misc]
                and e["call"] == h
                and e["state"] in ("CONFIRMED", "DISCONNECTED")
            ),
            since=since,
            timeout=10,
            what="retrieval answered or refused",
        )
        results.append((event["state"], event.get("code")))
    assert sorted(results) == [("CONFIRMED", 200), ("DISCONNECTED", 486)], results
    winner = r1 if results[0][0] == "CONFIRMED" else r2
    connected_call(winner, remote_contains="alice@")
    assert lab.wait_outcome(record["park_id"]) == "retrieved"


def test_worker_killed_with_sigkill_its_calls_survive_on_a_new_worker(lab: ParkLab) -> None:
    lab.configure()
    node = lab.node(workers=2)
    parker = lab.phone("parker")
    alice, bob = lab.phone("alice", auto_answer=True), lab.phone("bob", auto_answer=True)
    blind_park(parker, alice, node.park_uri(0))
    blind_park(parker, bob, node.park_uri(0))
    before = {r["orbit"]: r for r in (lab.wait_parked("alice"), lab.wait_parked("bob"))}
    assert {r["holder"]["worker"] for r in before.values()} == {0}
    pid = int(json.loads(node.get("/api/node")[1])["workers"][0]["pid"])
    os.kill(pid, signal.SIGKILL)

    def taken_over() -> bool:
        records = lab.parked()
        return all(o in records and records[o]["dialog"]["call_id"] != before[o]["dialog"]["call_id"] for o in before)

    wait_until(taken_over, timeout=20, what="both calls taken over")
    after = lab.parked()
    for orbit, old in before.items():
        new = after[orbit]
        # orbit, park id, deadline and ringback count are kept; only holder and dialog change
        assert (new["park_id"], new["deadline"], new["attempts"]) == (old["park_id"], old["deadline"], old["attempts"])
    assert node.metric("callpark_takeovers_total", result="ok") == 2
    assert node.metric("callpark_worker_restarts_total") == 1
    # the caller is still parked, hears the music, and can be retrieved
    # alice's phone swapped the dead worker's dialog for the new one (INVITE with Replaces)
    a_call = wait_until(
        lambda: next((c["call"] for c in alice.calls() if c["state"] == "CONFIRMED" and c.get("replaces")), None),
        timeout=10,
        what="alice's call after takeover",
    )
    assert hears_music(alice, a_call)
    carol = lab.phone("carol")
    alice_orbit = next(o for o, r in after.items() if "alice@" in r["caller_uri"])
    holder = after[alice_orbit]["holder"]["worker"]
    since = carol.mark()
    handle = carol.call(node.orbit_uri(alice_orbit, holder))
    carol.wait_state(handle, "CONFIRMED", since=since, timeout=10)
    connected_call(alice, remote_contains="carol@")


def sip_request(host: str, port: int, method: str, ruri_user: str = "park", *, raw: bytes | None = None) -> str | None:
    """Send one request (or raw bytes) over UDP and return the first response line, if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        s.settimeout(1.5)
        me = s.getsockname()[1]
        data = (
            raw
            or (
                f"{method} sip:{ruri_user}@{host}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {LOOPBACK}:{me};rport;branch=z9hG4bK-{method}-{me}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:t@{LOOPBACK}>;tag=1\r\nTo: <sip:{ruri_user}@{LOOPBACK}>\r\n"
                f"Call-ID: {method}-{me}@test\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )
        s.sendto(data, (host, port))
        try:
            return s.recv(4096).decode(errors="replace").splitlines()[0]
        except TimeoutError:
            return None


def test_bad_sip_input_gets_proper_answers_and_the_node_keeps_serving(lab: ParkLab) -> None:
    lab.configure()
    node = lab.node(edge=True)
    edge = lab.start_edge()
    host, port = node.worker_sip().split(":")
    # garbage and malformed requests are dropped by pjsip; the node keeps answering
    assert sip_request(host, int(port), "", raw=b"\x00\x01garbage that is not SIP\r\n\r\n") is None
    assert sip_request(host, int(port), "", raw=b"INVITE sip:park@x SIP/2.0\r\nVia: broken\r\n\r\n") is None
    assert sip_request(host, int(port), "OPTIONS") == "SIP/2.0 200 OK"
    # unknown methods are answered 405 at the edge, in front of the nodes
    edge_host, edge_port = edge.address
    assert sip_request(edge_host, int(edge_port), "FOO") == "SIP/2.0 405 Method Not Allowed"
    # an INVITE to a number that is neither the park URI nor an orbit: 404
    carol = lab.phone("carol")
    since = carol.mark()
    handle = carol.call(f"sip:bob@{node.worker_sip()}")
    event = carol.wait_for("call_state", call=handle, state="DISCONNECTED", since=since, timeout=10)
    assert event["code"] == 404
    # a REFER inside a parked call (to a foreign domain) is declined; the call stays parked
    parker, alice = lab.phone("parker"), lab.phone("alice", auto_answer=True)
    blind_park(parker, alice, node.park_uri())
    record = lab.wait_parked("alice")
    a_call = connected_call(alice, remote_contains="park@")
    since = alice.mark()
    alice.blind_transfer(a_call, "sip:mallory@evil.example.com", hangup=False)
    status = alice.wait_event(
        lambda e: e["event"] == "transfer_status" and e.get("final"), since=since, timeout=10, what="REFER answered"
    )
    assert status["code"] == 603
    assert lab.parked()[record["orbit"]]["park_id"] == record["park_id"]
    assert node.get("/readyz")[0] == 200


def test_http_endpoints_and_parked_list(lab: ParkLab) -> None:
    node, _, _, record = alice_parked(lab)
    assert node.get("/healthz")[0] == 200 and node.get("/readyz")[0] == 200
    code, body = node.get("/api/parked")  # no admin token configured: nothing personal served
    assert code == 403 and record["park_id"] not in body and "alice" not in body
    assert node.get("/nope")[0] == 404
    text = node.get("/metrics")[1]
    for name in (
        "callpark_parked_calls",
        "callpark_park_latency_seconds_bucket",
        "callpark_free_orbits",
        "callpark_worker_slots_free",
        "callpark_etcd_request_seconds_bucket",
        "callpark_lease_remaining_seconds",
    ):
        assert name in text, name
    wait_until(lambda: node.metric("callpark_free_orbits", range="r0") == 9, timeout=5, what="free orbits gauge")
    listed = Cli(lab.endpoints)("parked", "list", "--json")
    assert listed.code == 0
    rows = json.loads(listed.out)
    assert [(r["orbit"], r["park_id"], r["ringbacks"], r["holder"]) for r in rows] == [
        ("7000", record["park_id"], 0, "pool-a/n1/w0")
    ]
    assert "7000" in Cli(lab.endpoints)("parked", "list").out


def test_a_takeover_the_caller_refuses_is_recorded_as_lost_with_its_status(lab: ParkLab) -> None:
    """A stale dialog (here: a corrupted caller tag) makes the caller answer 481: lost, with why."""
    node, _, _, record = alice_parked(lab, workers=2)
    record["dialog"]["remote_tag"] = "no-such-tag"
    raw = {k: v for k, v in record.items()}
    from callpark.store.records import encode

    corrupt(lab.store, record["orbit"], encode({k: v for k, v in raw.items() if k != "v"}))
    pid = int(json.loads(node.get("/api/node")[1])["workers"][0]["pid"])
    os.kill(pid, signal.SIGKILL)
    history = wait_until(lambda: lab.history(record["park_id"]), timeout=20, what="the call recorded as lost")
    assert history["outcome"] == "lost" and history["detail"].startswith("481"), history
    assert node.metric("callpark_takeovers_total", result="failed") == 1


def test_fixed_worker_port_bases_for_static_edge_configs(lab: ParkLab) -> None:
    from callpark.netutil import free_port_block

    lab.configure()
    sip_base, rtp_base = free_port_block(2), free_port_block(32)
    node = lab.node(workers=2, extra=["--sip-port-base", str(sip_base), "--rtp-port-base", str(rtp_base)])
    assert [w["sip"] for w in node.info["workers"]] == [f"{LOOPBACK}:{sip_base}", f"{LOOPBACK}:{sip_base + 1}"]
    parker, alice = lab.phone("parker"), lab.phone("alice", auto_answer=True)
    blind_park(parker, alice, f"sip:park@{LOOPBACK}:{sip_base + 1}")
    assert lab.wait_parked("alice")["holder"]["worker"] == 1


def test_a_transfer_to_an_occupied_orbit_is_refused_as_a_double_park(lab: ParkLab) -> None:
    """erin transfers dave to *7000 where alice is parked: 486 (35006), nothing else changes."""
    node, _, alice, record = alice_parked(lab)
    erin, dave = lab.phone("erin"), lab.phone("dave", auto_answer=True)
    assert transfer_refused(erin, dave, node.orbit_uri("7000")) == 486
    assert lab.parked()["7000"]["park_id"] == record["park_id"], "alice must stay parked on 7000"
    assert connected_call(alice, remote_contains="park@")
    assert connected_call(dave, remote_contains="erin@")
    assert node.metric("callpark_parks_total", result="double-park") == 1


def test_the_takeover_invite_comes_from_the_orbit_not_the_dialled_park_uri(lab: ParkLab) -> None:
    """liblinphone refuses an INVITE/Replaces whose From equals the remote URI of a call it has
    ("486 Busy - duplicated call"): the takeover's From must differ from what the caller dialled."""
    node, _, alice, record = alice_parked(lab, workers=2)
    dialled = next(
        str(c["remote_uri"]) for c in alice.calls() if c["state"] == "CONFIRMED" and "park@" in c["remote_uri"]
    )
    pid = int(json.loads(node.get("/api/node")[1])["workers"][record["holder"]["worker"]]["pid"])
    os.kill(pid, signal.SIGKILL)
    taken = wait_until(
        lambda: next((c for c in alice.calls() if c["state"] == "CONFIRMED" and c.get("replaces")), None),
        timeout=20,
        what="alice's call after takeover",
    )
    assert taken["remote_uri"] != dialled and "park@" not in taken["remote_uri"]
    assert f"orbit-{record['orbit']}@" in taken["remote_uri"], taken["remote_uri"]
