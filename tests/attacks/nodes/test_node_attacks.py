"""Attacks on the park nodes and their HTTP API, behind a real edge with the default settings:
each refused with its SIP or HTTP status and counted in a node metric, while a legitimate park
and retrieve go through. Real etcd, a real ``callpark node``, a real Kamailio edge, pjsua2 phones
and raw UDP attackers on their own loopback addresses; inside a private network namespace
(:mod:`tests.attacks.netns`, run by ``tests/attacks/test_suite.py``)."""

from __future__ import annotations

import urllib.error
import urllib.request

from callpark.lab.phone.flows import blind_park, connected_call, hears_music
from callpark.netutil import LOOPBACK
from tests.attacks.netns import VICTIM, inside_only, outside_packets
from tests.edge.uac import Uac
from tests.node.conftest import ParkLab
from tests.node.helpers import behind_the_edge, check_retrieved
from tests.node.test_security import refused, retrieve


def uri(user: str) -> str:
    return f"sip:{user}@{LOOPBACK}"


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@inside_only
def test_attacks_on_nodes_are_refused_and_counted_while_parking_works(lab: ParkLab) -> None:
    node, parker, alice = behind_the_edge(
        lab, node_args={"extra": ["--orbit-scan-burst", "3", "--orbit-scan-per-minute", "1"]}
    )
    packets = outside_packets()
    # a phone talking to a node directly: nodes trust only the edge by default
    stranger = lab.phone("stranger", host="127.0.0.2")
    event = refused(stranger, node.park_uri())
    assert (event["code"], event["reason"]) == (403, "Forbidden: untrusted peer")
    assert node.metric("callpark_untrusted_rejected_total", pool="pool-a") == 1
    edge = (LOOPBACK, lab.edge_port)
    with Uac(edge, "mallory", host="127.0.0.2") as mallory:
        # ringback, orbit MESSAGE and OnTimeoutURI go to the parker: one outside is refused at park
        for outside in (f"<sip:premium@{VICTIM}>", "<sip:premium@example.org>"):
            result = mallory.invite(uri("park"), headers=[("Referred-By", outside)])
            assert result.status == 403 and result.final is not None, outside
            assert result.final.reason == "Forbidden: Referred-By outside the SIP domains"
        assert node.metric("callpark_parks_total", result="foreign-parker") == 2
        # the legitimate park
        blind_park(parker, alice, uri("park"), caller_uri=uri("alice"))
        record = lab.wait_parked("alice")
        # an orbit scan with a forged X-Callpark-Source: charged to mallory, then 480
        forged = [("X-Callpark-Source", "127.0.0.3")]
        for miss in ("7005", "7006", "7007"):
            assert mallory.invite(uri(miss), headers=forged).status == 404, miss
        blocked = mallory.invite(uri(record["orbit"]), headers=forged)
        assert blocked.status == 480 and blocked.final is not None
        assert blocked.final.reason == "Too Many Unknown Orbits"
    assert node.metric("callpark_orbit_scan_rejected_total", pool="pool-a") == 1
    # the parked calls list without a token (none configured): 403, counted
    assert _http_status(f"http://127.0.0.1:{node.http_port}/api/parked") == 403
    assert node.metric("callpark_http_refused_total", kind="private read", code="403") == 1
    # carol (another source, through the edge) still retrieves alice
    assert hears_music(alice, connected_call(alice, remote_contains="park@"))
    carol = lab.phone("carol", via_edge=True, host="127.0.0.3")
    retrieve(carol, uri(record["orbit"]))
    check_retrieved(lab, node, alice, carol, record["park_id"], "ok")
    assert outside_packets() == packets
