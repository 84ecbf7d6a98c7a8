"""Linphone's console client (liblinphone, default settings) as the parked caller.

A DR lab (real etcd, pool-a and its backup pool-b with one node each, controllers, the
Kamailio edge); Linphone and the pjsua2 phones register with the edge. The parker calls
Linphone and blind-transfers it to the park URI; the whole primary pool is killed; pool-b's
node takes the call over with an INVITE/Replaces, which Linphone must accept (it refused one
with "486 Busy - duplicated call" while the takeover's From was the park URI it had dialled);
then carol retrieves the orbit and talks with Linphone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callpark.lab.phone.flows import connected_call
from callpark.netutil import LOOPBACK
from callpark.waiting import wait_until
from tests.dr.conftest import DrLab
from tests.interop.linphone import Linphone, missing

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))


@pytest.fixture
def linphone(dr: DrLab, tmp_path: Path) -> Iterator[Linphone]:
    dr.start(a_nodes=1, b_nodes=1)
    phone = Linphone(tmp_path / "linphone", "linphone", dr.c.edge_address)
    try:
        yield phone.start()
    finally:
        phone.stop()


def parked_linphone(dr: DrLab) -> dict[str, Any] | None:
    for record in dr.parked().values():
        if "sip:linphone@" in record["caller_uri"] and record["dialog"]["local_tag"] and record["state"] == "parked":
            return record
    return None


def taken_over(dr: DrLab, before: dict[str, Any]) -> dict[str, Any] | None:
    """The record once pool-b holds the call on a new dialog (the INVITE/Replaces was answered)."""
    now = dr.parked().get(before["orbit"])
    if now and now["holder"]["node"] == "pool-b-n1" and now["dialog"]["call_id"] != before["dialog"]["call_id"]:
        return now
    return None


def test_a_linphone_caller_survives_the_loss_of_its_pool_and_is_retrieved(dr: DrLab, linphone: Linphone) -> None:
    parker, carol = dr.phone("parker"), dr.phone("carol")
    linphone.command("autoanswer enable")
    since = parker.mark()
    handle = parker.call(linphone.uri)
    parker.wait_state(handle, "CONFIRMED", since=since, timeout=15)
    parker.blind_transfer(handle, f"sip:park@{LOOPBACK}", hangup=False)
    before = wait_until(lambda: parked_linphone(dr), timeout=15, what=f"linphone parked: {dr.parked()}")
    assert before["holder"]["node"] == "pool-a-n1", before
    assert before["dialog"]["supports_replaces"], before["dialog"]
    assert before["caller_uri"].startswith(f"sip:linphone@{LOOPBACK}"), before
    # the parker hangs up its leg (as a person does once the call is parked)
    parker.hangup(handle)
    linphone.wait_output(r"Call 1 with sip:parker@\S+ ended", what="linphone's call with the parker ended")

    for node in dr.c.nodes["pool-a"]:
        node.kill9()
    after = wait_until(lambda: taken_over(dr, before), timeout=40, what=f"pool-b to take the call over: {dr.parked()}")
    assert (after["park_id"], after["orbit"]) == (before["park_id"], before["orbit"])
    assert dr.history(before["park_id"]) is None, dr.history(before["park_id"])  # not lost
    # Linphone accepted the takeover's INVITE/Replaces: a call from the orbit, not "486 duplicated call"
    linphone.wait_output(r"Call \d+ with sip:orbit-\d+@\S+ connected", what="linphone took the takeover call")

    since = carol.mark()
    handle = carol.call(f"sip:{before['orbit']}@{LOOPBACK}")
    carol.wait_state(handle, "CONFIRMED", since=since, timeout=15)
    outcome = wait_until(lambda: dr.history(before["park_id"]), timeout=15, what="the retrieval recorded")
    assert outcome["outcome"] == "retrieved", outcome
    # carol and Linphone are in one call: directly (REFER with Replaces) or bridged by the node
    # (liblinphone 5.1.65 puts two Replaces in its INVITE after a takeover, which carol refuses)
    linphone.wait_call_state("StreamsRunning")
    assert carol.call_state(handle) == "CONFIRMED" or connected_call(carol, remote_contains="linphone@")
