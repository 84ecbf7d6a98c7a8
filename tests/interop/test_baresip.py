"""baresip 1.0.0 against the park node: a baresip caller parked by a blind transfer, then retrieved.

baresip follows a REFER but sends no Referred-By, keeps its original call until the
transferer hangs it up, and does not support Replaces. So the node sees a caller that
parks itself (no parker to tell apart) and, on retrieval, must bridge the retriever to
it inside the worker: it cannot step out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from callpark.lab.nodeproc import NodeProcess
from callpark.lab.phone import Phone
from callpark.lab.phone.flows import connected_call
from callpark.netutil import LOOPBACK
from callpark.waiting import wait_until
from tests.interop.baresip import Baresip, BaresipConfig, missing
from tests.interop.listening import listen_for
from tests.node.conftest import ParkLab

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))

TONE_HZ = 660.0  # baresip's microphone: audio_source ausine,660


@dataclass
class Retrieved:
    bare: Baresip
    record: dict[str, Any]
    carol: Phone
    call: str  # carol's call to the orbit


def park_by_transfer(lab: ParkLab, bare: Baresip) -> tuple[NodeProcess, dict[str, Any]]:
    """parker calls baresip and REFERs it to the park URI; returns the node and the record."""
    lab.configure()
    node = lab.node()
    parker = lab.phone("parker")
    bare.start()
    ctrl = bare.ctrl

    # the parker calls baresip; baresip answers through ctrl_tcp
    since, p_since = ctrl.mark(), parker.mark()
    to_bare = parker.call(bare.aor)
    incoming = ctrl.wait_event("CALL_INCOMING", since=since)
    assert incoming["peeruri"].startswith("sip:parker@"), incoming
    ctrl.accept()
    parker.wait_state(to_bare, "CONFIRMED", since=p_since, timeout=10)
    ctrl.wait_event("CALL_ESTABLISHED", since=since)
    # control for the audio test: baresip's sine reaches a pjsua2 phone on a direct call
    direct = listen_for(parker, to_bare, TONE_HZ)
    assert direct.present(min_presence=0.6), f"baresip's tone does not reach the parker directly: {direct}"

    # blind transfer into the park service: baresip follows the REFER and reports 200 in
    # its NOTIFY; the parker then hangs up the old call (baresip keeps it until then)
    since = ctrl.mark()
    parker.blind_transfer(to_bare, node.park_uri())
    status = parker.wait_event(
        lambda e: e["event"] == "transfer_status" and e.get("final"), since=p_since, timeout=10, what="final NOTIFY"
    )
    assert status["code"] == 200, status
    parker.wait_state(to_bare, "DISCONNECTED", since=p_since, timeout=10)
    ctrl.wait_event("CALL_ESTABLISHED", since=since, where=lambda e: "park@" in str(e.get("peeruri")))
    ctrl.wait_event("CALL_CLOSED", since=since, where=lambda e: "parker@" in str(e.get("peeruri")))

    record = lab.wait_parked("bare")
    assert (record["orbit"], record["state"]) == ("7000", "parked"), record
    # no Referred-By from baresip: the node cannot know who parked it (as the record shows,
    # it takes the caller for its own parker); any kind is acceptable, the call is parked
    assert record["kind"] in ("blind", "attended"), record
    assert record["caller_uri"].startswith("sip:bare@"), record
    dialog = record["dialog"]
    assert not dialog["supports_replaces"], dialog
    # baresip 1.0.0 puts a per-UA user in its Contact: <sip:bare-0x55d2...@127.0.0.1:PORT>
    assert dialog["remote_contact"].startswith("sip:bare"), dialog
    assert f"@127.0.0.1:{bare.config.sip_port}" in dialog["remote_contact"], dialog
    return node, record


def park_by_transfer_and_retrieve(lab: ParkLab, bare: Baresip) -> Retrieved:
    """parker calls baresip, REFERs it to the park URI; carol retrieves the orbit."""
    node, record = park_by_transfer(lab, bare)
    carol = lab.phone("carol")
    # carol retrieves the orbit: with no Replaces on baresip's side the node bridges
    c_since = carol.mark()
    c_call = carol.call(node.orbit_uri(record["orbit"]))
    carol.wait_state(c_call, "CONFIRMED", since=c_since, timeout=10)
    assert lab.wait_outcome(record["park_id"]) == "retrieved"
    assert record["orbit"] not in lab.parked()
    wait_until(lambda: node.metric("callpark_retrievals_total", result="ok") == 1, timeout=5, what="metric")
    return Retrieved(bare, record, carol, c_call)


def test_baresip_caller_parked_by_blind_transfer_then_retrieved(lab: ParkLab) -> None:
    bare = Baresip(lab.root / "baresip")
    try:
        got = park_by_transfer_and_retrieve(lab, bare)
        # bridged, not stepped out: baresip's park call is still up and carol's too
        assert "park@" in bare.ctrl.list_calls()
        assert got.carol.call_state(got.call) == "CONFIRMED"
        # carol hangs up: the node hangs up baresip's park call
        since = bare.ctrl.mark()
        got.carol.hangup(got.call)
        bare.ctrl.wait_event("CALL_CLOSED", since=since, where=lambda e: "park@" in str(e.get("peeruri")))
    finally:
        bare.stop()


def test_baresip_caller_is_heard_by_the_retriever_through_the_bridge(lab: ParkLab) -> None:
    bare = Baresip(lab.root / "baresip")
    try:
        got = park_by_transfer_and_retrieve(lab, bare)
        heard = listen_for(got.carol, got.call, TONE_HZ)
        assert heard.present(min_presence=0.6), f"carol does not hear baresip's {TONE_HZ:.0f} Hz: {heard}"
    finally:
        bare.stop()


def test_a_caller_parked_without_referred_by_is_never_rung_back_itself(lab: ParkLab) -> None:
    """No Referred-By and no Replaces: the parker is unknown. At the timeout the node must not
    ring back the parked caller (the record's "parker" is baresip itself); with no OnTimeoutURI
    the call is disconnected, and no ringback was even tried."""
    bare = Baresip(lab.root / "baresip")
    try:
        node, record = park_by_transfer(lab, bare)
        since = bare.ctrl.mark()
        assert lab.wait_outcome(record["park_id"], timeout=30) == "disconnected"
        rung = [e for e in bare.ctrl.events(since=since) if e.get("type") == "CALL_INCOMING"]
        assert rung == [], f"the node rang the parked caller back: {rung}"
        _, text = node.get("/metrics")
        tried = [
            (s.labels, s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "callpark_ringbacks_total" and s.value
        ]
        assert tried == [], f"a ringback to the parked caller itself was tried: {tried}"
    finally:
        bare.stop()


def test_baresip_parks_a_call_is_told_the_orbit_and_is_rung_back_itself(lab: ParkLab) -> None:
    """baresip as the PARKER, registered with the Kamailio edge: it calls alice (pjsua2) and
    blind-transfers her to the park URI. The node MESSAGEs baresip the orbit, and at the
    timeout rings baresip back, never alice (the caller)."""
    lab.configure(timeout="00:00:10")
    node = lab.node(edge=True)
    lab.start_edge()
    alice = lab.phone("alice", via_edge=True, auto_answer=True)
    bare = Baresip(lab.root / "baresip", BaresipConfig.fresh(registrar=lab.edge_address))
    try:
        bare.start()
        ctrl = bare.ctrl
        # registered with the edge (it may happen before ctrl_tcp is connected: read the log)
        wait_until(lambda: "200 OK" in bare.process_log() and "binding]" in bare.process_log(), timeout=10, what="reg")
        since, a_since = ctrl.mark(), alice.mark()
        ctrl.dial(f"sip:alice@{LOOPBACK}")
        ctrl.wait_event("CALL_ESTABLISHED", since=since, timeout=10)
        connected_call(alice, remote_contains="bare@")
        ctrl.command("transfer", f"sip:park@{LOOPBACK}")
        record = lab.wait_parked("alice")
        assert record["parker_uri"].startswith(f"sip:bare@{LOOPBACK}"), record
        # the orbit MESSAGE reached baresip through the edge (its SIP trace shows it)
        wait_until(
            lambda: f"orbit={record['orbit']}" in bare.process_log(),
            timeout=10,
            what="the orbit MESSAGE in baresip's SIP trace",
        )
        # the ringback rings baresip (the parker), not alice (the parked caller)
        r_since = ctrl.mark()
        ctrl.wait_event("CALL_INCOMING", since=r_since, timeout=30)
        rung = [e for e in alice.events("incoming", since=a_since) if "park@" in str(e.get("remote_uri", ""))]
        assert rung == [], f"the ringback rang the parked caller: {rung}"
        ctrl.accept()
        assert lab.wait_outcome(record["park_id"], timeout=15) == "rang-back"
        assert node.metric("callpark_ringbacks_total", outcome="answered") == 1
    finally:
        bare.stop()
