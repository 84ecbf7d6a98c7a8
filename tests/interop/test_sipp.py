"""SIPp against the park node: a SIPp caller parked by a blind transfer, then retrieved.

The parker and the retriever are pjsua2 softphones (``lab.phone``); the caller is SIPp
3.6.1 running the committed scenario ``scenarios/transferee_parked.xml`` (two or three
dialogs in one SIPp call). The scenario's ``supported`` variable decides whether SIPp's
park INVITE offers Replaces, and so what the node does on retrieval:

- without Replaces the node bridges the retriever to the parked call inside its worker;
- with Replaces it steps out: it REFERs SIPp to the retriever with Replaces, SIPp
  INVITEs the retriever, the retriever swaps calls and the node leaves both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from callpark.lab.nodeproc import NodeProcess
from callpark.lab.phone import Phone
from callpark.lab.phone.flows import connected_call
from callpark.waiting import timeout_multiplier, wait_until
from tests.interop.sipp import SIPP, SippRun
from tests.node.conftest import ParkLab

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")


@contextlib.contextmanager
def sipp_transferred_to_park(
    lab: ParkLab, node: NodeProcess, parker: Phone, supported: str
) -> Iterator[tuple[SippRun, str, int]]:
    """SIPp (the transferee, offering ``supported``) answers the parker, who blind-transfers it to
    the node's park URI. Yields SIPp, the parker's call to it and the parker's event mark from
    before that call; stops SIPp on the way out."""
    sipp = SippRun("transferee_parked.xml", lab.root / "sipp", variables={"supported": supported})
    try:
        sipp.start()
        sipp.wait_listening()
        since = parker.mark()
        to_sipp = parker.call(sipp.uri("transferee"))
        parker.wait_state(to_sipp, "CONFIRMED", since=since, timeout=10)
        parker.blind_transfer(to_sipp, node.park_uri())
        yield sipp, to_sipp, since
    finally:
        sipp.stop()


@pytest.mark.parametrize(
    ("supported", "retrieval"),
    [("norefersub", "bridged"), ("replaces", "stepped-out")],
    ids=["no-replaces-bridged", "replaces-stepped-out"],
)
def test_sipp_caller_parked_by_blind_transfer_then_retrieved(lab: ParkLab, supported: str, retrieval: str) -> None:
    lab.configure()
    node = lab.node()
    parker, carol = lab.phone("parker"), lab.phone("carol")
    # the parker talks to SIPp, then blind-transfers it to the park service
    with sipp_transferred_to_park(lab, node, parker, supported) as (sipp, to_sipp, since):
        status = parker.wait_event(
            lambda e: e["event"] == "transfer_status" and e.get("final"), since=since, timeout=10, what="final NOTIFY"
        )
        assert status["code"] == 200, status
        parker.wait_state(to_sipp, "DISCONNECTED", since=since, timeout=10)

        # SIPp followed the REFER with Referred-By: a blind park by the parker
        record = lab.wait_parked("transferee")
        orbit = record["orbit"]
        assert (orbit, record["kind"], record["state"]) == ("7000", "blind", "parked"), record
        assert record["parker_uri"].startswith("sip:parker@"), record
        dialog = record["dialog"]
        assert dialog["call_id"].startswith("park///") and dialog["remote_contact"].startswith("sip:transferee@")
        assert dialog["supports_replaces"] is (supported == "replaces")
        # the 200 OK told SIPp where it is parked
        assert wait_until(lambda: sipp.logged("orbit"), timeout=5, what="SIPp logged the orbit") == orbit
        assert sipp.logged("park_id") == record["park_id"]

        # carol dials the orbit and is connected
        since = carol.mark()
        c_call = carol.call(node.orbit_uri(orbit))
        carol.wait_state(c_call, "CONFIRMED", since=since, timeout=10)
        assert lab.wait_outcome(record["park_id"]) == "retrieved"
        assert orbit not in lab.parked()
        wait_until(lambda: node.metric("callpark_retrievals_total", result="ok") == 1, timeout=5, what="metric")
        if retrieval == "bridged":
            # no REFER on the park dialog; carol's call to the orbit carries the SIPp caller
            # until she hangs up, then the node hangs up SIPp's park dialog
            assert not sipp.received("REFER", call_id_prefix="park///")
            assert carol.call_state(c_call) == "CONFIRMED"
            talk = c_call
        else:
            # SIPp's INVITE with Replaces took carol's call over; the node left both calls
            talk = connected_call(carol, remote_contains="transferee@")
            carol.wait_state(c_call, "DISCONNECTED", since=since, timeout=10)
            wait_until(lambda: sipp.received("BYE", call_id_prefix="park///"), timeout=5, what="node left")
        carol.hangup(talk)
        code = sipp.wait_exit(timeout=10)
        assert code == 0, sipp.diagnostics()
        assert sipp.logged("retrieval") == retrieval
        assert len(sipp.received("BYE", call_id_prefix="park///")) == 1


def test_caller_without_replaces_is_marked_lost_with_the_reason_when_its_worker_dies(lab: ParkLab) -> None:
    """No INVITE/Replaces to a UA that cannot take it (it would ring as a new call): lost, said why."""
    import json
    import os
    import signal

    lab.configure()
    node = lab.node(workers=2)
    parker = lab.phone("parker")
    with sipp_transferred_to_park(lab, node, parker, "norefersub"):
        record = lab.wait_parked("transferee")
        assert record["dialog"]["supports_replaces"] is False
        pid = int(json.loads(node.get("/api/node")[1])["workers"][0]["pid"])
        os.kill(pid, signal.SIGKILL)
        history = wait_until(lambda: lab.history(record["park_id"]), timeout=20, what="the call recorded as lost")
        assert (history["outcome"], history["detail"]) == ("lost", "caller without Replaces support")
        assert node.metric("callpark_lost_calls_total", reason="caller without Replaces support") == 1
        assert record["orbit"] not in lab.parked()


def test_sipp_parks_through_the_edge_holds_and_hangs_up(lab: ParkLab) -> None:
    """SIPp calls the park URI through the Kamailio edge (scenarios/park_hold_bye.xml), puts the
    parked call on hold and hangs up: the 200 names the orbit and answers sendonly, the hold
    keeps the call parked, the BYE frees the orbit as abandoned."""
    lab.configure(timeout="00:02:00")
    node = lab.node(edge=True)
    lab.start_edge()
    pause_ms = int(4000 * timeout_multiplier())
    sipp = SippRun("park_hold_bye.xml", lab.root / "sipp", remote=lab.edge_address, extra=["-d", str(pause_ms)])
    try:
        sipp.start()
        orbit = wait_until(lambda: sipp.logged("orbit"), timeout=10, what="SIPp parked (see its traces)")
        assert sipp.logged("answer") == "sendonly", sipp.diagnostics()
        wait_until(lambda: sipp.logged("held"), timeout=10, what="the hold re-INVITE answered (see SIPp traces)")
        record = lab.parked()[orbit]
        assert (record["park_id"], record["state"]) == (sipp.logged("park_id"), "parked"), record
        assert record["caller_uri"].startswith("sip:sippcaller@"), record
        code = sipp.wait_exit(timeout=pause_ms / 1000 + 15)
        assert code == 0, sipp.diagnostics()
        assert lab.wait_outcome(record["park_id"]) == "abandoned"
        assert orbit not in lab.parked()
        assert node.metric("callpark_parks_total", result="ok") == 1
    finally:
        sipp.stop()
