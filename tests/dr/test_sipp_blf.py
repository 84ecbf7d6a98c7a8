"""Busy lamp field interop with SIPp: a SIPp subscriber (``tests/interop/scenarios/
blf_subscriber.xml``) SUBSCRIBEs to an orbit through the real Kamailio edge of a real DR lab
(etcd, nodes, controllers) and checks the NOTIFY bodies itself; pjsua2 phones park and
retrieve. SIPp exits 0 only when it saw the lamp idle, lit after the park and dark after the
retrieval (issue #15)."""

from __future__ import annotations

import pytest

from callpark.netutil import LOOPBACK
from callpark.waiting import timeout_multiplier, wait_until
from tests.dr.conftest import DrLab
from tests.dr.test_blf import ORBIT, press_key
from tests.interop.sipp import SIPP, SippRun

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")


def test_sipp_blf_subscriber_sees_the_lamp_light_at_park_and_go_dark_at_retrieve(dr: DrLab) -> None:
    dr.start()
    parker, caller, retriever = dr.phone("parker"), dr.phone("alice", auto_answer=True), dr.phone("carol")
    edge, timeout_s = dr.c.edge_address, 60 * timeout_multiplier()
    sipp = SippRun("blf_subscriber.xml", dr.root / "sipp", remote=edge, variables={"orbit": ORBIT}, timeout_s=timeout_s)
    try:
        sipp.start()
        wait_until(lambda: sipp.logged("idle"), timeout=10, what="SIPp subscribed and saw the idle lamp")
        assert sipp.logged("lit") is None, sipp.diagnostics()
        record = dr.park(parker, caller, target=ORBIT)
        lit = wait_until(lambda: sipp.logged("lit"), timeout=10, what="SIPp saw the lamp lit (see its traces)")
        assert lit == record["park_id"], sipp.diagnostics()
        assert sipp.logged("dark") is None, "dark before the retrieval"
        press_key(retriever, f"sip:{ORBIT}@{LOOPBACK}", caller)
        dark = wait_until(lambda: sipp.logged("dark"), timeout=10, what="SIPp saw the lamp go dark (see its traces)")
        assert dark == record["park_id"], sipp.diagnostics()
        code = sipp.wait_exit(timeout=15)
        assert code == 0, sipp.diagnostics()
    finally:
        sipp.stop()
